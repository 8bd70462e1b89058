"""The committed CloudFormation: no drift from the generator, valid, and deployable (moto)."""

from __future__ import annotations

import copy
import fnmatch
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint_file
from moto import mock_aws

from cfn import generate
from chalicelib import keys, tables
from chalicelib.versions import TTL_SECONDS, VIEW_VERSION

ROOT = Path(__file__).resolve().parents[2]
STORAGE = ROOT / "cfn" / "storage.json"
EXTRAS = ROOT / "cfn" / "compute-extras.json"
REGION = "us-east-1"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# --- no drift ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(generate.rendered_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_file_equals_generator_output(path: Path) -> None:
    expected = generate.render(generate.rendered_files()[path])
    assert path.exists(), f"{path} missing: run `python -m cfn.generate`"
    assert path.read_text() == expected, f"{path} is stale: run `python -m cfn.generate`"


def test_generate_check_mode_reports_stale_file_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check"]) == 0
    stale = tmp_path / "storage.json"
    stale.write_text("{}\n")
    real = generate.rendered_files()
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "rendered_files", lambda: {stale: real[STORAGE]})
    assert generate.main(["--check"]) == 1
    assert stale.read_text() == "{}\n"
    assert "out of date" in capsys.readouterr().err


# --- storage template: shared definitions ---------------------------------------------------


def _resolve_prefix(props: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(props)
    out["TableName"] = props["TableName"]["Fn::Sub"].replace(generate.PREFIX_PLACEHOLDER, prefix)
    return out


@pytest.mark.parametrize(
    ("logical_id", "spec"),
    [
        ("ControlTable", tables.control_table_spec("p-")),
        ("ViewTable", tables.view_table_spec("p-", VIEW_VERSION)),
    ],
)
def test_table_properties_come_from_the_shared_specs(logical_id: str, spec: dict[str, Any]) -> None:
    resource = _load(STORAGE)["Resources"][logical_id]
    assert resource["Type"] == "AWS::DynamoDB::Table"
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"
    props = _resolve_prefix(resource["Properties"], "p-")
    props.pop("Tags")
    if logical_id == "ViewTable":  # message claims expire (TTL), as ensure_view_table sets it locally
        assert props.pop("TimeToLiveSpecification") == {"AttributeName": tables.VIEW_TTL_ATTRIBUTE, "Enabled": True}
    assert props == tables.to_cfn_properties(spec)
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}


def test_storage_has_no_event_day_tables() -> None:
    # Day tables belong to the rotation function, never to a static template.
    names = json.dumps(_load(STORAGE)["Resources"])
    assert keys.EVENTS_INFIX not in names


def test_every_output_is_exported_under_the_stack_name() -> None:
    outputs = _load(STORAGE)["Outputs"]
    assert tuple(outputs) == generate.STORAGE_EXPORTS
    for name, output in outputs.items():
        assert output["Export"]["Name"] == {"Fn::Sub": "${AWS::StackName}-" + name}


@pytest.mark.parametrize("path", [STORAGE], ids=["storage"])
def test_cfn_lint_clean(path: Path) -> None:
    assert lint_file(path, config=ManualArgs(regions=[REGION])) == []


# --- storage template: deployed into moto ---------------------------------------------------


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def test_storage_stack_deploys(aws: Any) -> None:
    prefix = "sf-ci-"
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="streamfold-storage",
        TemplateBody=STORAGE.read_text(),
        Parameters=[{"ParameterKey": "TablePrefix", "ParameterValue": prefix}],
    )
    stack = cfn.describe_stacks(StackName="streamfold-storage")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    ddb = aws.client("dynamodb")
    control = ddb.describe_table(TableName=keys.control_table_name(prefix))["Table"]
    assert outputs["ControlTableName"] == control["TableName"]
    assert outputs["ControlTableArn"] == control["TableArn"]
    assert {(k["AttributeName"], k["KeyType"]) for k in control["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    assert control["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert "StreamSpecification" not in control or not control["StreamSpecification"].get("StreamEnabled")

    view = ddb.describe_table(TableName=keys.view_table_name(prefix, VIEW_VERSION))["Table"]
    assert outputs["ViewTableName"] == view["TableName"]
    gsis = {g["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]]
            for g in view["GlobalSecondaryIndexes"]}
    assert gsis == {name: [(h, "HASH"), (r, "RANGE")] for name, (h, r) in tables.VIEW_INDEXES.items()}

    # PITR and SSE are asserted on the template (test_table_properties_come_from_the_shared_specs)
    # and schema-checked by cfn-lint: moto 5.2.5's CloudFormation drops
    # PointInTimeRecoverySpecification and reads SSESpecification.Enabled, not SSEEnabled.

    topic_arn = outputs["AlertsTopicArn"]
    assert topic_arn.endswith(f":{prefix}score-alerts")
    assert topic_arn in [t["TopicArn"] for t in aws.client("sns").list_topics()["Topics"]]

    sqs = aws.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=f"{prefix}stream-failures")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert outputs["StreamFailureQueueArn"] == attrs["QueueArn"]
    assert attrs["MessageRetentionPeriod"] == "1209600"

    exports = {e["Name"]: e["Value"] for e in cfn.list_exports()["Exports"]}
    assert exports["streamfold-storage-TablePrefix"] == prefix
    assert exports["streamfold-storage-StreamFailureQueueArn"] == attrs["QueueArn"]
    assert set(exports) == {f"streamfold-storage-{name}" for name in generate.STORAGE_EXPORTS}


def test_deleting_the_storage_stack_keeps_tables_and_queue(aws: Any) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="s", TemplateBody=STORAGE.read_text())
    cfn.delete_stack(StackName="s")
    names = sorted(aws.client("dynamodb").list_tables()["TableNames"])
    assert names == ["streamfold-control", f"streamfold-view-v{VIEW_VERSION}"]
    assert aws.client("sqs").get_queue_url(QueueName="streamfold-stream-failures")["QueueUrl"]


def test_storage_stack_default_prefix(aws: Any) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="s", TemplateBody=STORAGE.read_text())
    names = aws.client("dynamodb").list_tables()["TableNames"]
    assert sorted(names) == ["streamfold-control", f"streamfold-view-v{VIEW_VERSION}"]


# --- compute extras and IAM policies ----------------------------------------------------------


def test_compute_extras_cover_every_function() -> None:
    extras = _load(EXTRAS)
    resources = extras["Resources"]
    functions = ["APIHandler"] + [generate.cfn_resource_name(n) for n in generate.app_function_names()]
    assert "RotateTables" in functions
    for function_id in functions:
        alarm = resources[f"{function_id}ErrorsAlarm"]["Properties"]
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopicArn"}]
        env = resources[function_id]["Properties"]["Environment"]["Variables"]
        assert env["STREAMFOLD_DLQ_ARN"] == {
            "Fn::ImportValue": {"Fn::Sub": "${StorageStackName}-StreamFailureQueueArn"}}
    api = resources["Api5xxAlarm"]["Properties"]
    assert api["MetricName"] == "5XXError"
    assert {"Name": "Stage", "Value": generate.chalice_config()["api_gateway_stage"]} in api["Dimensions"]
    assert {"AlarmTopicArn", "StorageStackName", "TargetColour", "LiveColour"} <= set(extras["Parameters"])


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    for stmt in policy["Statement"]:
        actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
        resources = stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]
        if stmt["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in actions) \
                and any(fnmatch.fnmatchcase(resource, r) for r in resources):
            return True
    return False


def _table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"


@pytest.mark.parametrize(("stage", "prefix", "other"), [("dev", "streamfold-dev-", "streamfold-"),
                                                         ("prod", "streamfold-", "streamfold-dev-")])
def test_stage_policy_is_scoped_to_its_prefix(stage: str, prefix: str, other: str) -> None:
    policy = _load(ROOT / ".chalice" / f"policy-{stage}.json")
    day = keys.events_table_name(prefix, tables.utc_today())
    for name in (keys.control_table_name(prefix), keys.view_table_name(prefix, 1), keys.view_table_name(prefix, 2),
                 day):
        assert _allowed(policy, "dynamodb:PutItem", _table_arn(name)), name
        assert not _allowed(policy, "dynamodb:PutItem", _table_arn(name.replace(prefix, other, 1))), name
    view = keys.view_table_name(prefix, VIEW_VERSION)
    assert _allowed(policy, "dynamodb:Query", _table_arn(view) + "/index/by_score")
    assert _allowed(policy, "dynamodb:CreateTable", _table_arn(day))
    assert not _allowed(policy, "dynamodb:CreateTable", _table_arn(keys.control_table_name(prefix)))
    assert not _allowed(policy, "dynamodb:DeleteTable", _table_arn(day))
    assert _allowed(policy, "dynamodb:GetRecords", _table_arn(day) + "/stream/2024-01-01T00:00:00.000")
    assert _allowed(policy, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:1:{prefix}stream-failures")
    assert _allowed(policy, "sns:Publish", f"arn:aws:sns:us-east-1:1:{prefix}score-alerts")
    esm = next(s for s in policy["Statement"] if "lambda:CreateEventSourceMapping" in s["Action"])
    assert esm["Condition"] == {"ArnLike": {"lambda:FunctionArn": f"arn:aws:lambda:*:*:function:streamfold-{stage}-*"}}
    assert not any(a == "*" or a.endswith(":*") for s in policy["Statement"]
                   for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))


def test_chalice_config_stages_use_generated_policies() -> None:
    config = generate.chalice_config()
    assert config["app_name"] == "streamfold"
    assert config["autogen_policy"] is False
    for stage, stage_config in config["stages"].items():
        assert stage_config["iam_policy_file"] == f"policy-{stage}.json"
        assert stage_config["environment_variables"]["STREAMFOLD_TABLE_PREFIX"]


# --- the replay state machine ---------------------------------------------------------------------------------


def _replay() -> tuple[dict[str, Any], dict[str, Any]]:
    resources = _load(EXTRAS)["Resources"]
    return resources, resources["ReplayStateMachine"]["Properties"]


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    return statements


def test_replay_state_machine_invokes_the_replay_functions_of_the_app() -> None:
    resources, machine = _replay()
    plan, fold = generate.cfn_resource_name(generate.REPLAY_PLAN), generate.cfn_resource_name(generate.REPLAY_FOLD)
    assert {plan, fold} <= set(generate._function_ids())  # app.py defines both (Chalice packages them)
    assert machine["Definition"] == generate.replay_state_machine()
    assert machine["DefinitionSubstitutions"] == {"ReplayPlanArn": {"Fn::GetAtt": [plan, "Arn"]},
                                                  "ReplayFoldArn": {"Fn::GetAtt": [fold, "Arn"]}}
    states = machine["Definition"]["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    tasks.update({name: s["ItemProcessor"]["States"][name] for name, s in states.items() if s["Type"] == "Map"})
    functions = {name: t["Parameters"]["FunctionName"] for name, t in tasks.items()}
    assert functions == {"Prepare": "${ReplayPlanArn}", "ScanIds": "${ReplayPlanArn}", "Assign": "${ReplayPlanArn}",
                         "SpoolSegments": "${ReplayPlanArn}", "Fold": "${ReplayFoldArn}", "Finish": "${ReplayPlanArn}"}
    # The order of the passes, and each task retried: Lambda's throttling first, then any failure (idempotent).
    order, at = [], machine["Definition"]["StartAt"]
    while at:
        order.append(at)
        at = states[at].get("Next")
    assert order == ["Prepare", "WaitForProjectors", "ScanIds", "Assign", "SpoolSegments", "Fold", "Finish"]
    assert states["WaitForProjectors"]["Seconds"] > TTL_SECONDS  # every projector records positions by then
    for name, task in tasks.items():
        assert task["Resource"] == "arn:aws:states:::lambda:invoke", name
        first, second = task["Retry"]
        assert "Lambda.TooManyRequestsException" in first["ErrorEquals"] and first["BackoffRate"] > 1, name
        assert second["ErrorEquals"] == ["States.TaskFailed"], name
    for props, role in ((resources[plan]["Properties"], "ReplayPlanRole"),
                        (resources[fold]["Properties"], "ReplayFoldRole")):
        assert props["Role"] == {"Fn::GetAtt": [role, "Arn"]} and props["Timeout"] == 900
        assert props["Environment"]["Variables"]["STREAMFOLD_REPLAY_SPOOL"] == {
            "Fn::Sub": "s3://${ReplaySpoolBucket}/replay"}


def test_replay_maps_are_distributed_batched_and_fail_on_any_item() -> None:
    _, machine = _replay()
    states = machine["Definition"]["States"]
    for name, items_key in (("ScanIds", "$.segments_key"), ("SpoolSegments", "$.segments_key"),
                            ("Fold", "$.manifest_key")):
        m = states[name]
        assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
        assert m["ItemReader"] == {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                                   "Parameters": {"Bucket.$": "$.bucket", "Key.$": items_key}}
        assert m["ToleratedFailurePercentage"] == 0
        assert m["MaxConcurrencyPath"] == ("$.max_concurrency" if name == "Fold" else "$.scan_concurrency")
        assert m["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject" and m["ResultPath"] is None
        # The child's input is the batch itself: {"Items": [...], "BatchInput": {...}}.
        assert m["ItemProcessor"]["States"][name]["Parameters"]["Payload.$"] == "$"
        assert m["ItemBatcher"]["BatchInput"]["job.$"] == "$.job"
    assert states["ScanIds"]["ItemBatcher"]["MaxItemsPerBatch"] == 1
    assert states["Fold"]["ItemBatcher"]["MaxItemsPerBatchPath"] == "$.fold_batch"


def test_replay_roles_are_least_privilege() -> None:
    resources, machine = _replay()
    machine_role = _statements(resources["ReplayStateMachineRole"])
    invoke = next(s for s in machine_role if s["Sid"] == "InvokeReplayTasks")
    assert invoke["Action"] == ["lambda:InvokeFunction"]
    assert {"Fn::GetAtt": ["ReplayFold", "Arn"]} in invoke["Resource"]
    children = next(s for s in machine_role if s["Sid"] == "DistributedMapChildren")
    assert children["Action"] == ["states:StartExecution"]
    assert children["Resource"]["Fn::Sub"].endswith(":stateMachine:${AWS::StackName}-replay")
    assert machine["StateMachineName"] == {"Fn::Sub": "${AWS::StackName}-replay"}
    for role in ("ReplayPlanRole", "ReplayFoldRole", "ReplayStateMachineRole"):
        for s in _statements(resources[role]):
            targets = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            if any(a.startswith("s3:") for a in s["Action"]) and s["Action"] != ["s3:ListBucket"]:
                assert all(t["Fn::Sub"].endswith(":::${ReplaySpoolBucket}/replay/*") for t in targets), (role, s)
            assert not any(a.endswith(":*") or a == "*" for a in s["Action"]), (role, s)
    fold = _statements(resources["ReplayFoldRole"])
    assert not any("events-" in json.dumps(s["Resource"]) for s in fold)  # the fold never reads the day tables
    assert not any(a in ("dynamodb:CreateTable", "dynamodb:DeleteTable") for s in fold for a in s["Action"])
    rule, = resources["ReplaySpoolBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == generate.REPLAY_SPOOL_DAYS
