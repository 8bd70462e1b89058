"""A test double for the handler side of the contract: Powertools batch processing over stream records.

:func:`batch_handler` wraps a per-record function into a Lambda handler that reports partial
failures (``{"batchItemFailures": [...]}``) with ``BatchProcessor(EventType.DynamoDBStreams)``
and ``process_partial_response``. :class:`EchoHandler` is the sample handler the tests use: it
remembers what it received and can be told to fail chosen records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBStreamEvent,
)

__all__ = ["DynamoDBRecord", "DynamoDBStreamEvent", "EchoHandler", "RecordHandler", "batch_handler", "echo_handler",
           "raise_on_call"]


RecordHandler = Callable[[DynamoDBRecord], Any]


def batch_handler(record_handler: RecordHandler) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """A Lambda handler that runs ``record_handler`` per record, reporting failures per record.

    Powertools processes records in order; a record whose handler raises is reported in
    ``batchItemFailures`` (the ESM then retries from the lowest failed sequence number).
    """

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
        return dict(process_partial_response(event=event, record_handler=record_handler,
                                             processor=processor, context=context))

    handler.__name__ = getattr(record_handler, "__name__", "handler")
    handler.__doc__ = record_handler.__doc__
    return handler


def raise_on_call(n: int, exc: BaseException) -> Callable[[dict[str, Any]], bool]:
    """An ``EchoHandler`` ``crash`` predicate that raises ``exc`` on the ``n``-th invocation only."""
    calls = {"n": 0}

    def crash(event: dict[str, Any]) -> bool:
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return False

    return crash


class EchoHandler:
    """Sample handler: records every record it handled (in order) and fails on demand.

    Args:
        fail: ``fail(record) -> bool``; ``True`` makes that record fail (reported per record).
        crash: ``crash(event) -> bool``; ``True`` makes the *invocation* raise (a function error).
    """

    def __init__(self, fail: Callable[[DynamoDBRecord], bool] | None = None,
                 crash: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.fail = fail
        self.crash = crash
        self.invocations: list[list[str]] = []  # sequence numbers per invocation
        self.handled: list[DynamoDBRecord] = []  # records that succeeded, in order
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._handler = batch_handler(self._record)

    def _record(self, record: DynamoDBRecord) -> None:
        if self.fail is not None and self.fail(record):
            seq = record.dynamodb.sequence_number if record.dynamodb else None
            raise ValueError(f"echo: told to fail {seq}")
        with self._lock:
            self.handled.append(record)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock:
            self.events.append(event)
            self.invocations.append([r["dynamodb"]["SequenceNumber"] for r in event["Records"]])
        if self.crash is not None and self.crash(event):
            raise RuntimeError("echo: told to crash")
        return self._handler(event, context)

    @property
    def handled_keys(self) -> list[str]:
        """``pk`` of each handled record, in handling order."""
        with self._lock:
            return [r.dynamodb.keys["pk"] for r in self.handled]  # type: ignore[union-attr,index]

    @property
    def handled_sequence_numbers(self) -> list[str]:
        with self._lock:
            return [r.dynamodb.sequence_number for r in self.handled]  # type: ignore[union-attr,misc]


echo_handler = EchoHandler()
"""A process-wide echo handler for tests that register it as function ``echo``."""
