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
    "LambdaMappingBackend",
    "MappingBackend",
    "MappingSettings",
    "RotationError",
    "RotationResult",
    "rotate",
    "run",
    "settings_from_env",
]


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

    def ensure_mapping(self, stream_arn: str) -> bool:
        if self.existing(stream_arn):
            return False
        created = self._lambda.create_event_source_mapping(**self._settings.create_request(stream_arn))
        logger.info("mapped %s -> %s (%s)", stream_arn, self._settings.function_name, created.get("UUID"))
        return True


@dataclass
class RotationResult:
    """What one run found and changed."""

    tables: list[str] = field(default_factory=list)
    created_tables: list[str] = field(default_factory=list)
    created_mappings: list[str] = field(default_factory=list)
    pitr_enabled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "tables": self.tables,
            "created_tables": self.created_tables,
            "created_mappings": self.created_mappings,
            "pitr_enabled": self.pitr_enabled,
        }


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
) -> RotationResult:
    """Ensure today's and tomorrow's day tables and (on AWS) their stream mappings.

    Args:
        client: low-level DynamoDB client.
        lambda_client: boto3 ``lambda`` client on AWS; ``None`` locally (no mappings made).
        prefix: table-name prefix.
        now: the current time (any timezone; days are UTC).
        mapping_backend: overrides how mappings are ensured (e.g. a ``streams/`` backend).
        mapping_settings: used with ``lambda_client``; read from the environment when omitted.

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

    backend = mapping_backend
    if backend is None and lambda_client is not None:
        settings = mapping_settings or settings_from_env()
        if settings is None:
            raise RotationError("STREAMFOLD_PROJECTOR_FUNCTION and STREAMFOLD_DLQ_ARN are not set; "
                                f"day tables {result.tables} exist but are not mapped")
        backend = LambdaMappingBackend(lambda_client, settings)
    if backend is None:
        return result

    for name in result.tables:
        # PITR on AWS only: DynamoDB Local keeps no backups.
        if lambda_client is not None and _ensure_pitr(client, name):
            result.pitr_enabled.append(name)
        stream_arn = client.describe_table(TableName=name)["Table"].get("LatestStreamArn")
        if not stream_arn:
            raise RotationError(f"day table {name} has no stream")
        if backend.ensure_mapping(stream_arn):
            result.created_mappings.append(stream_arn)
    return result


def run(now: datetime | None = None) -> RotationResult:
    """One scheduled rotation with the process settings (clients built here, not at import)."""


    settings = get_settings()
    lambda_client = None if settings.is_local else boto3.session.Session().client("lambda", region_name=settings.region)
    return rotate(db.get_client(), lambda_client, settings.table_prefix, now or datetime.now(UTC))
