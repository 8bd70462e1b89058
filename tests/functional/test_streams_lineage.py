"""Shard lineage: a child shard is read only after its parent is finished (closed and drained).

DynamoDB Local rarely splits shards, so the stream is a scripted fake here; the control table
(checkpoints, lease) is the real one on DynamoDB Local.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib import db, keys
from streams.functions import FunctionRegistry
from streams.local_backend import LocalMappingBackend
from streams.runtime import LocalRuntime
from streams.store import ControlStore
from tests.helpers.echo import EchoHandler
from tests.helpers.streams import FAST, wait_until

pytestmark = pytest.mark.timeout(60)

ARN = "arn:aws:dynamodb:local:000000000000:table/x-events-20260101/stream/2026-01-01T00:00:00.000"


class FakeStreams:
    """Parent shard (closed, 5 records) and child shard (open, 3 records)."""

    def __init__(self) -> None:
        self.shards = {
            "parent": [f"{i:021d}" for i in range(1, 6)],
            "child": [f"{i:021d}" for i in range(10, 13)],
        }
        self.closed = {"parent"}
        self.calls: list[tuple[str, int, bool]] = []  # (shard, records returned, has next iterator)

    def describe_stream(self, StreamArn: str, **_: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [
            {"ShardId": "child", "ParentShardId": "parent",  # listed first on purpose
             "SequenceNumberRange": {"StartingSequenceNumber": "000000000000000000010"}},
            {"ShardId": "parent", "SequenceNumberRange": {"StartingSequenceNumber": "000000000000000000001",
                                                          "EndingSequenceNumber": "000000000000000000005"}},
        ]}}

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str,
                           SequenceNumber: str | None = None) -> dict[str, Any]:
        pos = 0 if ShardIteratorType == "TRIM_HORIZON" else int(SequenceNumber or 0)
        return {"ShardIterator": f"{ShardId}|{pos}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard, pos = ShardIterator.split("|")
        seqs = [s for s in self.shards[shard] if int(s) > int(pos)][:2]  # small pages
        last = int(seqs[-1]) if seqs else int(pos)
        done = shard in self.closed and (not seqs or seqs[-1] == self.shards[shard][-1])
        records = [{"eventID": s, "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                    "awsRegion": "local", "dynamodb": {
                        "ApproximateCreationDateTime": datetime.now(UTC), "Keys": {"pk": {"S": shard + s}},
                        "NewImage": {"pk": {"S": shard + s}}, "SequenceNumber": s, "SizeBytes": 10,
                        "StreamViewType": "NEW_IMAGE"}} for s in seqs]
        self.calls.append((shard, len(records), not done))
        return {"Records": records, **({} if done else {"NextShardIterator": f"{shard}|{last}"})}


class _Pages:
    def paginate(self, **_: Any) -> list[dict[str, Any]]:
        return [{"TableNames": ["x-events-20260101"]}]


class FakeDdb:
    def get_paginator(self, operation: str) -> _Pages:
        assert operation == "list_tables"
        return _Pages()

    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"LatestStreamArn": ARN}}


def test_child_shard_waits_for_parent(prefix: str) -> None:
    store = ControlStore(db.get_client(), keys.control_table_name(prefix))
    fake = FakeStreams()
    echo = EchoHandler()
    reg = FunctionRegistry()
    reg.register("echo", echo)
    backend = LocalMappingBackend(store, FakeDdb(), fake)
    m = backend.create(event_source_arn=ARN, function_name="echo", batch_size=2)
    with LocalRuntime(store, FakeDdb(), fake, FAST, reg):
        wait_until(lambda: len(echo.handled) == 8, message="both shards delivered")
    assert echo.handled_keys == [f"parent{i:021d}" for i in range(1, 6)] + [f"child{i:021d}" for i in range(10, 13)]
    first_child = next(i for i, c in enumerate(fake.calls) if c[0] == "child")
    parent_end = next(i for i, c in enumerate(fake.calls) if c[0] == "parent" and not c[2])
    assert parent_end < first_child  # the child was not even read before the parent closed
    cps = {c.shard_id: c for c in store.checkpoints(m.uuid)}
    assert cps["parent"].finished and cps["parent"].sequence_number == "000000000000000000005"
    assert not cps["child"].finished and cps["child"].sequence_number == "000000000000000000012"
    assert cps["child"].parent_shard_id == "parent"
