"""`streamfold dlq list --aws` against moto: the on-failure queue listed without deleting anything."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cfn.generate import storage_template
from chalicelib.settings import reset_settings
from streams.aws_backend import AwsMappingBackend
from streams.aws_dlq import Invocation, LambdaInvoker
from tooling.cli import main

REGION = "us-east-1"
PREFIX = "sf-unit-"
TABLE = f"{PREFIX}events-20261207"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                 "STREAMFOLD_TABLE_PREFIX": PREFIX}.items():
        monkeypatch.setenv(k, v)
    for k in ("STREAMFOLD_STAGE", "STREAMFOLD_DYNAMODB_ENDPOINT", "STREAMFOLD_PROJECTOR_FUNCTION"):
        monkeypatch.delenv(k, raising=False)
    reset_settings()
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="projector", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
                "Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("app.py", "def handler(event, context):\n    return None\n")
        lam = boto3.client("lambda")
        fn = lam.create_function(FunctionName="streamfold-dev-projector", Runtime="python3.11", Role=role,
                                 Handler="app.handler", Code={"ZipFile": buf.getvalue()})["FunctionArn"]
        lam.create_alias(FunctionName="streamfold-dev-projector", Name="blue",
                         FunctionVersion=lam.publish_version(FunctionName="streamfold-dev-projector")["Version"])
        stream = boto3.client("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )["TableDescription"]["LatestStreamArn"]
        m = AwsMappingBackend(lam).create(event_source_arn=stream, function_name="streamfold-dev-projector:blue")
        yield {"lambda": lam, "sqs": boto3.client("sqs"), "function_arn": fn, "stream": stream, "mapping": m.uuid}
    reset_settings()


def _record(aws: dict[str, Any], first: str, last: str, size: int, condition: str) -> dict[str, Any]:
    """An invocation record as Lambda sends it to a DynamoDB stream mapping's on-failure destination."""
    return {
        "requestContext": {"requestId": f"req-{first}", "functionArn": f"{aws['function_arn']}:blue",
                           "condition": condition, "approximateInvokeCount": 4},
        "responseContext": {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2026-12-07T08:13:49.717Z",
        "DDBStreamBatchInfo": {"shardId": "shardId-00000001573689847184-864758bb", "startSequenceNumber": first,
                               "endSequenceNumber": last, "approximateArrivalOfFirstRecord": "2026-12-07T08:13:19Z",
                               "approximateArrivalOfLastRecord": "2026-12-07T08:13:19Z", "batchSize": size,
                               "streamArn": aws["stream"]},
    }


def _visible(sqs: Any, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
        "Attributes"]["ApproximateNumberOfMessages"])


def test_dlq_list_aws_prints_each_queued_batch_and_deletes_nothing(
        aws: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    sqs = aws["sqs"]
    url = sqs.create_queue(QueueName=f"{PREFIX}stream-failures")["QueueUrl"]  # found by name: no stage set
    sent = {sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))["MessageId"]: body for body in (
        _record(aws, "800000000003126276362", "800000000003126276399", 37, "RetryAttemptsExhausted"),
        _record(aws, "800000000003126276400", "800000000003126276400", 1, "RecordAgeExceeded"))}

    for _ in range(2):  # listing twice shows the same: nothing was deleted or left hidden
        assert main(["dlq", "list", "--aws"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(sent)
        assert _visible(sqs, url) == 2
    by_first = {r["first"]: r for r in rows}
    big = by_first["800000000003126276362"]
    assert big == {"mapping": aws["mapping"], "id": big["id"], "function": "streamfold-dev-projector:blue",
                   "condition": "RetryAttemptsExhausted", "records": 37,
                   "shard": "shardId-00000001573689847184-864758bb", "first": "800000000003126276362",
                   "last": "800000000003126276399", "error": "Unhandled", "approximate_invoke_count": 4,
                   "table": TABLE, "failed_at": "2026-12-07T08:13:49.717Z", "stored": False,
                   "receive_count": 2}  # SQS counts every receive, the listings' too
    assert by_first["800000000003126276400"]["condition"] == "RecordAgeExceeded"

    assert main(["dlq", "list", "--aws", "--uuid", "some-other-mapping"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["dlq", "list", "--aws", "--function", "streamfold-dev-projector"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_the_queue_is_found_through_the_storage_stack_of_the_stage(
        aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``STREAMFOLD_STAGE`` set, the ``StreamFailureQueueUrl`` output of ``streamfold-<stage>-storage``,
    a stack made from the generated storage template (moto's CloudFormation), names the queue."""
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="streamfold-dev-storage", TemplateBody=json.dumps(storage_template()),
                     Parameters=[{"ParameterKey": "TablePrefix", "ParameterValue": "sf-stage-"}])
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cfn.describe_stacks(StackName="streamfold-dev-storage")["Stacks"][0]["Outputs"]}
    url = outputs["StreamFailureQueueUrl"]
    assert url.endswith("/sf-stage-stream-failures")
    aws["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps(
        _record(aws, "800000000003126276362", "800000000003126276362", 1, "RetryAttemptsExhausted")))
    monkeypatch.setenv("STREAMFOLD_STAGE", "dev")  # and no --aws: a stage means AWS, as for `mappings`
    assert main(["dlq", "list"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["mapping"] == aws["mapping"] and row["records"] == 1


def test_lambda_invoker_calls_invoke_request_response(aws: dict[str, Any]) -> None:
    """The real invoker against Lambda's Invoke API (moto without Docker answers a fixed text, no error)."""
    result = LambdaInvoker(aws["lambda"])("streamfold-dev-projector:blue", {"Records": []})
    assert result.function_error is None and result.failure() is None


def test_what_counts_as_a_failed_invocation() -> None:
    assert Invocation(None, None).failure() is None  # the handler returned nothing
    assert Invocation(None, {"batchItemFailures": []}).failure() is None
    assert Invocation(None, {"batchItemFailures": [{"itemIdentifier": "42"}]}).failure() == \
        "batchItemFailures: [{'itemIdentifier': '42'}]"
    assert Invocation("Unhandled", {"errorMessage": "boom", "errorType": "RuntimeError"}).failure() == \
        "Unhandled: boom"
