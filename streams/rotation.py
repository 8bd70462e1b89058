"""Day-table rotation: today's and tomorrow's event tables, and on AWS their stream mappings.

The scheduled function ``rotate_tables`` (``app.py``) runs this every hour, so tomorrow's table
and its Event Source Mapping exist long before the first event of the day arrives. Every step is
idempotent: a run that finds everything in place creates nothing.

Mappings start at ``TRIM_HORIZON``: if the ingest safety net creates a day table before rotation
maps it, the next rotation still delivers every record (streams keep 24 hours).

Locally (DynamoDB Local) there is no Lambda: pass ``lambda_client=None`` and the ``streams/``
runtime discovers new day tables itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import boto3

from chalicelib import db, tables
from chalicelib.log import logger
from chalicelib.settings import get_settings
from streams.mapping_settings import PROJECTOR_MAPPING

__all__ = [
    "INFREQUENT_ACCESS",
    "LambdaMappingBackend",
    "Lifecycle",
    "MappingBackend",
    "MappingSettings",
    "RotationError",
    "RotationResult",
    "rotate",
    "run",
    "lifecycle_from_env",
    "settings_from_env",
]

INFREQUENT_ACCESS = "STANDARD_INFREQUENT_ACCESS"


DAYS_AHEAD = 1


class RotationError(RuntimeError):
    """Rotation could not finish (tables already created stay created)."""


@dataclass(frozen=True)
class MappingSettings:
    """How every day table's stream is wired to the projector (AWS ``CreateEventSourceMapping``).

    Attributes:
        function_name: projector function name, ARN or ``name:alias``.
        on_failure_arn: SQS queue receiving records that failed after all retries.
    """

    function_name: str
    on_failure_arn: str
    # Defaults: the one source of mapping settings (``streams.mapping_settings``), shared with the
    # local runtime.
    batch_size: int = PROJECTOR_MAPPING.batch_size
    batching_window_seconds: int = PROJECTOR_MAPPING.maximum_batching_window_in_seconds
    bisect_on_error: bool = PROJECTOR_MAPPING.bisect_batch_on_function_error
    maximum_retry_attempts: int = PROJECTOR_MAPPING.maximum_retry_attempts
    maximum_record_age_seconds: int = PROJECTOR_MAPPING.maximum_record_age_in_seconds
    parallelization_factor: int = PROJECTOR_MAPPING.parallelization_factor
    starting_position: str = PROJECTOR_MAPPING.starting_position

    def create_request(self, stream_arn: str) -> dict[str, Any]:
        """The ``CreateEventSourceMapping`` request for one day table's stream."""
        return {
            "EventSourceArn": stream_arn,
            "FunctionName": self.function_name,
            "Enabled": True,
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.batching_window_seconds,
            "StartingPosition": self.starting_position,
            "BisectBatchOnFunctionError": self.bisect_on_error,
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": self.maximum_record_age_seconds,
            "ParallelizationFactor": self.parallelization_factor,
            "FunctionResponseTypes": list(PROJECTOR_MAPPING.function_response_types),
            "DestinationConfig": {"OnFailure": {"Destination": self.on_failure_arn}},
        }


class MappingBackend(Protocol):
    """Ensures one stream -> projector mapping exists (``streams/`` may provide the real one)."""

    def ensure_mapping(self, stream_arn: str) -> bool:
        """Create the mapping for ``stream_arn`` unless one exists; ``True`` if created."""
        ...


class LambdaMappingBackend:
    """:class:`MappingBackend` over boto3's ``lambda`` client.

    A stream that already has a mapping to *any* function counts as mapped: after a blue/green
    swap the mapping targets the other colour, and a second mapping would project twice.
    """

    def __init__(self, lambda_client: Any, settings: MappingSettings) -> None:
        self._lambda = lambda_client
        self._settings = settings

    def existing(self, stream_arn: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"EventSourceArn": stream_arn}
        while True:
            page = self._lambda.list_event_source_mappings(**kwargs)
            found.extend(m for m in page.get("EventSourceMappings", []) if m.get("State") != "Deleting")
            if not page.get("NextMarker"):
                return found
            kwargs["Marker"] = page["NextMarker"]

    def ensure_mapping(self, stream_arn: str, function_name: str | None = None) -> bool:
        if self.existing(stream_arn):
            return False
        request = self._settings.create_request(stream_arn)
        if function_name:
            request["FunctionName"] = function_name
        created = self._lambda.create_event_source_mapping(**request)
        logger.info("mapped %s -> %s (%s)", stream_arn, request["FunctionName"], created.get("UUID"))
        return True

    def live_function(self, stream_arn: str) -> str | None:
        """The function (``name:alias``) today's mapping targets: after a blue/green swap new day
        tables follow it instead of the colour the stack was deployed with."""
        for m in self.existing(stream_arn):
            arn = str(m.get("FunctionArn", ""))
            parts = arn.split(":")
            if len(parts) >= 7 and parts[5] == "function":
                return ":".join(parts[6:])
        return None

    def delete_mappings(self, stream_arn: str) -> list[str]:
        """Delete every mapping of a stream (its table is being deleted); their UUIDs."""
        deleted = []
        for m in self.existing(stream_arn):
            self._lambda.delete_event_source_mapping(UUID=m["UUID"])
            deleted.append(str(m["UUID"]))
        return deleted


@dataclass
class RotationResult:
    """What one run found and changed."""

    tables: list[str] = field(default_factory=list)
    created_tables: list[str] = field(default_factory=list)
    created_mappings: list[str] = field(default_factory=list)
    pitr_enabled: list[str] = field(default_factory=list)
    infrequent_access: list[str] = field(default_factory=list)
    exports_started: list[str] = field(default_factory=list)
    exports_pending: list[str] = field(default_factory=list)
    deleted_tables: list[str] = field(default_factory=list)
    deleted_mappings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "tables": self.tables,
            "created_tables": self.created_tables,
            "created_mappings": self.created_mappings,
            "pitr_enabled": self.pitr_enabled,
            "infrequent_access": self.infrequent_access,
            "exports_started": self.exports_started,
            "exports_pending": self.exports_pending,
            "deleted_tables": self.deleted_tables,
            "deleted_mappings": self.deleted_mappings,
        }


@dataclass(frozen=True)
class Lifecycle:
    """What happens to day tables as they age (the rotation function's environment).

    Attributes:
        ia_after_days: tables more than this many days old move to ``STANDARD_INFREQUENT_ACCESS``
            (0 = never).
        retention_days: tables more than this many days old are exported (when ``export_bucket`` is
            set) and deleted, with their mappings (0 = keep forever).
        export_bucket: S3 bucket for ``ExportTableToPointInTime`` before deletion (``None`` = no export).
    """

    ia_after_days: int = 7
    retention_days: int = 400
    export_bucket: str | None = None


def lifecycle_from_env(environ: Mapping[str, str] | None = None) -> Lifecycle:
    """``STREAMFOLD_IA_AFTER_DAYS`` (7), ``STREAMFOLD_RETENTION_DAYS`` (400, 0 = keep) and
    ``STREAMFOLD_EXPORT_BUCKET`` (none)."""
    env = os.environ if environ is None else environ

    def days(name: str, default: int) -> int:
        raw = env.get(name) or str(default)
        if not raw.isdigit():
            raise RotationError(f"{name} must be a whole number of days, not {raw!r}")
        return int(raw)

    lifecycle = Lifecycle(ia_after_days=days("STREAMFOLD_IA_AFTER_DAYS", 7),
                          retention_days=days("STREAMFOLD_RETENTION_DAYS", 400),
                          export_bucket=env.get("STREAMFOLD_EXPORT_BUCKET") or None)
    if lifecycle.retention_days and lifecycle.retention_days <= DAYS_AHEAD:
        raise RotationError("STREAMFOLD_RETENTION_DAYS must be 0 (keep) or more than a day")
    return lifecycle


def settings_from_env(environ: Mapping[str, str] | None = None) -> MappingSettings | None:
    """Mapping settings from ``STREAMFOLD_PROJECTOR_FUNCTION`` and ``STREAMFOLD_DLQ_ARN``.

    Returns ``None`` when neither is set; raises :class:`RotationError` when only one is.
    """
    env = os.environ if environ is None else environ
    function = env.get("STREAMFOLD_PROJECTOR_FUNCTION") or None
    dlq = env.get("STREAMFOLD_DLQ_ARN") or None
    if function is None and dlq is None:
        return None
    if function is None or dlq is None:
        missing = "STREAMFOLD_PROJECTOR_FUNCTION" if function is None else "STREAMFOLD_DLQ_ARN"
        raise RotationError(f"{missing} is not set; cannot map new day tables")
    return MappingSettings(function_name=function, on_failure_arn=dlq)


def _ensure_pitr(client: Any, table: str) -> bool:
    """Turn on point-in-time recovery (day tables are the event store). ``True`` if changed."""
    desc = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    status = desc.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
    if status == "ENABLED":
        return False
    client.update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )
    return True


def rotate(
    client: Any,
    lambda_client: Any | None,
    prefix: str,
    now: datetime,
    mapping_backend: MappingBackend | None = None,
    *,
    mapping_settings: MappingSettings | None = None,
    lifecycle: Lifecycle | None = None,
) -> RotationResult:
    """Ensure today's and tomorrow's day tables and (on AWS) their stream mappings.

    Args:
        client: low-level DynamoDB client.
        lambda_client: boto3 ``lambda`` client on AWS; ``None`` locally (no mappings made).
        prefix: table-name prefix.
        now: the current time (any timezone; days are UTC).
        mapping_backend: overrides how mappings are ensured (e.g. a ``streams/`` backend).
        mapping_settings: used with ``lambda_client``; read from the environment when omitted.
        lifecycle: ageing of old tables (Standard-IA, export, deletion); from the environment when omitted.

    Returns:
        The tables and mappings seen and created.

    Raises:
        RotationError: mappings are wanted (``lambda_client`` given) but not configured.
    """
    result = RotationResult()
    today = tables.utc_today(now)
    before = {name for _day, name in tables.list_event_tables(client, prefix)}
    result.tables = tables.ensure_event_tables(client, prefix, today, days_ahead=DAYS_AHEAD)
    result.created_tables = [name for name in result.tables if name not in before]
    for name in result.created_tables:
        logger.info("created day table %s", name)

    _age_tables(client, lambda_client, prefix, today, lifecycle or lifecycle_from_env(), result)

    backend = mapping_backend
    if backend is None and lambda_client is not None:
        settings = mapping_settings or settings_from_env()
        if settings is None:
            raise RotationError("STREAMFOLD_PROJECTOR_FUNCTION and STREAMFOLD_DLQ_ARN are not set; "
                                f"day tables {result.tables} exist but are not mapped")
        backend = LambdaMappingBackend(lambda_client, settings)
    if backend is None:
        return result

    live = None
    if isinstance(backend, LambdaMappingBackend):
        # New tables go to the colour today's mapping targets (it follows blue/green swaps); the
        # configured function (the stack's LiveColour at deploy time) only when today has none.
        live = backend.live_function(_stream_arn(client, result.tables[0]))
    for name in result.tables:
        # PITR on AWS only: DynamoDB Local keeps no backups.
        if lambda_client is not None and _ensure_pitr(client, name):
            result.pitr_enabled.append(name)
        stream_arn = _stream_arn(client, name)
        if live and isinstance(backend, LambdaMappingBackend):
            created = backend.ensure_mapping(stream_arn, live)
        else:
            created = backend.ensure_mapping(stream_arn)
        if created:
            result.created_mappings.append(stream_arn)
    return result


def _stream_arn(client: Any, table: str) -> str:
    arn = client.describe_table(TableName=table)["Table"].get("LatestStreamArn")
    if not arn:
        raise RotationError(f"day table {table} has no stream")
    return str(arn)


def _age_tables(client: Any, lambda_client: Any | None, prefix: str, today: Any, lifecycle: Lifecycle,
                result: RotationResult) -> None:
    """Standard-IA after ``ia_after_days``; export (AWS, bucket set) then delete after ``retention_days``.

    Deletion waits for a completed export: the first run starts it, a later hourly run (once
    ``ExportTableToPointInTime`` has finished) deletes the table and its mappings. An export that
    failed is started again.
    """
    for day, name in tables.list_event_tables(client, prefix):
        age = (today - day).days
        if lifecycle.retention_days and age > lifecycle.retention_days:
            if lambda_client is not None and lifecycle.export_bucket and not _exported(client, name, lifecycle, result):
                continue
            if lambda_client is not None:
                stream_arn = client.describe_table(TableName=name)["Table"].get("LatestStreamArn")
                if stream_arn:
                    result.deleted_mappings += LambdaMappingBackend(lambda_client, _NO_SETTINGS).delete_mappings(
                        stream_arn)
            client.delete_table(TableName=name)
            result.deleted_tables.append(name)
            logger.info("deleted day table %s (%d days old, retention %d)", name, age, lifecycle.retention_days)
        elif lifecycle.ia_after_days and age > lifecycle.ia_after_days:
            table = client.describe_table(TableName=name)["Table"]
            if table.get("TableClassSummary", {}).get("TableClass") == INFREQUENT_ACCESS:
                continue
            if table.get("TableStatus") != "ACTIVE":
                continue  # an update in progress: the next run retries
            if lambda_client is None:
                # DynamoDB Local has no table classes (it answers "Nothing to update") and no bill.
                continue
            client.update_table(TableName=name, TableClass=INFREQUENT_ACCESS)
            result.infrequent_access.append(name)
            logger.info("day table %s -> %s (%d days old)", name, INFREQUENT_ACCESS, age)


_NO_SETTINGS = MappingSettings(function_name="-", on_failure_arn="-")


def _exported(client: Any, table: str, lifecycle: Lifecycle, result: RotationResult) -> bool:
    """Whether a completed export of ``table`` exists in the bucket; starts one if none is running."""
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    running = False
    kwargs: dict[str, Any] = {"TableArn": arn}
    while True:
        page = client.list_exports(**kwargs)
        for summary in page.get("ExportSummaries", []):
            desc = client.describe_export(ExportArn=summary["ExportArn"])["ExportDescription"]
            if desc.get("S3Bucket") != lifecycle.export_bucket:
                continue
            if desc.get("ExportStatus") == "COMPLETED":
                return True
            running |= desc.get("ExportStatus") == "IN_PROGRESS"
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    if not running:
        # The S3 prefix starts with the table name (and so the table prefix): the rotation role may
        # write only under <bucket>/<prefix>*.
        client.export_table_to_point_in_time(TableArn=arn, S3Bucket=lifecycle.export_bucket, S3Prefix=f"{table}/",
                                             ExportFormat="DYNAMODB_JSON")
        result.exports_started.append(table)
        logger.info("export of %s to s3://%s/%s/ started", table, lifecycle.export_bucket, table)
    else:
        result.exports_pending.append(table)
    return False


def run(now: datetime | None = None) -> RotationResult:
    """One scheduled rotation with the process settings (clients built here, not at import)."""


    settings = get_settings()
    lambda_client = None if settings.is_local else boto3.session.Session().client("lambda", region_name=settings.region)
    return rotate(db.get_client(), lambda_client, settings.table_prefix, now or datetime.now(UTC))
