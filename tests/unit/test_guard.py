"""The stream-position guard on templates from cfn/generate.py and on describe-change-set JSON."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cfn import generate
from tooling import guard
from tooling.cli import main as streamfold

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/streamfold-events-20260101/stream/2026-01-01T00:00:00.000"
OTHER_STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/streamfold-events-20260102/stream/2026-01-02T00:00:00.000"


def _esm(**props: Any) -> dict[str, Any]:
    base = {"EventSourceArn": STREAM, "FunctionName": {"Ref": "ProjectorBlueAlias"}, "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 100, "MaximumBatchingWindowInSeconds": 5}
    base.update(props)
    return {"Type": guard.ESM_TYPE, "Properties": base}


def _compute() -> dict[str, Any]:
    """The merged compute template as far as the guard cares: generated extras + Chalice's functions."""
    template = copy.deepcopy(generate.compute_extras_template())
    resources = template["Resources"]
    for function_id in ["APIHandler"] + [generate.cfn_resource_name(n) for n in generate.app_function_names()]:
        resources[function_id] = {"Type": "AWS::Serverless::Function", "Properties": {
            "Runtime": "python3.11", "Handler": f"app.{function_id}", "CodeUri": "./deployment.zip",
            **resources.get(function_id, {}).get("Properties", {})}}
    return template


def _with_mapping(template: dict[str, Any], logical_id: str = "ViewStreamMapping", **props: Any) -> dict[str, Any]:
    out = copy.deepcopy(template)
    out["Resources"][logical_id] = _esm(**props)
    return out


# --- two templates ---------------------------------------------------------------------------


def test_generated_templates_pass_against_themselves() -> None:
    for template in (generate.storage_template(), _compute(), _with_mapping(_compute())):
        assert guard.check_templates(template, copy.deepcopy(template)) == []


def test_retargeting_function_name_is_safe() -> None:
    old = _with_mapping(_compute())
    new = _with_mapping(_compute(), FunctionName={"Ref": "ProjectorGreenAlias"}, BatchSize=500)
    assert guard.check_templates(old, new) == []


@pytest.mark.parametrize(("prop", "value"), [
    ("EventSourceArn", OTHER_STREAM),
    ("StartingPosition", "LATEST"),
    ("StartingPositionTimestamp", 1767225600),
])
def test_replacement_property_change_is_refused(prop: str, value: Any) -> None:
    old = _with_mapping(generate.storage_template())
    new = _with_mapping(generate.storage_template(), **{prop: value})
    [violation] = guard.check_templates(old, new)
    assert (violation.logical_id, violation.prop, violation.kind) == ("ViewStreamMapping", prop, "position")
    assert "replacement" in violation.reason


def test_removed_mapping_is_refused() -> None:
    [violation] = guard.check_templates(_with_mapping(_compute()), _compute())
    assert (violation.logical_id, violation.prop) == ("ViewStreamMapping", "(resource)")
    assert "removed" in violation.reason


def test_renamed_mapping_is_a_reset() -> None:
    old = _with_mapping(_compute(), "ViewStreamMapping")
    new = _with_mapping(_compute(), "ViewStreamMappingV2")
    [violation] = guard.check_templates(old, new)
    assert violation.logical_id == "ViewStreamMapping" and violation.prop == "(logical id)"
    assert "renamed to ViewStreamMappingV2" in violation.reason


def test_adding_a_mapping_is_safe() -> None:
    assert guard.check_templates(_compute(), _with_mapping(_compute())) == []


def test_normal_blue_green_deploy_changes_are_safe() -> None:
    # What deploy changes between releases: parameters and the alias versions they select.
    old, new = _compute(), _compute()
    alias = new["Resources"][generate.alias_id("green")]["Properties"]
    alias["FunctionVersion"] = "7"
    new["Resources"]["Projector"]["Properties"]["MemorySize"] = 1024
    assert guard.check_templates(old, new) == []


def test_removing_or_renaming_an_alias_strands_the_mappings() -> None:
    old = _compute()
    removed = _compute()
    del removed["Resources"][generate.alias_id("green")]
    [violation] = guard.check_templates(old, removed)
    assert (violation.logical_id, violation.prop, violation.kind) == ("ProjectorGreenAlias", "(resource)", "target")

    renamed = _compute()
    renamed["Resources"][generate.alias_id("blue")]["Properties"]["Name"] = "live"
    [violation] = guard.check_templates(old, renamed)
    assert (violation.logical_id, violation.prop) == ("ProjectorBlueAlias", "Name")


def test_replacing_the_projector_function_is_refused_but_other_functions_are_not() -> None:
    old = _compute()
    new = _compute()
    new["Resources"]["Projector"]["Properties"]["FunctionName"] = "streamfold-projector"
    new["Resources"]["APIHandler"]["Properties"]["FunctionName"] = "streamfold-api"
    [violation] = guard.check_templates(old, new)
    assert (violation.logical_id, violation.prop, violation.kind) == ("Projector", "FunctionName", "target")


def test_sam_stream_event_is_checked_as_the_mapping_sam_creates() -> None:
    def template(stream: str, event_id: str = "ViewStream") -> dict[str, Any]:
        t = _compute()
        t["Resources"]["Projector"]["Properties"]["Events"] = {
            event_id: {"Type": "DynamoDB", "Properties": {"Stream": stream, "StartingPosition": "TRIM_HORIZON"}}}
        return t

    assert guard.check_templates(template(STREAM), template(STREAM)) == []
    [violation] = guard.check_templates(template(STREAM), template(OTHER_STREAM))
    assert (violation.logical_id, violation.prop) == ("ProjectorViewStream", "EventSourceArn")
    [violation] = guard.check_templates(template(STREAM), template(STREAM, "ViewStreamV2"))
    assert violation.prop == "(logical id)" and "ProjectorViewStreamV2" in violation.reason


def test_yaml_templates_with_short_form_tags(tmp_path: Path) -> None:
    body = """\
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      StreamSpecification: {StreamViewType: NEW_IMAGE}
  Mapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      EventSourceArn: !GetAtt Table.StreamArn
      FunctionName: !Ref Fn
      StartingPosition: %s
"""
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(body % "TRIM_HORIZON")
    new.write_text(body % "LATEST")
    loaded = guard.load_template(old)
    assert loaded["Resources"]["Mapping"]["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["Table", "StreamArn"]}
    [violation] = guard.check_templates(loaded, guard.load_template(new))
    assert (violation.logical_id, violation.prop) == ("Mapping", "StartingPosition")


# --- change sets (shape of `aws cloudformation describe-change-set`) -------------------------------


def _change(logical_id: str, rtype: str, action: str, replacement: str | None = None,
            details: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> dict[str, Any]:
    rc: dict[str, Any] = {"Action": action, "LogicalResourceId": logical_id, "ResourceType": rtype,
                          "Scope": ["Properties"] if details else [], "Details": []}
    if action != "Add":
        rc["PhysicalResourceId"] = f"{logical_id.lower()}-physical"
    if replacement is not None:
        rc["Replacement"] = replacement
    for name, recreation in details:
        rc["Details"].append({"Target": {"Attribute": "Properties", "Name": name, "RequiresRecreation": recreation},
                              "Evaluation": "Static", "ChangeSource": "DirectModification"})
    return {"Type": "Resource", "ResourceChange": rc}


def _describe(*changes: dict[str, Any]) -> dict[str, Any]:
    return {"ChangeSetName": "streamfold-deploy-1", "StackName": "streamfold-dev", "Status": "CREATE_COMPLETE",
            "ExecutionStatus": "AVAILABLE", "Changes": list(changes)}


def test_change_set_retarget_is_safe() -> None:
    cs = _describe(_change("DayMapping", guard.ESM_TYPE, "Modify", "False", [("FunctionName", "Never")]),
                   _change("ProjectorGreenAlias", "AWS::Lambda::Alias", "Modify", "False",
                           [("FunctionVersion", "Never")]),
                   _change("ProjectorVersion", "AWS::Lambda::Version", "Modify", "True",
                           [("Description", "Always")]),
                   _change("APIHandler", "AWS::Lambda::Function", "Modify", "True", [("FunctionName", "Always")]))
    assert guard.check_change_set(cs) == []


def test_change_set_replacing_a_mapping_is_refused() -> None:
    cs = _describe(_change("DayMapping", guard.ESM_TYPE, "Modify", "True",
                           [("EventSourceArn", "Always"), ("BatchSize", "Never")]))
    [violation] = guard.check_change_set(cs)
    assert (violation.logical_id, violation.prop, violation.kind) == ("DayMapping", "EventSourceArn", "position")
    assert violation.reason.startswith("replaced")


def test_change_set_conditional_replacement_is_refused() -> None:
    cs = _describe(_change("DayMapping", guard.ESM_TYPE, "Modify", "Conditional",
                           [("StartingPosition", "Conditionally")]))
    [violation] = guard.check_change_set(cs)
    assert violation.prop == "StartingPosition" and "Conditional" in violation.reason


def test_change_set_remove_and_rename() -> None:
    [removed] = guard.check_change_set(_describe(_change("DayMapping", guard.ESM_TYPE, "Remove")))
    assert (removed.logical_id, removed.prop) == ("DayMapping", "(resource)")
    renamed = guard.check_change_set(_describe(_change("DayMapping", guard.ESM_TYPE, "Remove"),
                                               _change("DayMappingV2", guard.ESM_TYPE, "Add")))
    assert [v.logical_id for v in renamed] == ["DayMapping"]
    assert "DayMappingV2 is added" in renamed[0].reason


def test_change_set_targets_and_pages() -> None:
    pages = [_describe(_change("ProjectorBlueAlias", "AWS::Lambda::Alias", "Remove")),
             _describe(_change("Projector", "AWS::Lambda::Function", "Modify", "True", [("FunctionName", "Always")]))]
    violations = guard.check_change_set(pages)
    assert [(v.logical_id, v.prop, v.kind) for v in violations] == [
        ("ProjectorBlueAlias", "(resource)", "target"), ("Projector", "FunctionName", "target")]
    # A renamed projector (different logical id) is protected with --protect.
    assert guard.check_change_set(pages[1], protect=["Other"]) == []


# --- CLI ----------------------------------------------------------------------------------------


def _write(path: Path, content: dict[str, Any]) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def test_main_templates_exit_codes_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _write(tmp_path / "old.json", _with_mapping(_compute()))
    safe = _write(tmp_path / "safe.json", _with_mapping(_compute(), FunctionName={"Ref": "ProjectorGreenAlias"}))
    bad = _write(tmp_path / "bad.json", _with_mapping(_compute(), StartingPosition="LATEST"))
    assert guard.main([old, safe]) == 0
    assert "guard: OK" in capsys.readouterr().out
    assert guard.main([old, bad]) == 1
    err = capsys.readouterr().err
    assert "ViewStreamMapping (AWS::Lambda::EventSourceMapping) property StartingPosition" in err
    assert "disable it, wait for State=Disabled" in err and "update FunctionName in place" in err


def test_main_change_set_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "cs.json", _describe(_change("DayMapping", guard.ESM_TYPE, "Remove")))
    assert guard.main(["--change-set", path, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["violations"][0]["logical_id"] == "DayMapping"
    assert out["violations"][0]["property"] == "(resource)"


def test_main_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        guard.main(["only-one.json"])
    assert exc.value.code == 2
    assert guard.main(["--change-set", str(tmp_path / "missing.json")]) == 2
    assert "cannot read input" in capsys.readouterr().err


def test_streamfold_cli_passes_guard_through(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_with_mapping(_compute())))
    new = tmp_path / "new.json"
    new.write_text(json.dumps(_with_mapping(_compute(), StartingPosition="LATEST")))
    assert streamfold(["guard", str(old), str(old)]) == 0
    assert streamfold(["guard", str(old), str(new)]) != 0
