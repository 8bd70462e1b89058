"""The real ``chalice package`` build: the zip imports app, projections and streams on its own."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from cfn import package

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter started with -S (no site: the editable install's finder and .pth
# files never load) and with sys.path = [package] + stdlib + site-packages (third-party only).
IMPORT_PROBE = r"""
import importlib, json, pkgutil, sys
pkg, site_packages, repo = sys.argv[1:4]
stdlib = [p for p in sys.path if p and p.startswith(sys.base_prefix)]
sys.path[:] = [pkg] + stdlib + [site_packages]
import app, projections, streams, chalicelib
modules = {}
for top in (projections, streams):
    for info in pkgutil.walk_packages(top.__path__, top.__name__ + "."):
        modules[info.name] = importlib.import_module(info.name).__file__
for name in ("app", "projections", "streams", "chalicelib"):
    modules[name] = sys.modules[name].__file__
print(json.dumps({
    "files": modules,
    "routes": sorted(app.app.routes),
    "event_sources": sorted(s.name for s in app.app.event_sources),
    "repo_on_path": any(p.rstrip("/") == repo for p in sys.path),
}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cfn.package", str(out)], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=240)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unzipped = out / "unzipped"
    with zipfile.ZipFile(out / "deployment.zip") as zf:
        names = zf.namelist()
        zf.extractall(unzipped)
    print(f"chalice package took {elapsed:.1f}s")
    return {"out": out, "names": names, "unzipped": unzipped, "seconds": elapsed,
            "sam": json.loads((out / "sam.json").read_text())}


def test_built_zip_imports_app_projections_and_streams(built: dict[str, Any]) -> None:
    pkg = built["unzipped"]
    site_packages = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-S", "-c", IMPORT_PROBE, str(pkg), site_packages, str(ROOT)],
                          cwd=pkg, capture_output=True, check=False, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"})
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    assert probe["repo_on_path"] is False
    for name, file in probe["files"].items():
        assert Path(file).is_relative_to(pkg), f"{name} imported from {file}, not from the package"
    assert {"projections.events", "projections.health"} <= set(probe["files"])
    assert "/v1/batch" in probe["routes"]
    assert "rotate_tables" in probe["event_sources"]


def test_zip_layout_puts_vendored_packages_at_the_root(built: dict[str, Any]) -> None:
    names = set(built["names"])
    assert {"app.py", "chalicelib/__init__.py", "projections/__init__.py", "streams/__init__.py"} <= names
    assert not any(n.startswith("vendor/") for n in names)
    for top in package.VENDORED:
        shipped = {n for n in names if n.startswith(f"{top}/")}
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in shipped)
        source = {p.relative_to(ROOT).as_posix() for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts}
        assert source <= shipped


def test_merged_template_is_valid_and_wired(built: dict[str, Any]) -> None:
    # cfn-lint runs the SAM transform, so unresolved Refs/Subs (e.g. aws/chalice#2079) fail here.
    assert lint_file(built["out"] / "sam.json", config=ManualArgs(regions=["us-east-1"])) == []
    sam = built["sam"]
    resources = sam["Resources"]
    assert set(sam["Parameters"]) == set(json.loads((ROOT / "cfn" / "compute-extras.json").read_text())["Parameters"])
    functions = {k: v["Properties"] for k, v in resources.items() if v.get("Type") == "AWS::Serverless::Function"}
    assert {"APIHandler", "RotateTables"} <= set(functions)
    for function_id, props in functions.items():
        assert props["Runtime"] == "python3.11"
        assert f"{function_id}ErrorsAlarm" in resources
        env = props["Environment"]["Variables"]
        assert env["STREAMFOLD_TABLE_PREFIX"] == "streamfold-dev-"
        assert "Fn::ImportValue" in env["STREAMFOLD_DLQ_ARN"]
    assert functions["RotateTables"]["Events"] == {
        "RotateTablesEvent": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 hour)"}}}
    assert resources["ApiHandlerLogGroup"]["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${APIHandler}"}
    policy = resources["ApiHandlerRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert policy == json.loads((ROOT / ".chalice" / "policy-dev.json").read_text())


def test_packaging_stays_fast(built: dict[str, Any]) -> None:
    assert built["seconds"] < 120


def test_vendor_copy_is_refreshed(tmp_path: Path) -> None:
    for top in package.VENDORED:
        (tmp_path / top / "__pycache__").mkdir(parents=True)
        (tmp_path / top / "__init__.py").write_text("")
        (tmp_path / top / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    stale = tmp_path / "vendor" / "streams" / "removed.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    (tmp_path / "vendor" / "other").mkdir()

    package.vendor_packages(tmp_path)

    assert not stale.exists()
    assert (tmp_path / "vendor" / "other").is_dir()  # other vendored code is left alone
    for top in package.VENDORED:
        assert sorted(p.name for p in (tmp_path / "vendor" / top).iterdir()) == ["__init__.py"]


def test_zip_holds_no_tooling_and_no_test_code(built: dict[str, Any]) -> None:
    names = set(built["names"])
    tops = {n.split("/", 1)[0] for n in names}
    assert "tooling" not in tops and "tests" not in tops and "cfn" not in tops
    tooling_modules = {p.stem for p in (ROOT / "tooling").glob("*.py") if p.stem != "__init__"}
    for name in names:
        if name.endswith(".py") and name.split("/", 1)[0] in {"chalicelib", "streams", "projections"}:
            assert Path(name).stem not in tooling_modules - {"mappings"}, f"tooling module shipped as {name}"
    shipped = [n for n in names if n.split("/", 1)[0] in {"chalicelib", "streams", "projections"} and n.endswith(".py")]
    for name in shipped:
        text = (built["unzipped"] / name).read_text()
        assert "import tooling" not in text and "from tooling" not in text, name
        assert "from tests" not in text and "EchoHandler" not in text, name
