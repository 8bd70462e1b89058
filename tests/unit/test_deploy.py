"""``tooling.deploy`` against moto: stacks through change sets, the guard, blue/green state, mappings.

What moto (5.2.5) lacks, and how these tests deal with it:

- No SAM transform: the compute template here is plain CloudFormation with the resources the
  merged Chalice template has for the projector (a function, plus *the generated* version, aliases,
  alarms, parameters and conditions from ``cfn.generate``). The real merged template is checked
  by cfn-lint (tests/unit/test_cfn_lint.py) and by tests/functional/test_package.py.
- ``AWS::Lambda::Alias`` is not implemented by moto's CloudFormation (it is skipped with a
  warning), so after the first deploy the test creates the two aliases the stack would have.
- Change sets carry only ``Action``/``LogicalResourceId``/``ResourceType`` (no ``Replacement`` or
  ``Details``): the refusal tested here is a renamed mapping (Remove + Add); replacement details
  are covered with hand-written describe-change-set JSON in tests/unit/test_guard.py.
- moto reports an alias-qualified mapping target as the alias's *version* in ``FunctionArn``.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cfn import generate
from chalicelib import keys, tables
from tooling import deploy as deploy_mod
from tooling.deploy import BuildResult, Clients, DeployError, deploy

REGION = "us-east-1"
BUCKET = "streamfold-artifacts"
PREFIX = "streamfold-dev-"  # the dev stage's STREAMFOLD_TABLE_PREFIX


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("STREAMFOLD_ARTIFACT_BUCKET", raising=False)
    warnings.filterwarnings("ignore", message="Tried to parse AWS::Lambda::Alias")
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("s3").create_bucket(Bucket=BUCKET)
        topic = session.client("sns").create_topic(Name="team-alarms")["TopicArn"]
        yield {"session": session, "clients": Clients.from_session(session), "topic": topic,
               "lambda": session.client("lambda"), "cfn": session.client("cloudformation"),
               "ddb": session.client("dynamodb")}


def _compute_template(extra_resources: dict[str, Any] | None = None) -> dict[str, Any]:
    extras = generate.compute_extras_template()
    projector = {k: v for k, v in extras["Resources"].items() if k.startswith("Projector") and "Type" in v}
    assert {"ProjectorVersion", "ProjectorBlueAlias", "ProjectorGreenAlias"} <= set(projector)
    resources: dict[str, Any] = {
        "ProjectorRole": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                   "Principal": {"Service": "lambda.amazonaws.com"}}]}}},
        "Projector": {"Type": "AWS::Lambda::Function", "Properties": {
            "Runtime": "python3.11", "Handler": "app.projector", "Code": "./deployment.zip",
            "Role": {"Fn::GetAtt": ["ProjectorRole", "Arn"]},
            "Environment": {"Variables": extras["Resources"]["Projector"]["Properties"]["Environment"]["Variables"]}}},
        **projector,
        **(extra_resources or {}),
    }
    return {"AWSTemplateFormatVersion": "2010-09-09", "Parameters": extras["Parameters"],
            "Conditions": extras["Conditions"], "Resources": resources,
            "Outputs": {"ProjectorFunctionName": extras["Outputs"]["ProjectorFunctionName"]}}


def _builder(code: str, extra_resources: dict[str, Any] | None = None) -> Any:
    def build(out_dir: Path, stage: str) -> BuildResult:
        assert stage == "dev"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("app.py", f"def projector(event, context):\n    return {code!r}\n")
        path = out_dir / "deployment.zip"
        path.write_bytes(buf.getvalue())
        return BuildResult(path, _compute_template(extra_resources))
    return build


def _run(aws: dict[str, Any], code: str, **kwargs: Any) -> tuple[deploy_mod.DeployResult, str]:
    lines: list[str] = []
    kwargs.setdefault("alarm_topic_arn", aws["topic"])
    result = deploy("dev", clients=aws["clients"], bucket=BUCKET, build=_builder(code, kwargs.pop("extra", None)),
                    out=lines.append, delay=1, poll=0.01, mapping_timeout=5, **kwargs)
    return result, "\n".join(lines)


def _params(aws: dict[str, Any], stack: str) -> dict[str, str]:
    stack_desc = aws["cfn"].describe_stacks(StackName=stack)["Stacks"][0]
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack_desc["Parameters"]}


def _projector(aws: dict[str, Any]) -> str:
    outputs = aws["cfn"].describe_stacks(StackName="streamfold-dev")["Stacks"][0]["Outputs"]
    return next(o["OutputValue"] for o in outputs if o["OutputKey"] == "ProjectorFunctionName")


def _create_aliases(aws: dict[str, Any]) -> None:
    """What the stack's AWS::Lambda::Alias resources do on AWS (moto skips them)."""
    fn = _projector(aws)
    version = aws["lambda"].list_versions_by_function(FunctionName=fn)["Versions"][-1]["Version"]
    for colour in ("blue", "green"):
        aws["lambda"].create_alias(FunctionName=fn, Name=colour, FunctionVersion=version)


def test_first_deploy_then_blue_green_release_maps_and_retargets_day_tables(aws: dict[str, Any]) -> None:
    first, log = _run(aws, "v1")
    assert first.ok and first.executed == ["streamfold-dev-storage", "streamfold-dev"]
    assert (first.live_colour, first.target_colour) == ("blue", "blue")
    assert {c["LogicalResourceId"] for c in first.compute_changes} >= {"Projector", "ProjectorVersion"}
    assert "guard: OK" in log
    params = _params(aws, "streamfold-dev")
    assert params["StorageStackName"] == "streamfold-dev-storage"
    assert params["ProjectorRelease"] == first.release and params["AlarmTopicArn"] == aws["topic"]
    exports = {e["Name"] for e in aws["cfn"].list_exports()["Exports"]}
    assert "streamfold-dev-storage-StreamFailureQueueArn" in exports
    assert aws["ddb"].describe_table(TableName=keys.control_table_name(PREFIX))["Table"]["TableStatus"] == "ACTIVE"

    _create_aliases(aws)
    fn = _projector(aws)
    # Rotation created today's and tomorrow's tables; an old deploy mapped one to the bare function.
    today, tomorrow = tables.ensure_event_tables(aws["ddb"], PREFIX, tables.utc_today(datetime.now(UTC)))
    legacy_stream = aws["ddb"].describe_table(TableName=today)["Table"]["LatestStreamArn"]
    legacy = aws["lambda"].create_event_source_mapping(EventSourceArn=legacy_stream, FunctionName=fn,
                                                       StartingPosition="TRIM_HORIZON")["UUID"]

    second, log = _run(aws, "v2")  # the alarm topic is kept from the first deploy
    assert second.ok and second.executed == ["streamfold-dev"]  # storage: no changes
    assert "streamfold-dev-storage: no changes" in log
    assert (second.live_colour, second.target_colour) == ("blue", "green")
    params = _params(aws, "streamfold-dev")
    assert (params["TargetColour"], params["LiveColour"], params["BlueVersion"]) == ("green", "blue", "1")
    assert params["ProjectorRelease"] == second.release != first.release
    assert second.mappings_retargeted == [legacy]  # same UUID: the stream position is kept
    assert second.mappings_updated == [legacy]  # and its settings are brought to PROJECTOR_MAPPING's, in place
    assert f"mapping: update {legacy} ({today}) settings" in log
    assert len(second.mappings_created) == 1
    blue_version = aws["lambda"].get_alias(FunctionName=fn, Name="blue")["FunctionVersion"]
    for table in (today, tomorrow):
        stream = aws["ddb"].describe_table(TableName=table)["Table"]["LatestStreamArn"]
        [mapping] = aws["lambda"].list_event_source_mappings(EventSourceArn=stream)["EventSourceMappings"]
        assert mapping["FunctionArn"].rsplit(":", 1)[1] == blue_version
        assert mapping["State"] == "Enabled"
    created = aws["lambda"].get_event_source_mapping(UUID=second.mappings_created[0])
    assert created["MaximumRecordAgeInSeconds"] == 86400 and created["BisectBatchOnFunctionError"] is True
    assert created["ParallelizationFactor"] == 1
    old = aws["lambda"].get_event_source_mapping(UUID=legacy)
    assert (old["BatchSize"], old["MaximumRetryAttempts"], old.get("ParallelizationFactor", 1)) == (100, 3, 1)
    assert created["DestinationConfig"]["OnFailure"]["Destination"].endswith(f":{PREFIX}stream-failures")
    assert "next: verify green, then `streamfold mappings swap --to green`" in log

    # Dry run: change sets printed and deleted, nothing executed, no mapping touched.
    dry, log = _run(aws, "v3", dry_run=True)
    assert dry.ok and dry.executed == [] and dry.compute_changes
    assert "guard: OK" in log and "streamfold-dev: change set" in log
    assert "mapping: update" not in log and dry.mappings_updated == []  # settings already in place
    assert _params(aws, "streamfold-dev")["ProjectorRelease"] == second.release
    assert _pending_change_sets(aws) == []


def _pending_change_sets(aws: dict[str, Any]) -> list[str]:
    # moto keeps executed change sets listed (AWS drops them); only unexecuted ones are left-overs.
    return [s["ChangeSetName"] for s in aws["cfn"].list_change_sets(StackName="streamfold-dev")["Summaries"]
            if s.get("ExecutionStatus") != "EXECUTE_COMPLETE"]


def _stack_mapping(stream: str) -> dict[str, Any]:
    return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
        "EventSourceArn": stream, "FunctionName": {"Ref": "Projector"}, "StartingPosition": "TRIM_HORIZON"}}


def test_renaming_a_stack_mapping_is_refused_unless_allowed(aws: dict[str, Any]) -> None:
    other = aws["ddb"].create_table(
        TableName="audit", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})["TableDescription"]
    stream = other["LatestStreamArn"]
    assert _run(aws, "v1", extra={"AuditMapping": _stack_mapping(stream)})[0].ok
    [before] = aws["lambda"].list_event_source_mappings(EventSourceArn=stream)["EventSourceMappings"]

    refused, log = _run(aws, "v2", extra={"AuditMappingV2": _stack_mapping(stream)})
    assert refused.refused and not refused.ok and refused.executed == []
    assert [(v.logical_id, v.prop) for v in refused.violations] == [("AuditMapping", "(resource)")]
    assert "AuditMapping (AWS::Lambda::EventSourceMapping)" in log and "update FunctionName in place" in log
    assert "nothing executed" in log
    assert _pending_change_sets(aws) == []
    [still] = aws["lambda"].list_event_source_mappings(EventSourceArn=stream)["EventSourceMappings"]
    assert still["UUID"] == before["UUID"]
    assert _params(aws, "streamfold-dev")["ProjectorRelease"] != refused.release

    allowed, log = _run(aws, "v2", extra={"AuditMappingV2": _stack_mapping(stream)}, allow_position_reset=True)
    assert allowed.ok and allowed.executed == ["streamfold-dev"]
    assert "--allow-position-reset given" in log
    [after] = aws["lambda"].list_event_source_mappings(EventSourceArn=stream)["EventSourceMappings"]
    assert after["UUID"] != before["UUID"]  # a new mapping: exactly the reset the guard warned about


def test_missing_bucket_alarm_topic_or_stage(aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DeployError, match="artifact bucket"):
        deploy("dev", clients=aws["clients"], build=_builder("v1"))
    with pytest.raises(DeployError, match="unknown stage 'qa'"):
        deploy("qa", clients=aws["clients"], bucket=BUCKET, build=_builder("v1"))
    with pytest.raises(DeployError, match="alarm-topic-arn is required"):
        _run(aws, "v1", alarm_topic_arn=None)
    assert deploy_mod.main(["--stage", "dev", "--region", REGION]) == 1
    assert "artifact bucket is required" in capsys.readouterr().err


def test_code_paths_point_at_the_uploaded_zip() -> None:
    template: dict[str, Any] = {"Resources": {
        "Sam": {"Type": "AWS::Serverless::Function", "Properties": {"CodeUri": "./deployment.zip"}},
        "Plain": {"Type": "AWS::Lambda::Function", "Properties": {"Code": "./deployment.zip"}},
        "Inline": {"Type": "AWS::Lambda::Function", "Properties": {"Code": {"ZipFile": "x"}}},
    }}
    out = deploy_mod._point_code_at_s3(template, "b", "k.zip")["Resources"]
    assert out["Sam"]["Properties"]["CodeUri"] == "s3://b/k.zip"
    assert out["Plain"]["Properties"]["Code"] == {"S3Bucket": "b", "S3Key": "k.zip"}
    assert out["Inline"]["Properties"]["Code"] == {"ZipFile": "x"}
    assert template["Resources"]["Sam"]["Properties"]["CodeUri"] == "./deployment.zip"  # input untouched

