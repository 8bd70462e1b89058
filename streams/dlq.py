"""The on-failure destination of local mappings: list and redrive dead-lettered batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.decode import sequence_key, to_lambda_record
from streams.functions import FunctionRegistry
from streams.functions import registry as default_registry
from streams.mapping import Mapping
from streams.store import ControlStore, DeadLetter
from streams.wire import DynamoDBStreamRecord

__all__ = ["RedriveResult", "records_of", "redrive"]


@dataclass(frozen=True)
class RedriveResult:
    """Outcome of a redrive: dead letters delivered (and removed) and those still failing."""

    delivered: int
    failed: int
    records: int


def records_of(dead: DeadLetter, streams: Any) -> list[DynamoDBStreamRecord]:
    """The failed records: stored with the dead letter, or re-read from the stream by the
    pointer (``DDBStreamBatchInfo``) when the batch was too large to store (as on AWS)."""
    if dead.records is not None:
        return dead.records
    info = dead.info["DDBStreamBatchInfo"]
    start, end = info["startSequenceNumber"], info["endSequenceNumber"]
    it = streams.get_shard_iterator(StreamArn=info["streamArn"], ShardId=info["shardId"],
                                    ShardIteratorType="AT_SEQUENCE_NUMBER", SequenceNumber=start)["ShardIterator"]
    out: list[DynamoDBStreamRecord] = []
    while it:
        resp = streams.get_records(ShardIterator=it, Limit=1000)
        for raw in resp["Records"]:
            if sequence_key(raw["dynamodb"]["SequenceNumber"]) > sequence_key(end):
                return out
            out.append(to_lambda_record(raw, info["streamArn"]))
        if not resp["Records"]:
            break
        it = resp.get("NextShardIterator")
    return out


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
        records = records_of(dead, streams)
        count += len(records)
        try:
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
