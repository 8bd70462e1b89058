"""The layers of docs/ARCHITECTURE.md, read off the imports (every import, including those inside functions).

    projections/  <-  chalicelib/  <-  streams/  <-  app.py  <-  cfn/  <-  tooling/

A module imports only its own layer and the layers to its left; no import cycle anywhere; an import
inside a function is allowed only for a third-party module and only with a ``# deferred:`` comment that
says why (a heavy optional dependency); production code never imports ``tests``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"projections": 0, "chalicelib": 1, "streams": 2, "app": 3, "cfn": 4, "tooling": 5}
FORBIDDEN_EVERYWHERE = {"tests"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (for ``from a import b``: ``a.b`` when that is a module, else ``a``)
    line: int
    in_function: bool
    deferred_comment: bool


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def production_modules() -> dict[str, Path]:
    found = {"app": ROOT / "app.py"}
    for top in LAYERS:
        if top == "app":
            continue
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(source: str, module: str, known: set[str]) -> list[Import]:
    """Every import statement of ``source`` (module-level and nested), resolved against ``known`` modules."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[Import] = []

    def comment_near(node: ast.stmt) -> bool:
        here = lines[node.lineno - 1]
        above = lines[node.lineno - 2] if node.lineno >= 2 else ""
        return "# deferred:" in here or above.strip().startswith("# deferred:")

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(module, alias.name, child.lineno, in_function, comment_near(child)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".")[: -child.level] if not module.endswith("__init__") else module.split(".")
                    base = ".".join([*pkg, base] if base else pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in child.names]
                for target in dict.fromkeys(targets):
                    out.append(Import(module, target, child.lineno, in_function, comment_near(child)))
            visit(child, nested)

    visit(tree, False)
    return out


def all_imports() -> list[Import]:
    modules = production_modules()
    known = set(modules)
    return [imp for name, path in modules.items() for imp in imports_of(path.read_text(), name, known)]


def layer_violations(imports: list[Import]) -> list[str]:
    found = []
    for imp in imports:
        src_top, dst_top = imp.source.split(".")[0], imp.target.split(".")[0]
        where = f"{imp.source}:{imp.line} imports {imp.target}"
        if dst_top in FORBIDDEN_EVERYWHERE:
            found.append(f"{where} (test code in production)")
        elif dst_top in LAYERS and LAYERS[dst_top] > LAYERS[src_top]:
            found.append(f"{where} ({dst_top} sits above {src_top})")
    return found


def function_import_violations(imports: list[Import]) -> list[str]:
    found = []
    for imp in imports:
        if not imp.in_function:
            continue
        where = f"{imp.source}:{imp.line} imports {imp.target} inside a function"
        if imp.target.split(".")[0] in LAYERS:
            found.append(f"{where} (a project module: import it at the top)")
        elif not imp.deferred_comment:
            found.append(f"{where} without a '# deferred:' comment saying why")
    return found


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself), Tarjan's."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.target.split(".")[0] in LAYERS:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


# --- the project -------------------------------------------------------------------------------


def test_scans_every_layer() -> None:
    tops = {name.split(".")[0] for name in production_modules()}
    assert tops == set(LAYERS)
    assert len(all_imports()) > 100


def test_dependencies_point_one_way() -> None:
    assert layer_violations(all_imports()) == []


def test_chalicelib_never_imports_streams_app_or_tooling() -> None:
    bad = [i for i in all_imports() if i.source.startswith("chalicelib")
           and i.target.split(".")[0] in {"streams", "app", "tooling", "cfn"}]
    assert bad == []


def test_no_import_cycle_anywhere() -> None:
    assert cycles(all_imports()) == []


def test_imports_inside_functions_only_defer_heavy_optional_dependencies() -> None:
    assert function_import_violations(all_imports()) == []


def test_lambda_code_ships_no_test_doubles() -> None:
    for name, path in production_modules().items():
        if name.split(".")[0] in {"streams", "chalicelib", "projections", "app"}:
            tree = ast.parse(path.read_text())
            doubles = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                       and n.name.startswith(("Echo", "Fake", "Stub", "Mock", "Dummy"))]
            assert doubles == [], f"{name} defines test doubles {doubles}"


# --- the checker itself ------------------------------------------------------------------------


KNOWN = {"chalicelib", "chalicelib.keys", "streams", "streams.writer", "projections", "projections.account", "app"}


@pytest.mark.parametrize(("module", "snippet"), [
    ("chalicelib.query", "from streams.writer import ViewWriter"),
    ("chalicelib.query", "def f():\n    from streams import writer\n"),
    ("chalicelib.query", "import app"),
    ("projections.account", "from chalicelib import keys"),
    ("streams.writer", "from tooling.stack import LocalStack"),
    ("streams.poller", "from tests.helpers.echo import EchoHandler"),
])
def test_checker_catches_upward_imports(module: str, snippet: str) -> None:
    assert layer_violations(imports_of(snippet, module, KNOWN)) != []


def test_checker_allows_downward_imports() -> None:
    snippet = "from chalicelib import keys\nfrom projections.account import AccountState\nimport boto3\n"
    assert layer_violations(imports_of(snippet, "streams.writer", KNOWN)) == []


def test_checker_finds_cycles_through_function_imports() -> None:
    a = imports_of("from streams import writer\n", "streams.handler", KNOWN | {"streams.handler"})
    b = imports_of("def f():\n    from streams import handler\n", "streams.writer", KNOWN | {"streams.handler"})
    assert cycles(a + b) == [["streams.handler", "streams.writer"]]


@pytest.mark.parametrize(("snippet", "ok"), [
    ("def f():\n    import json\n", False),
    ("def f():\n    from chalicelib import keys\n", False),
    ("def f():\n    # deferred: heavy optional dependency, only with OPENSEARCH_URL\n    import opensearchpy\n", True),
    ("def f():\n    # deferred: no good reason\n    from chalicelib import keys\n", False),
])
def test_checker_on_function_imports(snippet: str, ok: bool) -> None:
    assert (function_import_violations(imports_of(snippet, "streams.writer", KNOWN)) == []) is ok
