"""The projector: DynamoDB stream records of the day tables -> the view table.

Runs unchanged on Lambda (Event Source Mapping) and under the local runtime. Each record is a
packed chunk (see :mod:`chalicelib.ingest`); Powertools' ``BatchProcessor`` decodes and
validates records one by one (a corrupt chunk or an invalid event fails only its record and is
reported in ``batchItemFailures``), then the whole batch of good records is folded in memory and
written once (:class:`chalicelib.projector.Projector`). A storage failure fails the invocation,
so the mapping retries/bisects the batch; re-applying it is a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib import keys
from chalicelib.alerts import Outbox
from chalicelib.db import get_client
from chalicelib.ingest import unpack_chunk
from chalicelib.log import logger, metrics
from chalicelib.projector import Projector, ProjectStats
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.settings import get_settings
from chalicelib.views import ViewStore
from projections import account
from projections.events import Event

__all__ = ["VIEW_VERSION", "PoisonRecordError", "decode_record", "get_projector", "handler", "project_records"]

VIEW_VERSION = account.VERSION


class _Projectors:
    """``get_projector(version=None, prefix=None)``: the process-wide projector for a view version
    (default: the active one), built once; ``get_projector.cache_clear()`` forgets them."""

    def __call__(self, version: int | None = None, prefix: str | None = None) -> Projector:
        if version is None:
            from chalicelib.versions import active_view_version

            version = active_view_version(get_client(), get_settings().control_table)
        return _projector(version, prefix)

    def cache_clear(self) -> None:
        _projector.cache_clear()


get_projector = _Projectors()


@lru_cache(maxsize=4)
def _projector(version: int, prefix: str | None) -> Projector:
    s = get_settings()
    p = s.table_prefix if prefix is None else prefix
    client = get_client()
    from chalicelib.search import get_indexer

    search = get_indexer(version)
    return Projector(ViewStore(client, keys.view_table_name(p, version)),
                     ScoreModelStore(client, keys.control_table_name(p)),
                     Outbox(client, keys.control_table_name(p)), search)


def decode_record(raw: dict[str, Any]) -> tuple[str, list[Event]]:
    """A Lambda stream record -> ``(tenant_id, events)``. Raises ValueError on a poison record."""
    if raw.get("eventName") not in ("INSERT", "MODIFY"):
        return "", []
    image = raw.get("dynamodb", {}).get("NewImage")
    if not image:
        raise ValueError("record has no NewImage (stream view type must include new images)")
    tenant, wire_events = unpack_chunk(image)
    return tenant, [Event.from_wire(e) for e in wire_events]


def project_records(records: list[dict[str, Any]], context: Any = None, *, projector: Projector | None = None,
                    now: datetime | None = None) -> tuple[dict[str, Any], ProjectStats]:
    """Process one batch; returns the partial-batch response and what was written."""
    collected: dict[str, list[Event]] = {}

    def record_handler(record: DynamoDBRecord) -> None:
        tenant, events = decode_record(record.raw_event)
        if events:
            collected.setdefault(tenant, []).extend(events)

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    with processor(records=records, handler=record_handler, lambda_context=context):
        processor.process()
    proj = projector or get_projector()
    stats = proj.project(collected, now or datetime.now(UTC))
    response: dict[str, Any] = dict(processor.response())
    if response.get("batchItemFailures"):
        logger.warning("poison records in batch", extra={"failures": response["batchItemFailures"]})
    return response, stats


@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (DynamoDB Streams event source mapping, ReportBatchItemFailures)."""
    records = event.get("Records", [])
    response, stats = project_records(records, context)
    metrics.add_metric(name="EventsProjected", unit=MetricUnit.Count, value=stats.events)
    metrics.add_metric(name="ViewWriteUnits", unit=MetricUnit.Count, value=stats.write_units)
    metrics.add_metric(name="AlertsRaised", unit=MetricUnit.Count, value=stats.alerts)
    logger.info("batch projected", extra={"records": len(event.get("Records", [])), "events": stats.events,
                                          "write_units": stats.write_units, "writes": stats.writes,
                                          "accounts": stats.accounts})
    failed = [f.get("itemIdentifier") for f in response.get("batchItemFailures", [])]
    if failed and len(records) > 1:
        # Reporting a poison record makes the mapping retry it *with every record behind it* (and count a
        # retry), so once retries run out good records would be dead-lettered too. A function error lets the
        # mapping bisect (our mappings all set BisectBatchOnFunctionError) until the poison record is alone;
        # the good records are applied already, and re-applying them writes nothing.
        raise PoisonRecordError(f"{len(failed)} poison record(s) in a batch of {len(records)}: {failed}")
    return response


class PoisonRecordError(Exception):
    """A batch holds records that cannot be decoded (raised so the mapping bisects down to them)."""
