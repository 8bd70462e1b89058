"""The on-failure destination of local mappings: list and redrive dead-lettered batches; `read_batch` re-reads
a batch by its `DDBStreamBatchInfo` pointer (also for the AWS queue, `streams.aws_dlq`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from streams.decode import sequence_key, to_lambda_record
from streams.functions import FunctionRegistry
from streams.functions import registry as default_registry
from streams.mapping import Mapping
from streams.store import ControlStore, DeadLetter
from streams.wire import DynamoDBStreamRecord, StreamBatchInfo

__all__ = ["RecordsExpired", "RedriveResult", "read_batch", "records_of", "redrive"]


@dataclass(frozen=True)
class RedriveResult:
    """Outcome of a redrive: dead letters delivered (and removed) and those still failing."""

    delivered: int
    failed: int
    records: int


class RecordsExpired(LookupError):
    """The batch a pointer names is no longer in the stream: trimmed (24 h retention), or the stream or
    shard is gone (its day table was deleted). The events are still in the day table: rebuild with
    ``streamfold replay``."""


# The stream API's answers for a pointer it cannot serve any more (DynamoDB Streams API reference).
_GONE = ("TrimmedDataAccessException", "ResourceNotFoundException")


def read_batch(info: StreamBatchInfo | dict[str, Any], streams: Any) -> list[DynamoDBStreamRecord]:
    """The records of a ``DDBStreamBatchInfo`` pointer (first to last sequence number, one shard), re-read
    from the stream in Lambda's event shape.

    Raises:
        RecordsExpired: the stream no longer holds the batch (``TrimmedDataAccessException``, the stream or
            shard not found, or a first record other than ``startSequenceNumber``, i.e. its head was trimmed).
    """
    start, end = info["startSequenceNumber"], info["endSequenceNumber"]
    try:
        it = streams.get_shard_iterator(StreamArn=info["streamArn"], ShardId=info["shardId"],
                                        ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=start)["ShardIterator"]
        out: list[DynamoDBStreamRecord] = []
        while it:
            resp = streams.get_records(ShardIterator=it, Limit=1000)
            for raw in resp["Records"]:
                seq = raw["dynamodb"]["SequenceNumber"]
                if not out and seq != start:
                    raise RecordsExpired(f"sequence number {start} is no longer in {info['shardId']} "
                                         f"(first record there: {seq})")
                if sequence_key(seq) > sequence_key(end):
                    return out
                out.append(to_lambda_record(raw, info["streamArn"]))
                if seq == end:
                    return out
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _GONE:
            raise RecordsExpired(f"{code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
        raise
    if not out and int(info.get("batchSize") or 0) > 0:
        raise RecordsExpired(f"no record from sequence number {start} in {info['shardId']}")
    return out


def records_of(dead: DeadLetter, streams: Any) -> list[DynamoDBStreamRecord]:
    """The failed records: stored with the dead letter, or re-read from the stream by the
    pointer (``DDBStreamBatchInfo``) when the batch was too large to store (as on AWS)."""
    if dead.records is not None:
        return dead.records
    return read_batch(dead.info["DDBStreamBatchInfo"], streams)


def redrive(store: ControlStore, mapping: Mapping, streams: Any, functions: FunctionRegistry | None = None,
            ) -> RedriveResult:
    """Invoke the mapping's *current* target with each dead-lettered batch, oldest first.

    A batch that succeeds (no exception, no ``batchItemFailures``) is removed from the store; one
    that fails again stays, with its redrive attempt count and last error.
    """
    functions = functions or default_registry
    delivered = failed = count = 0
    for dead in store.dead_letters(mapping.uuid):
        if dead.condition == "RecordsTrimmed":
            # Nothing to send: the records left the stream unread. They stay listed until the view is
            # rebuilt from the day tables (`streamfold replay`) and the dead letter is deleted by hand.
            failed += 1
            continue
        try:
            records = records_of(dead, streams)  # RecordsExpired: noted like a failed invocation, kept
            count += len(records)
            handler, ctx = functions.resolve(mapping.function_name)
            response = handler({"Records": list(records)}, ctx)
            if isinstance(response, dict) and response.get("batchItemFailures"):
                raise RuntimeError(f"batchItemFailures: {response['batchItemFailures']}")
        except Exception as exc:
            store.note_redrive_failure(mapping.uuid, dead.sk, f"{type(exc).__name__}: {exc}")
            failed += 1
            continue
        store.delete_dead_letter(mapping.uuid, dead.sk)
        delivered += 1
    return RedriveResult(delivered, failed, count)
