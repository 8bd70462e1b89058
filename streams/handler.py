"""The stream handler: DynamoDB stream records of the day tables -> the view table.

:func:`on_day_table_records` is the Lambda entry point (an Event Source Mapping on every day
table's stream) and the function the local runtime invokes, with the same event. Each record is a
packed chunk (:mod:`chalicelib.chunks`); Powertools' ``BatchProcessor`` decodes and validates
records one by one (a corrupt chunk or an invalid event fails only its record and is reported in
``batchItemFailures``), then the whole batch of good records is folded in memory and written once
by the :class:`streams.writer.ViewWriter`. A storage failure fails the invocation, so the mapping
retries/bisects the batch; re-applying it is a no-op.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)

from chalicelib import keys
from chalicelib.chunks import decode_chunk_body
from chalicelib.db import get_client
from chalicelib.log import logger, metrics
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.search import get_indexer
from chalicelib.settings import get_settings
from chalicelib.versions import active_view_version, live_versions
from chalicelib.views import ViewStore
from projections.events import Event
from projections.folds import fold_for
from streams import catchup
from streams.alerts import Outbox
from streams.writer import ViewWriter, WriteReport

__all__ = ["PoisonEventsError", "PoisonRecordError", "decode_record", "get_writer", "handle_batch", "new_writer",
           "on_day_table_records"]


class _Writers:
    """``get_writer(version=None, prefix=None)``: the process-wide view writer for a view version
    (default: the active one), built once; ``get_writer.cache_clear()`` forgets them."""

    def __call__(self, version: int | None = None, prefix: str | None = None) -> ViewWriter:
        if version is None:
            version = active_view_version(get_client(), get_settings().control_table)
        return _writer(version, prefix)

    def cache_clear(self) -> None:
        _writer.cache_clear()


get_writer = _Writers()


def new_writer(version: int, prefix: str | None = None) -> ViewWriter:
    """A view writer of its own (its own thread pools and statistics), as a Lambda sandbox builds once:
    :func:`get_writer` caches one per process."""
    s = get_settings()
    p = s.table_prefix if prefix is None else prefix
    client = get_client()
    return ViewWriter(ViewStore(client, keys.view_table_name(p, version)),
                      ScoreModelStore(client, keys.control_table_name(p)),
                      Outbox(client, keys.control_table_name(p)), get_indexer(version),
                      deferred=s.view_writes == "pages", settle_after=s.settle_seconds,
                      settle_min_age=s.settle_min_age_seconds, settle_inline=s.settle_inline,
                      fold=fold_for(version))


_writer = lru_cache(maxsize=4)(new_writer)


def decode_record(record: DynamoDBRecord) -> tuple[str, list[Event]]:
    """A stream record -> ``(tenant_id, events)``. Raises ValueError on a poison record."""
    return decode_chunk_record(record)[0::2]  # type: ignore[return-value]


class PoisonEventsError(ValueError):
    """Some events of a chunk cannot be folded; ``good`` holds the ones that can."""

    def __init__(self, tenant: str, chunk: str, good: list[Event], bad: list[str]) -> None:
        super().__init__(f"{len(bad)} of {len(good) + len(bad)} events of chunk {chunk} cannot be folded: {bad[:3]}")
        self.tenant, self.chunk, self.good = tenant, chunk, good


def decode_chunk_record(record: DynamoDBRecord) -> tuple[str, str, list[Event]]:
    """A stream record -> ``(tenant_id, chunk key, events)``.

    Raises ValueError on a poison record, and :class:`PoisonEventsError` (carrying the good events) when
    only some of its events cannot be folded.
    """
    if record.event_name not in (DynamoDBRecordEventName.INSERT, DynamoDBRecordEventName.MODIFY):
        return "", "", []
    image = record.dynamodb.new_image if record.dynamodb else {}
    if not image:
        raise ValueError("record has no NewImage (stream view type must include new images)")
    try:
        tenant, body = image["tenant"], image["body"]
    except KeyError as exc:
        raise ValueError(f"record is not a chunk: missing {exc}") from exc
    chunk = f"{record.event_source_arn or ''}|{image.get('pk')}"
    good: list[Event] = []
    bad: list[str] = []
    # The chunk's format (absent: format 1) is upcast here; a newer one raises, failing this record alone.
    for i, wire in enumerate(decode_chunk_body(body, image.get("pk"), image.get("fmt"))):
        try:
            good.append(Event.from_wire(wire))
        except (ValueError, KeyError, TypeError) as exc:
            bad.append(f"event {i}: {exc}")
    if bad:
        raise PoisonEventsError(str(tenant), chunk, good, bad)
    return str(tenant), chunk, good


def handle_batch(records: list[dict[str, Any]], context: Any = None, *, writer: ViewWriter | None = None,
                 now: datetime | None = None) -> tuple[dict[str, Any], WriteReport]:
    """Process one batch; returns the partial-batch response and what was written."""
    collected: dict[str, list[tuple[str, list[Event]]]] = {}

    def record_handler(record: DynamoDBRecord) -> None:
        try:
            tenant, chunk, events = decode_chunk_record(record)
        except PoisonEventsError as poison:
            # A poison event never takes the other events of its request with it: they are folded now (a
            # retry of this record folds them again, which claims and chunk rings make a no-op), and the
            # record still fails, so the mapping retries it and finally dead-letters it whole for inspection.
            if poison.good:
                collected.setdefault(poison.tenant, []).append((poison.chunk, poison.good))
            raise
        if events:
            collected.setdefault(tenant, []).append((chunk, events))

    processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
    try:
        with processor(records=records, handler=record_handler, lambda_context=context):
            processor.process()
    except BatchProcessingError:
        # Every record failed (Powertools raises): still fold the good events of partly poisoned chunks.
        if collected:
            _fold(records, collected, writer, now or datetime.now(UTC))
        raise
    report = _fold(records, collected, writer, now or datetime.now(UTC))
    response: dict[str, Any] = dict(processor.response())
    if response.get("batchItemFailures"):
        logger.warning("poison records in batch", extra={"failures": response["batchItemFailures"]})
    return response, report


def _fold(records: list[dict[str, Any]], collected: dict[str, list[tuple[str, list[Event]]]],
          writer: ViewWriter | None, now: datetime) -> WriteReport:
    """Fold a batch into every live version, each with its own fold code (``writer``: that one alone).

    The serving version and every building version in phase ``current`` are written; a version whose rebuild
    is running (``replaying``) gets the batch's stream positions recorded for its catch-up
    (:mod:`streams.catchup`). The report is the serving version's, with every version's writes added."""
    if writer is not None:
        return writer.record(None, now, chunks=collected)
    s = get_settings()
    client = get_client()
    report: WriteReport | None = None
    extra_units, extra_writes = 0.0, 0
    for version, phase in live_versions(client, s.control_table).items():
        if phase == "replaying":
            catchup.record_positions(client, s.table_prefix, version, records)
            continue
        r = get_writer(version).record(None, now, chunks=collected)
        if phase == "serving":
            report = r
        else:
            extra_units += r.write_units
            extra_writes += r.writes
    assert report is not None  # live_versions always names the serving version
    report.write_units += extra_units
    report.writes += extra_writes
    return report


_METRICS_LOCK = threading.Lock()
"""Powertools' ``Metrics`` is one buffer per process, flushed per invocation: a Lambda sandbox runs one
invocation at a time, but the local runtime runs concurrent batches of a shard (``ParallelizationFactor``)
in one process, and two flushes at once would mix or drop each other's metrics."""


def on_day_table_records(event: dict[str, Any], context: Any, *, writer: ViewWriter | None = None) -> dict[str, Any]:
    """Lambda entry point (DynamoDB Streams event source mapping, ReportBatchItemFailures).

    ``writer``: the view writer to use (default: :func:`get_writer`, the process's; ``tooling.parallel`` gives
    each concurrent batch one of its own, as each Lambda sandbox has).
    """
    records = event.get("Records", [])
    response, report = handle_batch(records, context, writer=writer)
    with _METRICS_LOCK:  # one EMF line per invocation, as @metrics.log_metrics writes it
        metrics.add_metric(name="EventsProjected", unit=MetricUnit.Count, value=report.events)
        metrics.add_metric(name="ViewWriteUnits", unit=MetricUnit.Count, value=report.write_units)
        metrics.add_metric(name="AlertsRaised", unit=MetricUnit.Count, value=report.alerts)
        metrics.flush_metrics()
    logger.info("batch projected", extra={"records": len(records), "events": report.events,
                                          "write_units": report.write_units, "writes": report.writes,
                                          "accounts": report.accounts})
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
