"""cfn-lint is clean on every template `make package` yields: cfn/storage.json and the merged compute template.

The merged template is the real one: ``python -m cfn.package`` (Chalice + ``--merge-template
cfn/compute-extras.json``), about 15 s on this machine, once per module. cfn-lint runs the SAM
transform, so a Ref/GetAtt/Sub to a resource Chalice does not generate fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from chalicelib.paths import INGEST_PATHS, METRICS_PATH, SETTINGS_PATH

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ["us-east-1"]


def _lint(template: dict[str, Any] | Path) -> list[str]:
    text = template.read_text() if isinstance(template, Path) else json.dumps(template)
    return [f"{m.rule.id} {m.message}" for m in lint(text, config=ManualArgs(regions=REGIONS))]


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package")
    proc = subprocess.run([sys.executable, "-m", "cfn.package", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sam: dict[str, Any] = json.loads((out / "sam.json").read_text())
    return sam


def test_storage_template_is_lint_clean() -> None:
    assert _lint(ROOT / "cfn" / "storage.json") == []


def test_merged_compute_template_is_lint_clean(merged: dict[str, Any]) -> None:
    assert _lint(merged) == []
    resources = merged["Resources"]
    # What the extras add reached the merged template.
    assert resources["ProjectorBlueAlias"]["Properties"]["Name"] == "blue"
    assert resources["ProjectorGreenAlias"]["Properties"]["Name"] == "green"
    assert resources["RotateTables"]["Properties"]["Role"] == {"Fn::GetAtt": ["RotateTablesRole", "Arn"]}
    statements = resources["RotateTablesRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert [s.get("Sid") for s in statements if isinstance(s, dict) and "Sid" in s][0] == "Logs"
    # The replay's state machine, its functions and their roles (its definition is checked by cfn-lint's E3601).
    assert resources["ReplayStateMachine"]["Properties"]["RoleArn"] == {"Fn::GetAtt": ["ReplayStateMachineRole", "Arn"]}
    assert resources["ReplayFold"]["Properties"]["Role"] == {"Fn::GetAtt": ["ReplayFoldRole", "Arn"]}
    assert len(json.dumps(merged)) > 51_200  # why deploy passes TemplateURL, never TemplateBody


def test_merged_api_answers_browsers_on_every_public_path(merged: dict[str, Any]) -> None:
    """API Gateway answers the CORS preflights itself (Chalice's mock OPTIONS methods), and unknown paths with
    the gateway response of cfn/compute-extras.json, both in the deployed API definition."""
    body = merged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    for path in [*INGEST_PATHS, METRICS_PATH, SETTINGS_PATH]:
        params = body["paths"][path]["options"]["x-amazon-apigateway-integration"]["responses"]["default"][
            "responseParameters"]
        assert params["method.response.header.Access-Control-Allow-Origin"] == "'*'", path
        allowed = params["method.response.header.Access-Control-Allow-Headers"].strip("'").split(",")
        assert {"Authorization", "Content-Type", "Content-Encoding"} <= set(allowed), path
        assert "OPTIONS" in params["method.response.header.Access-Control-Allow-Methods"]
    private = body["paths"]["/api/accounts"]["options"]["x-amazon-apigateway-integration"]["responses"]["default"][
        "responseParameters"]["method.response.header.Access-Control-Allow-Origin"]
    assert private != "'*'"
    assert body["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"


def test_lint_catches_a_dangling_reference(merged: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(merged))
    broken["Resources"]["ProjectorBlueAlias"]["Properties"]["FunctionVersion"] = {"Fn::GetAtt": ["Nope", "Version"]}
    problems = _lint(broken)
    assert any(p.startswith("E1010 'Nope' is not one of") for p in problems), problems
