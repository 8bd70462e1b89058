"""Day-table rotation: on AWS (moto: DynamoDB, Lambda, IAM) and on DynamoDB Local."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from app import app, rotate_tables
from chalicelib import keys, tables
from streams import rotation
from streams.rotation import MappingSettings, RotationError, rotate

REGION = "us-east-1"
PREFIX = "sf-rot-"
NOW = datetime(2025, 3, 9, 23, 30, tzinfo=UTC)


def _day(offset: int = 0) -> str:
    return keys.events_table_name(PREFIX, NOW.date() + timedelta(days=offset))


# --- AWS (moto) -------------------------------------------------------------------------------


def _function_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return {'batchItemFailures': []}\n")
    return buf.getvalue()


class Aws:
    def __init__(self, session: Any) -> None:
        self.ddb = session.client("dynamodb")
        self.lam = session.client("lambda")
        self.sqs = session.client("sqs")
        role = session.client("iam").create_role(
            RoleName="projector-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
        )["Role"]["Arn"]
        self.functions = {}
        for name in ("projector-blue", "projector-green"):
            self.functions[name] = self.lam.create_function(
                FunctionName=name, Runtime="python3.11", Role=role, Handler="handler.handler",
                Code={"ZipFile": _function_zip()},
            )["FunctionArn"]
        queue_url = self.sqs.create_queue(QueueName=f"{PREFIX}stream-failures")["QueueUrl"]
        self.dlq_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.settings = MappingSettings(function_name="projector-blue", on_failure_arn=self.dlq_arn)

    def mappings(self) -> list[dict[str, Any]]:
        return self.lam.list_event_source_mappings()["EventSourceMappings"]

    def stream_arn(self, table: str) -> str:
        return str(self.ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.delenv("STREAMFOLD_PROJECTOR_FUNCTION", raising=False)
    monkeypatch.delenv("STREAMFOLD_DLQ_ARN", raising=False)
    with mock_aws():
        yield Aws(boto3.session.Session(region_name=REGION))


def test_first_run_creates_tables_and_mappings_second_run_nothing(aws: Aws) -> None:
    first = rotate(aws.ddb, aws.lam, PREFIX, NOW, mapping_settings=aws.settings)

    assert first.tables == [_day(0), _day(1)]
    assert first.created_tables == [_day(0), _day(1)]
    assert first.created_mappings == [aws.stream_arn(_day(0)), aws.stream_arn(_day(1))]
    assert first.pitr_enabled == [_day(0), _day(1)]
    for name in first.tables:
        table = aws.ddb.describe_table(TableName=name)["Table"]
        assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        backups = aws.ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    mappings = aws.mappings()
    assert sorted(m["EventSourceArn"] for m in mappings) == sorted(first.created_mappings)
    for m in mappings:
        assert m["FunctionArn"] == aws.functions["projector-blue"]
        assert m["BatchSize"] == 100
        assert m["BisectBatchOnFunctionError"] is True
        assert m["MaximumRetryAttempts"] == 3
        assert m["MaximumRecordAgeInSeconds"] == 86400
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["StartingPosition"] == "TRIM_HORIZON"
        assert m["DestinationConfig"] == {"OnFailure": {"Destination": aws.dlq_arn}}

    second = rotate(aws.ddb, aws.lam, PREFIX, NOW + timedelta(minutes=20), mapping_settings=aws.settings)
    assert second.tables == first.tables
    assert (second.created_tables, second.created_mappings, second.pitr_enabled) == ([], [], [])
    assert len(aws.mappings()) == 2


def test_next_day_adds_only_the_day_after(aws: Aws) -> None:
    rotate(aws.ddb, aws.lam, PREFIX, NOW, mapping_settings=aws.settings)
    later = rotate(aws.ddb, aws.lam, PREFIX, NOW + timedelta(hours=1), mapping_settings=aws.settings)
    # 23:30 + 1h is the next UTC day: tomorrow already exists, only the day after is new.
    assert later.tables == [_day(1), _day(2)]
    assert later.created_tables == [_day(2)]
    assert later.created_mappings == [aws.stream_arn(_day(2))]
    assert len(aws.mappings()) == 3


def test_existing_mapping_to_another_colour_is_not_duplicated(aws: Aws) -> None:
    tables.ensure_event_tables(aws.ddb, PREFIX, NOW.date())
    aws.lam.create_event_source_mapping(EventSourceArn=aws.stream_arn(_day(0)), FunctionName="projector-green",
                                        StartingPosition="TRIM_HORIZON")
    result = rotate(aws.ddb, aws.lam, PREFIX, NOW, mapping_settings=aws.settings)
    assert result.created_tables == []
    # Heals the half-done state: tomorrow's table existed without a mapping.
    assert result.created_mappings == [aws.stream_arn(_day(1))]
    by_stream = {m["EventSourceArn"]: m["FunctionArn"] for m in aws.mappings()}
    assert by_stream == {aws.stream_arn(_day(0)): aws.functions["projector-green"],
                         aws.stream_arn(_day(1)): aws.functions["projector-blue"]}


def test_mapping_settings_from_environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFOLD_PROJECTOR_FUNCTION", "projector-blue")
    monkeypatch.setenv("STREAMFOLD_DLQ_ARN", aws.dlq_arn)
    result = rotate(aws.ddb, aws.lam, PREFIX, NOW)
    assert len(result.created_mappings) == 2
    assert {m["DestinationConfig"]["OnFailure"]["Destination"] for m in aws.mappings()} == {aws.dlq_arn}


def test_unconfigured_mappings_fail_loudly_after_creating_tables(aws: Aws) -> None:
    with pytest.raises(RotationError, match="STREAMFOLD_PROJECTOR_FUNCTION"):
        rotate(aws.ddb, aws.lam, PREFIX, NOW)
    # The tables are there for ingest; the scheduled function's error raises the alarm.
    assert [name for _day, name in tables.list_event_tables(aws.ddb, PREFIX)] == [_day(0), _day(1)]
    assert aws.mappings() == []


def test_half_configured_environment_is_an_error() -> None:
    assert rotation.settings_from_env({}) is None
    with pytest.raises(RotationError, match="STREAMFOLD_DLQ_ARN"):
        rotation.settings_from_env({"STREAMFOLD_PROJECTOR_FUNCTION": "projector"})
    settings = rotation.settings_from_env({"STREAMFOLD_PROJECTOR_FUNCTION": "p", "STREAMFOLD_DLQ_ARN": "arn:q"})
    assert settings == MappingSettings(function_name="p", on_failure_arn="arn:q")


class RecordingBackend:
    def __init__(self) -> None:
        self.streams: list[str] = []

    def ensure_mapping(self, stream_arn: str) -> bool:
        created = stream_arn not in self.streams
        if created:
            self.streams.append(stream_arn)
        return created


def test_mapping_backend_replaces_the_lambda_client(aws: Aws) -> None:
    backend = RecordingBackend()
    result = rotate(aws.ddb, None, PREFIX, NOW, mapping_backend=backend)
    assert backend.streams == result.created_mappings == [aws.stream_arn(_day(0)), aws.stream_arn(_day(1))]
    assert aws.mappings() == []
    assert result.pitr_enabled == []  # PITR goes with the AWS (lambda_client) path only


# EventBridge scheduled-rule event, as Lambda delivers it.
SCHEDULED_EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2025-03-09T23:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/streamfold-dev-RotateTablesEvent"],
    "detail": {},
}


# --- DynamoDB Local ------------------------------------------------------------------------------


def test_local_rotation_creates_the_next_day_once(ddb: Any, prefix: str) -> None:
    # The fixture made today's and tomorrow's tables; a run tomorrow adds the day after.
    now = datetime.now(UTC) + timedelta(days=1)
    existing = keys.events_table_name(prefix, tables.utc_today(now) - timedelta(days=1))
    today = keys.events_table_name(prefix, tables.utc_today(now))
    tomorrow = keys.events_table_name(prefix, tables.utc_today(now) + timedelta(days=1))

    first = rotate(ddb, None, prefix, now)
    assert first.tables == [today, tomorrow]
    assert first.created_tables == [tomorrow]
    assert first.created_mappings == []
    table = ddb.describe_table(TableName=tomorrow)["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert table["TableStatus"] == "ACTIVE"

    second = rotate(ddb, None, prefix, now)
    assert (second.created_tables, second.created_mappings) == ([], [])
    assert [name for _day, name in tables.list_event_tables(ddb, prefix)] == [existing, today, tomorrow]


def test_scheduled_function_runs_locally(ddb: Any, prefix: str) -> None:

    assert "rotate_tables" in {source.name for source in app.event_sources}
    result = rotate_tables(SCHEDULED_EVENT, None)  # type: ignore[no-untyped-call]
    tomorrow = keys.events_table_name(prefix, tables.utc_today() + timedelta(days=1))
    assert tomorrow in result["tables"]
    assert result["created_mappings"] == []
    assert ddb.describe_table(TableName=tomorrow)["Table"]["TableStatus"] == "ACTIVE"
