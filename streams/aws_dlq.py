"""The on-failure queue of the AWS mappings: list and redrive the batches Lambda gave up on.

On AWS every day table's mapping sends a batch it gives up on (retries exhausted, record too old) to the SQS
queue ``<prefix>stream-failures`` (``cfn/generate.py``, ``StreamFailureQueue``). Each message is an
*invocation record* in the shape the Lambda Developer Guide documents ("Retain discarded records for a
DynamoDB event source in Lambda")::

    {"requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "responseContext": {"statusCode", "executedVersion", "functionError"},
     "version": "1.0", "timestamp": "...",
     "DDBStreamBatchInfo": {"shardId", "startSequenceNumber", "endSequenceNumber",
                            "approximateArrivalOfFirstRecord", "approximateArrivalOfLastRecord",
                            "batchSize", "streamArn"}}

It carries neither the records nor the mapping's UUID: the records are re-read from the stream by the pointer
(while the stream holds them, 24 h), and the mapping is the one that reads that stream — so a redrive goes to
the function the mapping targets *now* (after a blue/green swap, the new colour), as the local redrive does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import ClientError

from streams.aws_backend import AwsMappingBackend
from streams.dlq import RecordsExpired, read_batch
from streams.mapping import Mapping, split_function, table_name_of

__all__ = ["LIST_VISIBILITY_SECONDS", "REDRIVE_VISIBILITY_SECONDS", "REPLAY_COMMAND", "FailureQueue", "Invocation",
           "Invoker", "LambdaInvoker", "MappingsByStream", "QueuedFailure", "RedriveReport", "describe",
           "list_failures", "redrive_failures"]

LIST_VISIBILITY_SECONDS = 30
"""How long a listed message stays hidden while the listing reads on; every one is made visible again (timeout
0) as soon as the listing has them all, so nothing waits the 30 s unless the command dies midway."""

REDRIVE_VISIBILITY_SECONDS = 900
"""A message being redriven stays hidden for the longest a Lambda invocation can run (15 min), so no second
redrive picks it up meanwhile; the ones left in the queue are made visible again when the run ends."""

REPLAY_COMMAND = "streamfold replay view --version N --compare --promote"


@dataclass(frozen=True)
class QueuedFailure:
    """One message of the on-failure queue."""

    message_id: str
    receipt_handle: str
    body: dict[str, Any]
    receive_count: int

    @property
    def info(self) -> dict[str, Any]:
        """``DDBStreamBatchInfo``, the pointer to the batch (empty if the message is not a stream record)."""
        info = self.body.get("DDBStreamBatchInfo")
        return info if isinstance(info, dict) else {}

    @property
    def request(self) -> dict[str, Any]:
        return self.body.get("requestContext") or {}

    @property
    def response(self) -> dict[str, Any]:
        return self.body.get("responseContext") or {}

    @property
    def function(self) -> str:
        """``name[:qualifier]`` of the function that failed (from ``requestContext.functionArn``)."""
        arn = str(self.request.get("functionArn") or "")
        parts = arn.split(":")
        return ":".join(parts[6:]) if len(parts) >= 7 and parts[5] == "function" else arn


class FailureQueue:
    """The SQS on-failure queue, read without deleting (visibility timeouts) and deleted from one message at a time.

    Args:
        client: a boto3 ``sqs`` client.
        queue_url: the queue (``StreamFailureQueueUrl`` output of the storage stack).
        wait_seconds: long-poll time of each receive; long polling asks every SQS server, so an empty answer
            means the queue has nothing visible left (a short poll may miss messages).
    """

    def __init__(self, client: Any, queue_url: str, *, wait_seconds: int = 1) -> None:
        self.client = client
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds

    def receive(self, visibility: int) -> Iterator[QueuedFailure]:
        """Every visible message once, each hidden for ``visibility`` seconds, until a receive brings nothing new."""
        seen: set[str] = set()
        while True:
            resp = self.client.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=visibility,
                WaitTimeSeconds=self.wait_seconds, MessageSystemAttributeNames=["ApproximateReceiveCount"])
            fresh = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not fresh:
                return
            for m in fresh:
                seen.add(m["MessageId"])
                try:
                    body = json.loads(m["Body"])
                except ValueError:
                    body = {}
                yield QueuedFailure(m["MessageId"], m["ReceiptHandle"], body if isinstance(body, dict) else {},
                                    int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)))

    def release(self, messages: list[QueuedFailure]) -> None:
        """Make messages visible again at once (they stay in the queue)."""
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                for n, m in enumerate(chunk)])

    def delete(self, message: QueuedFailure) -> None:
        self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle)


class MappingsByStream:
    """The day tables' mappings, listed once, looked up by the stream a message points at.

    A message names the stream and the function that failed; the mapping is the one reading that stream (the
    same function, any alias). Its exact stream ARN first; failing that, the mapping of the same table (a
    stream re-enabled on a table gets a new label, and DynamoDB Local labels its ARNs with region ``ddblocal``).
    """

    def __init__(self, lambda_client: Any) -> None:
        self._mappings = [m for m in AwsMappingBackend(lambda_client).list() if ":table/" in m.event_source_arn]

    def find(self, stream_arn: str, function: str) -> Mapping | None:
        if not stream_arn:
            return None
        base = split_function(function)[0] if function else None
        mine = [m for m in self._mappings if base is None or m.function_base_name == base]
        for m in mine:
            if m.event_source_arn == stream_arn:
                return m
        table = table_name_of(stream_arn) if ":table/" in stream_arn else None
        same_table = [m for m in mine if table is not None and table_name_of(m.event_source_arn) == table]
        return same_table[0] if len(same_table) == 1 else None


def describe(message: QueuedFailure, mapping: Mapping | None) -> dict[str, Any]:
    """One listing line: the fields of ``streamfold dlq list`` (local), from the invocation record."""
    info = message.info
    stream = str(info.get("streamArn") or "")
    return {
        "mapping": mapping.uuid if mapping else None,
        "id": message.message_id,
        "function": message.function,
        "condition": message.request.get("condition"),
        "records": info.get("batchSize"),
        "shard": info.get("shardId"),
        "first": info.get("startSequenceNumber"),
        "last": info.get("endSequenceNumber"),
        "error": message.response.get("error") or message.response.get("functionError"),
        "approximate_invoke_count": message.request.get("approximateInvokeCount"),
        "table": table_name_of(stream) if ":table/" in stream else None,
        "failed_at": message.body.get("timestamp"),
        "receive_count": message.receive_count,
        "stored": False,  # Lambda sends the pointer only; the records are re-read from the stream
    }


def list_failures(queue: FailureQueue, mappings: MappingsByStream,
                  select: Callable[[dict[str, Any]], bool] = lambda row: True) -> list[dict[str, Any]]:
    """Every message of the queue, described; nothing deleted (each is visible again when this returns)."""
    received: list[QueuedFailure] = []
    rows: list[dict[str, Any]] = []
    try:
        for message in queue.receive(LIST_VISIBILITY_SECONDS):
            received.append(message)
            row = describe(message, mappings.find(str(message.info.get("streamArn") or ""), message.function))
            if select(row):
                rows.append(row)
    finally:
        queue.release(received)
    return rows


@dataclass(frozen=True)
class Invocation:
    """What ``lambda:Invoke`` (RequestResponse) answered: ``FunctionError`` and the decoded payload."""

    function_error: str | None
    payload: Any

    def failure(self) -> str | None:
        """Why the batch did not go through, or ``None``: a function error, or ``batchItemFailures``."""
        if self.function_error:
            detail = self.payload.get("errorMessage") if isinstance(self.payload, dict) else self.payload
            return f"{self.function_error}: {detail}"
        if isinstance(self.payload, dict) and self.payload.get("batchItemFailures"):
            return f"batchItemFailures: {self.payload['batchItemFailures']}"
        return None


class Invoker(Protocol):
    """Invokes a function synchronously with an event (``LambdaInvoker`` on AWS; tests run the handler)."""

    def __call__(self, function_name: str, event: dict[str, Any]) -> Invocation: ...


class LambdaInvoker:
    """``lambda:Invoke`` with ``InvocationType=RequestResponse``, as the mapping itself invokes the function."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, function_name: str, event: dict[str, Any]) -> Invocation:
        resp = self.client.invoke(FunctionName=function_name, InvocationType="RequestResponse",
                                  Payload=json.dumps(event).encode())
        raw = resp["Payload"].read() if "Payload" in resp else b""
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return Invocation(resp.get("FunctionError"), payload)


@dataclass
class RedriveReport:
    """One line per message handled, and the counts (``streamfold dlq redrive --aws``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    expired: int = 0

    def summary(self) -> dict[str, int]:
        return {"delivered": self.delivered, "failed": self.failed, "expired": self.expired,
                "records": sum(int(m.get("records_sent") or 0) for m in self.messages)}


def redrive_failures(queue: FailureQueue, mappings: MappingsByStream, streams: Any, invoker: Invoker,
                     select: Callable[[dict[str, Any]], bool] = lambda row: True) -> RedriveReport:
    """Send each queued batch to its mapping's current function; delete the message only once that succeeded.

    For each message: re-read the records by the pointer (:func:`streams.dlq.read_batch`), invoke the function
    the mapping targets now with ``{"Records": [...]}`` (the event Lambda sends), and delete the message when
    the invocation has no ``FunctionError`` and no ``batchItemFailures``. A batch no longer in the stream is
    *expired*: reported with its day table (rebuild the view from the day tables: ``streamfold replay``) and
    left in the queue, as is a batch that failed again. Messages left are visible again when this returns.
    """
    report = RedriveReport()
    kept: list[QueuedFailure] = []
    try:
        for message in queue.receive(REDRIVE_VISIBILITY_SECONDS):
            info = message.info
            mapping = mappings.find(str(info.get("streamArn") or ""), message.function)
            row = describe(message, mapping)
            if not select(row):
                kept.append(message)
                continue
            kept.append(message)  # until it is deleted: released at the end whatever happens meanwhile
            line: dict[str, Any] = {"id": message.message_id, "mapping": row["mapping"], "table": row["table"],
                                    "records": row["records"], "failed_function": message.function}
            outcome = _redrive_one(message, mapping, streams, invoker, line)
            line["status"] = outcome
            if outcome == "delivered":
                queue.delete(message)
                kept.pop()
                report.delivered += 1
            elif outcome == "expired":
                report.expired += 1
            else:
                report.failed += 1
            report.messages.append(line)
    finally:
        queue.release(kept)
    return report


def _redrive_one(message: QueuedFailure, mapping: Mapping | None, streams: Any, invoker: Invoker,
                 line: dict[str, Any]) -> str:
    info = message.info
    if not info.get("streamArn") or not info.get("shardId"):
        line["error"] = "not a DynamoDB stream invocation record (no DDBStreamBatchInfo)"
        return "failed"
    try:
        records = read_batch(info, streams)
    except RecordsExpired as exc:
        line["error"] = f"records no longer in the stream: {exc}"
        line["replay"] = {"table": line["table"], "command": REPLAY_COMMAND}
        return "expired"
    except ClientError as exc:  # throttled, access denied, ...: the records may still be there, try again later
        line["error"] = f"reading the stream: {exc}"
        return "failed"
    line["records_sent"] = len(records)
    if mapping is None:
        line["error"] = f"no event source mapping of {message.function or 'any function'} reads {info['streamArn']}"
        return "failed"
    line["function"] = mapping.function_name
    try:
        result = invoker(mapping.function_name, {"Records": [dict(r) for r in records]})
    except Exception as exc:  # the Invoke call itself failed (throttled, not found, ...): try again later
        line["error"] = f"{type(exc).__name__}: {exc}"
        return "failed"
    failure = result.failure()
    if failure:
        line["error"] = failure
        return "failed"
    return "delivered"
