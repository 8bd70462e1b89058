"""projections/ is pure: no I/O, no clock, no randomness, no environment (checked with ``ast``)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PROJECTIONS = Path(__file__).resolve().parents[2] / "projections"

FORBIDDEN_MODULES = frozenset(
    {
        "aws_lambda_powertools",
        "asyncio",
        "boto3",
        "botocore",
        "chalice",
        "chalicelib",
        "ctypes",
        "glob",
        "http",
        "importlib",
        "io",
        "logging",
        "multiprocessing",
        "opensearchpy",
        "os",
        "pathlib",
        "pynamodb",
        "random",
        "requests",
        "secrets",
        "select",
        "shutil",
        "signal",
        "socket",
        "sqlite3",
        "ssl",
        "streams",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
    }
)
# Called by bare name or as an attribute (``x.now()``): clocks, randomness, env, I/O.
FORBIDDEN_CALLS = frozenset(
    {
        "now",
        "utcnow",
        "today",
        "uuid1",
        "uuid4",
        "getenv",
        "urandom",
        "time_ns",
        "monotonic",
        "perf_counter",
        "open",
        "input",
        "print",
        "eval",
        "exec",
        "__import__",
        "breakpoint",
    }
)
# Attribute chains forbidden anywhere, called or not.
FORBIDDEN_ATTRIBUTES = frozenset({"os.environ", "time.time", "os.getenv", "sys.stdout", "sys.argv"})


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def violations(source: str, filename: str = "<src>") -> list[str]:
    """Every impure construct in ``source``, as ``file:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import")
            for alias in node.names:
                if alias.name in FORBIDDEN_CALLS:
                    found.append(f"{where}: import of {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in FORBIDDEN_CALLS:
                found.append(f"{where}: call {_dotted(func) or name}()")
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted in FORBIDDEN_ATTRIBUTES:
                found.append(f"{where}: {dotted}")
    return found


def _modules() -> list[Path]:
    return sorted(PROJECTIONS.rglob("*.py"))


def test_scans_every_module() -> None:
    names = {path.stem for path in _modules()}
    assert {"__init__", "events", "account", "user", "catalog", "health"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PROJECTIONS)))
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import os",
        "import os.path",
        "from os import environ",
        "import boto3",
        "from botocore.config import Config",
        "import pynamodb.models",
        "import requests",
        "import opensearchpy",
        "import socket",
        "import random",
        "from random import choice",
        "import uuid",
        "import time",
        "import subprocess",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "from datetime import date\nx = date.today()",
        "x = time.time()",
        "x = uuid4()",
        "x = os.environ['A']",
        "x = os.environ.get('A')",
        "open('f')",
        "print('x')",
    ],
)
def test_checker_catches(snippet: str) -> None:
    assert violations(snippet) != []


def test_checker_allows_pure_code() -> None:
    pure = (
        "import hashlib\nfrom datetime import datetime, timedelta\n"
        "def f(as_of: datetime) -> str:\n    return hashlib.blake2b(b'x').hexdigest() + str(as_of.time())\n"
    )
    assert violations(pure) == []


@pytest.mark.parametrize("module", ["projections.account", "projections.user", "projections.catalog"])
def test_views_have_name_and_version(module: str) -> None:
    mod = importlib.import_module(module)
    assert isinstance(mod.NAME, str)
    assert mod.NAME
    assert type(mod.VERSION) is int
    assert mod.VERSION >= 1
    for attr in ("fold", "fold_all", "merge", "empty"):
        assert callable(getattr(mod, attr))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PROJECTIONS)))
def test_module_declares_all(path: Path) -> None:
    module = "projections" if path.stem == "__init__" else f"projections.{path.stem}"
    mod = importlib.import_module(module)
    assert isinstance(mod.__all__, list)
    for name in mod.__all__:
        assert hasattr(mod, name) or importlib.import_module(f"{module}.{name}")
