"""`dlq redrive --aws`: the SQS on-failure queue (moto) redriven from the real DynamoDB Local stream.

The invocation records are the ones Lambda writes for a DynamoDB stream mapping (a pointer, no records); the
records are ingested with the project's ingest and their stream positions taken from DynamoDB Local. moto runs
no Lambda code without Docker, so the invoker runs the deployed projector's handler in this process
(``streams.handler.on_day_table_records``, the event through JSON as Lambda passes it).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib import db, keys
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from streams import handler as stream_handler
from streams.aws_backend import AwsMappingBackend
from streams.aws_dlq import FailureQueue, Invocation, MappingsByStream, list_failures, redrive_failures
from streams.backend import swap
from streams.functions import LocalContext
from tests.helpers.streams import day_table, put_events, wait_until

pytestmark = pytest.mark.timeout(90)

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fresh_projector() -> Iterator[None]:
    """``get_writer`` is cached per (version, prefix); every test has its own prefix."""
    stream_handler.get_writer.cache_clear()
    yield
    stream_handler.get_writer.cache_clear()


@dataclass
class Aws:
    """moto's SQS and Lambda control plane: the projector with blue and green aliases, a mapping of the day
    table (moto accepts mappings only of its own streams: a table of the same name stands in), the queue."""

    sqs: Any
    lam: Any
    queue_url: str
    function_arn: str
    mapping_uuid: str


def _projector_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", "def handler(event, context):\n    return {'batchItemFailures': []}\n")
    return buf.getvalue()


@pytest.fixture
def aws(prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        role = session.client("iam").create_role(RoleName="projector", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
                "Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        lam = session.client("lambda")
        fn = lam.create_function(FunctionName="streamfold-dev-projector", Runtime="python3.11", Role=role,
                                 Handler="app.handler", Code={"ZipFile": _projector_zip()})["FunctionArn"]
        for colour in ("blue", "green"):
            version = lam.publish_version(FunctionName="streamfold-dev-projector")["Version"]
            lam.create_alias(FunctionName="streamfold-dev-projector", Name=colour, FunctionVersion=version)
            lam.update_function_code(FunctionName="streamfold-dev-projector", ZipFile=_projector_zip())
        stand_in = session.client("dynamodb").create_table(
            TableName=day_table(prefix), BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})["TableDescription"]
        sqs = session.client("sqs")
        queue_url = sqs.create_queue(QueueName=f"{prefix}stream-failures")["QueueUrl"]
        m = AwsMappingBackend(lam, poll=0.01).create(event_source_arn=stand_in["LatestStreamArn"],
                                                     function_name="streamfold-dev-projector:blue")
        yield Aws(sqs, lam, queue_url, fn, m.uuid)


class InProcessProjector:
    """The deployed projector's handler, invoked as Lambda would: the event as JSON, an exception reported as
    ``FunctionError: Unhandled`` with ``errorMessage`` (what ``Invoke`` answers), the response as JSON."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, function_name: str, event: dict[str, Any]) -> Invocation:
        self.calls.append((function_name, len(event["Records"])))
        wire = json.loads(json.dumps(event))
        ctx = LocalContext(function_name=function_name, function_version="$LATEST", invoked_function_arn=function_name)
        try:
            response = stream_handler.on_day_table_records(wire, ctx)
        except Exception as exc:
            return Invocation("Unhandled", {"errorMessage": str(exc), "errorType": type(exc).__name__})
        return Invocation(None, json.loads(json.dumps(response)))


def _ingest(prefix: str, tenant_id: str, batch: list[dict[str, Any]]) -> None:
    Ingestor(db.get_client(), prefix).ingest(tenant_id, parse_request({"batch": batch}, "batch"))


def _account_requests(account: str, name: str, now: datetime) -> list[list[dict[str, Any]]]:
    """Two Segment requests (two chunks, two stream records): who the account is, then its usage."""
    user = f"u-{account}"
    setup = [{"type": "identify", "messageId": f"{account}-1", "userId": user, "traits": {"email": f"{user}@x.io"},
              "timestamp": (now - timedelta(hours=3)).isoformat()},
             {"type": "group", "messageId": f"{account}-2", "userId": user, "groupId": account,
              "traits": {"name": name, "plan": "pro"}, "timestamp": (now - timedelta(hours=3)).isoformat()}]
    usage = [{"type": "track", "messageId": f"{account}-{3 + i}", "userId": user, "event": f"{name} Report",
              "properties": {"rows": i}, "context": {"groupId": account},
              "timestamp": (now - timedelta(hours=2, minutes=i)).isoformat()} for i in range(3)]
    return [setup, usage]


def _stream(prefix: str, expect: int) -> tuple[str, str, list[str]]:
    """(stream ARN, shard id, sequence numbers) of the day table's stream, once ``expect`` records are there."""
    streams = db.get_streams_client()
    arn = db.get_client().describe_table(TableName=day_table(prefix))["Table"]["LatestStreamArn"]

    def read() -> tuple[str, list[str]] | None:
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            seqs = [r["dynamodb"]["SequenceNumber"] for r in streams.get_records(ShardIterator=it)["Records"]]
            if len(seqs) >= expect:
                return shard["ShardId"], seqs
        return None

    found = wait_until(read, message=f"{expect} stream records")
    assert found is not None
    return arn, found[0], found[1]


def _invocation_record(function_arn: str, stream_arn: str, shard: str, first: str, last: str, size: int,
                       ) -> dict[str, Any]:
    """What Lambda sends the on-failure destination of a DynamoDB stream mapping (Lambda Developer Guide,
    "Retain discarded records for a DynamoDB event source in Lambda", example invocation record)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "requestContext": {"requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81", "functionArn": function_arn,
                           "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 4},
        "responseContext": {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": now,
        "DDBStreamBatchInfo": {"shardId": shard, "startSequenceNumber": first, "endSequenceNumber": last,
                               "approximateArrivalOfFirstRecord": now, "approximateArrivalOfLastRecord": now,
                               "batchSize": size, "streamArn": stream_arn},
    }


def _summary(prefix: str, tenant_id: str, account: str) -> Any:
    key = (keys.account_pk(tenant_id, account), keys.SUMMARY_SK)
    blob = ViewStore(db.get_client(), keys.view_table_name(prefix, VIEW_VERSION)).get_many([key])[key]
    return blob if blob.ver else None


def _queued(aws: Aws) -> int:
    attrs = aws.sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_redrive_folds_delivered_batches_and_keeps_failed_and_expired_ones(
        prefix: str, ddb: Any, tenant: dict[str, str], aws: Aws) -> None:
    tid, now = tenant["tenant_id"], datetime.now(UTC)
    for request in _account_requests("acct-old", "Old Co", now):  # records 0, 1: trimmed before the redrive
        _ingest(prefix, tid, request)
    for request in _account_requests("acct-a", "Alpha Inc", now):  # records 2, 3
        _ingest(prefix, tid, request)
    put_events(ddb, day_table(prefix), ["not-a-chunk"])  # record 4: a poison record the projector refuses
    stream_arn, shard, seqs = _stream(prefix, 5)
    blue = f"{aws.function_arn}:blue"
    bodies = {"old": _invocation_record(blue, stream_arn, shard, seqs[0], seqs[1], 2),
              "alpha": _invocation_record(blue, stream_arn, shard, seqs[2], seqs[3], 2),
              "poison": _invocation_record(blue, stream_arn, shard, seqs[4], seqs[4], 1)}
    ids = {name: aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(body))["MessageId"]
           for name, body in bodies.items()}
    # Since the failures, the mapping was swapped to green: a redrive goes to the function it targets now.
    swap(AwsMappingBackend(aws.lam, poll=0.01), aws.mapping_uuid, to="green", timeout=5)
    green = AwsMappingBackend(aws.lam).get(aws.mapping_uuid).function_name  # type: ignore[union-attr]

    streams = db.get_streams_client()

    def trim(params: Any, **_: Any) -> None:  # records 0 and 1 are past the 24 h retention now
        if params.get("ShardIteratorType") == "AT_SEQUENCE_NUMBER" and int(params["SequenceNumber"]) < int(seqs[2]):
            raise streams.exceptions.TrimmedDataAccessException(
                {"Error": {"Code": "TrimmedDataAccessException", "Message": "beyond the trim horizon"}},
                "GetShardIterator")

    projector = InProcessProjector()
    queue = FailureQueue(aws.sqs, aws.queue_url)
    streams.meta.events.register("before-parameter-build.dynamodbstreams.GetShardIterator", trim)
    try:
        report = redrive_failures(queue, MappingsByStream(aws.lam), streams, projector)
    finally:
        streams.meta.events.unregister("before-parameter-build.dynamodbstreams.GetShardIterator", trim)

    by_id = {line["id"]: line for line in report.messages}
    assert set(by_id) == set(ids.values())
    alpha, poison, old = by_id[ids["alpha"]], by_id[ids["poison"]], by_id[ids["old"]]
    assert (alpha["status"], alpha["records_sent"], alpha["function"]) == ("delivered", 2, green)
    assert alpha["mapping"] == aws.mapping_uuid and alpha["failed_function"] == "streamfold-dev-projector:blue"
    # The projector fails a batch whose every record is poison (Powertools raises): a function error, as on AWS.
    assert poison["status"] == "failed" and poison["error"].startswith("Unhandled: ") and poison["function"] == green
    assert old["status"] == "expired" and "TrimmedDataAccessException" in old["error"]
    assert old["replay"] == {"table": day_table(prefix),
                             "command": "streamfold replay view --version N --compare --promote"}
    assert (report.delivered, report.failed, report.expired) == (1, 1, 1)
    assert report.summary() == {"delivered": 1, "failed": 1, "expired": 1, "records": 3}
    assert projector.calls == [(green, 2), (green, 1)]  # the expired batch is never sent

    # The delivered batch is in the view; the expired one is not (it needs a replay from the day table).
    alpha_summary = _summary(prefix, tid, "acct-a")
    assert alpha_summary is not None and alpha_summary.attrs["name"] == "Alpha Inc"
    assert alpha_summary.attrs["plan"] == "pro" and alpha_summary.attrs["users_count"] == 1
    assert _summary(prefix, tid, "acct-old") is None

    # Only the delivered message was deleted; the other two are visible again at once, for a later look.
    assert _queued(aws) == 2
    left = list_failures(queue, MappingsByStream(aws.lam))
    assert sorted(row["id"] for row in left) == sorted([ids["old"], ids["poison"]])
    assert {row["first"]: row["condition"] for row in left} == {seqs[0]: "RetryAttemptsExhausted",
                                                                seqs[4]: "RetryAttemptsExhausted"}


def test_redrive_again_once_the_function_is_fixed(prefix: str, ddb: Any, tenant: dict[str, str], aws: Aws) -> None:
    """A function error (the projector raising) leaves the message; the next redrive, once it works, folds it."""
    tid, now = tenant["tenant_id"], datetime.now(UTC)
    for request in _account_requests("acct-b", "Beta Ltd", now):
        _ingest(prefix, tid, request)
    stream_arn, shard, seqs = _stream(prefix, 2)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(
        _invocation_record(f"{aws.function_arn}:blue", stream_arn, shard, seqs[0], seqs[1], 2)))
    queue, mappings, streams = FailureQueue(aws.sqs, aws.queue_url), MappingsByStream(aws.lam), db.get_streams_client()

    def broken(function_name: str, event: dict[str, Any]) -> Invocation:
        return Invocation("Unhandled", {"errorMessage": "Task timed out after 300.00 seconds"})

    first = redrive_failures(queue, mappings, streams, broken)
    [line] = first.messages
    assert line["status"] == "failed" and line["error"] == "Unhandled: Task timed out after 300.00 seconds"
    assert _queued(aws) == 1 and _summary(prefix, tid, "acct-b") is None

    second = redrive_failures(queue, mappings, streams, InProcessProjector())
    assert [m["status"] for m in second.messages] == ["delivered"]
    assert _queued(aws) == 0
    got = _summary(prefix, tid, "acct-b")
    assert got is not None and got.attrs["name"] == "Beta Ltd"
