"""Build the deployable compute stack: ``python -m cfn.package OUT_DIR [--stage dev]``.

Chalice packages only ``app.py``, ``chalicelib/`` and ``vendor/`` (which it unpacks at the zip
root). ``projections/`` and ``streams/`` therefore reach the Lambda zip as a build copy in
``vendor/`` (git-ignored), refreshed on every run so a stale copy never ships. Then
``chalice package --merge-template cfn/compute-extras.json`` writes ``OUT_DIR/deployment.zip``
and ``OUT_DIR/sam.json``; Chalice fetches Lambda-platform (manylinux) wheels for
``requirements.txt`` from PyPI and caches the result under ``.chalice/deployments/``.

Deploy (after ``cfn/storage.json`` as stack ``streamfold-storage``, ``TablePrefix`` = the stage's
``STREAMFOLD_TABLE_PREFIX``)::

    aws cloudformation package --template-file OUT_DIR/sam.json --s3-bucket BUCKET \\
        --output-template-file OUT_DIR/packaged.json
    aws cloudformation deploy --template-file OUT_DIR/packaged.json --stack-name streamfold-dev \\
        --capabilities CAPABILITY_IAM --parameter-overrides AlarmTopicArn=arn:aws:sns:...
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "VENDORED", "chalice_package", "main", "vendor_packages"]

ROOT = Path(__file__).resolve().parent.parent
VENDORED = ("projections", "streams")
MERGE_TEMPLATE = ROOT / "cfn" / "compute-extras.json"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


def vendor_packages(root: Path = ROOT) -> list[Path]:
    """Replace ``vendor/<pkg>`` with a fresh copy of each top-level package in :data:`VENDORED`."""
    vendor = root / "vendor"
    vendor.mkdir(exist_ok=True)
    copied = []
    for name in VENDORED:
        target = vendor / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        shutil.copytree(root / name, target, ignore=_IGNORE)
        copied.append(target)
    return copied


def chalice_package(out_dir: Path, stage: str = "dev", root: Path = ROOT) -> None:
    """Run ``chalice package`` with the merge template (raises on failure)."""
    env = dict(os.environ)
    # chalice wants a region even to package; the template itself is region-independent.
    env.setdefault("AWS_DEFAULT_REGION", env.get("AWS_REGION", "us-east-1"))
    chalice = Path(sys.executable).with_name("chalice")
    cmd = [
        str(chalice) if chalice.exists() else "chalice",
        "--project-dir", str(root),
        "package",
        "--stage", stage,
        "--merge-template", str(MERGE_TEMPLATE),
        str(out_dir),
    ]
    subprocess.run(cmd, check=True, cwd=root, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfn.package", description="Build the compute stack package.")
    parser.add_argument("out_dir", type=Path, help="where deployment.zip and sam.json are written")
    parser.add_argument("--stage", default="dev", help="chalice stage (.chalice/config.json)")
    args = parser.parse_args(argv)
    for path in vendor_packages():
        print(f"vendored {path.relative_to(ROOT)}")
    chalice_package(args.out_dir.resolve(), args.stage)
    print(f"wrote {args.out_dir / 'deployment.zip'} and {args.out_dir / 'sam.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
