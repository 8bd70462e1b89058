"""Day-table rotation: on AWS (moto: DynamoDB, Lambda, IAM) and on DynamoDB Local."""

from __future__ import annotations

import io
import json
import time
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
        assert m["ParallelizationFactor"] == 1
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
    # Heals the half-done state: tomorrow's table existed without a mapping. It follows the function
    # today's mapping targets (after a swap), not the configured one.
    assert result.created_mappings == [aws.stream_arn(_day(1))]
    by_stream = {m["EventSourceArn"]: m["FunctionArn"] for m in aws.mappings()}
    assert by_stream == {aws.stream_arn(_day(0)): aws.functions["projector-green"],
                         aws.stream_arn(_day(1)): aws.functions["projector-green"]}


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


def test_new_tables_follow_the_colour_of_todays_mapping(aws: Aws) -> None:
    """After `streamfold mappings swap --to green`, tomorrow's table is mapped to green too."""
    rotate(aws.ddb, aws.lam, PREFIX, NOW, mapping_settings=aws.settings)  # blue is live
    today = {m["EventSourceArn"]: m for m in aws.mappings()}[aws.stream_arn(_day(0))]
    aws.lam.update_event_source_mapping(UUID=today["UUID"], FunctionName="projector-green")
    later = rotate(aws.ddb, aws.lam, PREFIX, NOW + timedelta(hours=1), mapping_settings=aws.settings)
    # It is the next day now: tomorrow's (blue, made yesterday) is today's; the day after follows it.
    assert later.created_mappings == [aws.stream_arn(_day(2))]
    by_stream = {m["EventSourceArn"]: m["FunctionArn"] for m in aws.mappings()}
    assert by_stream[aws.stream_arn(_day(2))] == aws.functions["projector-blue"]
    aws.lam.update_event_source_mapping(UUID={m["EventSourceArn"]: m for m in aws.mappings()}[
        aws.stream_arn(_day(2))]["UUID"], FunctionName="projector-green")  # today, two days on
    last = rotate(aws.ddb, aws.lam, PREFIX, NOW + timedelta(days=1, hours=1), mapping_settings=aws.settings)
    assert last.created_mappings == [aws.stream_arn(_day(3))]
    assert {m["EventSourceArn"]: m["FunctionArn"] for m in aws.mappings()}[aws.stream_arn(_day(3))] == \
        aws.functions["projector-green"]


def _old_tables(ddb: Any, ages: list[int]) -> list[str]:
    names = []
    for age in ages:
        tables.ensure_table(ddb, tables.events_table_spec(PREFIX, NOW.date() - timedelta(days=age)))
        names.append(_day(-age))
    return names


def test_lifecycle_infrequent_access_export_then_delete(aws: Aws) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="sf-exports")
    recent, cold, expired = _old_tables(aws.ddb, [7, 8, 31])
    for name in (recent, cold, expired):
        aws.ddb.update_continuous_backups(TableName=name,
                                          PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    expired_stream = aws.stream_arn(expired)
    aws.lam.create_event_source_mapping(EventSourceArn=expired_stream, FunctionName="projector-blue",
                                        StartingPosition="TRIM_HORIZON")
    life = rotation.Lifecycle(ia_after_days=7, retention_days=30, export_bucket="sf-exports")

    first = rotate(aws.ddb, aws.lam, PREFIX, NOW, mapping_settings=aws.settings, lifecycle=life)
    assert first.infrequent_access == [cold]  # 8 days old; 7 days is not "older than 7"
    assert first.exports_started == [expired] and first.deleted_tables == []  # deleted once exported
    [export] = aws.ddb.list_exports(TableArn=aws.ddb.describe_table(TableName=expired)["Table"]["TableArn"])[
        "ExportSummaries"]
    desc = aws.ddb.describe_export(ExportArn=export["ExportArn"])["ExportDescription"]
    assert desc["S3Bucket"] == "sf-exports" and desc["S3Prefix"].startswith(PREFIX)

    # moto runs the export in the background (AWS takes minutes): while it runs the table is pending,
    # never exported twice, never deleted; once it completes the next rotation deletes table and mapping.
    deadline = time.monotonic() + 30
    for attempt in range(1, 1000):
        later = rotate(aws.ddb, aws.lam, PREFIX, NOW + timedelta(minutes=5 * attempt),
                       mapping_settings=aws.settings, lifecycle=life)
        assert later.exports_started == []  # never a second export
        if later.deleted_tables:
            assert later.deleted_tables == [expired] and len(later.deleted_mappings) == 1
            assert later.exports_pending == []
            break
        assert later.exports_pending == [expired] and later.deleted_mappings == []
        assert time.monotonic() < deadline, "moto's export never completed"
        time.sleep(0.2)
    remaining = [name for _day, name in tables.list_event_tables(aws.ddb, PREFIX)]
    assert expired not in remaining and {recent, cold, _day(0), _day(1)} <= set(remaining)
    assert expired_stream not in {m["EventSourceArn"] for m in aws.mappings()}


def test_lifecycle_from_environment() -> None:
    assert rotation.lifecycle_from_env({}) == rotation.Lifecycle(7, 400, None)
    assert rotation.lifecycle_from_env({"STREAMFOLD_IA_AFTER_DAYS": "3", "STREAMFOLD_RETENTION_DAYS": "0",
                                        "STREAMFOLD_EXPORT_BUCKET": "b"}) == rotation.Lifecycle(3, 0, "b")
    with pytest.raises(RotationError, match="whole number"):
        rotation.lifecycle_from_env({"STREAMFOLD_RETENTION_DAYS": "-1"})


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


def test_local_lifecycle_moves_to_ia_and_deletes_past_retention(ddb: Any, prefix: str) -> None:
    now = datetime.now(UTC)
    old = [tables.utc_today(now) - timedelta(days=age) for age in (2, 10)]
    for day in old:
        tables.ensure_table(ddb, tables.events_table_spec(prefix, day))
    cold, expired = (keys.events_table_name(prefix, day) for day in old)
    result = rotate(ddb, None, prefix, now, lifecycle=rotation.Lifecycle(ia_after_days=1, retention_days=5))
    assert result.deleted_tables == [expired] and result.exports_started == []  # no export locally
    # DynamoDB Local has no table classes (UpdateTable answers "Nothing to update"): IA is AWS-only.
    assert result.infrequent_access == []
    assert ddb.describe_table(TableName=cold)["Table"]["TableStatus"] == "ACTIVE"
    again = rotate(ddb, None, prefix, now, lifecycle=rotation.Lifecycle(ia_after_days=1, retention_days=5))
    assert (again.infrequent_access, again.deleted_tables) == ([], [])
    assert expired not in [name for _day, name in tables.list_event_tables(ddb, prefix)]
    # 0 = keep forever
    assert rotate(ddb, None, prefix, now, lifecycle=rotation.Lifecycle(0, 0)).deleted_tables == []


def test_scheduled_function_runs_locally(ddb: Any, prefix: str) -> None:

    assert "rotate_tables" in {source.name for source in app.event_sources}
    result = rotate_tables(SCHEDULED_EVENT, None)  # type: ignore[no-untyped-call]
    tomorrow = keys.events_table_name(prefix, tables.utc_today() + timedelta(days=1))
    assert tomorrow in result["tables"]
    assert result["created_mappings"] == []
    assert ddb.describe_table(TableName=tomorrow)["Table"]["TableStatus"] == "ACTIVE"
