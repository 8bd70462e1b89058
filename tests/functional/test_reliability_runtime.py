"""Nothing stuck: the local ESM runtime against storage faults, dead threads and stream retention.

Faults are injected into the *real* boto3 clients talking to DynamoDB Local through botocore's own
event hooks (``before-call`` raises what a dropped connection or a trimmed stream raises,
``after-call`` drops records as retention would); nothing of the storage is replaced.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib import db
from streams.functions import FunctionRegistry
from streams.poller import owner_is_dead, runtime_owner
from streams.store import ControlStore
from tests.helpers.echo import EchoHandler, raise_on_call
from tests.helpers.streams import day_table, fast_options, local_parts, put_events, wait_until

pytestmark = pytest.mark.timeout(90)


def _setup(prefix: str, handler: Any):  # type: ignore[no-untyped-def]
    reg = FunctionRegistry()
    reg.register("echo", handler, colour="blue")
    store, backend, runtime, src = local_parts(prefix, fast_options(), reg)
    return reg, store, backend, runtime, src


@contextmanager
def outage(operations: dict[Any, set[str]]) -> Iterator[dict[str, int]]:
    """While active, the given operations of the given real clients fail as if the endpoint were gone."""
    hits = {"n": 0}
    active = threading.Event()
    active.set()

    def fail(model: Any, params: Any, **_: Any) -> None:
        if active.is_set():
            hits["n"] += 1
            raise EndpointConnectionError(endpoint_url=f"fault injected into {model.name}")

    handlers = []
    for client, ops in operations.items():
        service = client.meta.service_model.service_name
        for op in ops:
            event = f"before-call.{service}.{op}"
            client.meta.events.register(event, fail)
            handlers.append((client, event))
    try:
        yield hits
    finally:
        active.clear()
        for client, event in handlers:
            client.meta.events.unregister(event, fail)


def test_storage_outage_backs_off_and_resumes_without_losing_records(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10)
    table = day_table(prefix)
    streams = db.get_streams_client()
    with runtime() as rt:
        put_events(ddb, table, [f"a{i:02d}" for i in range(5)])
        wait_until(lambda: len(echo.handled) == 5, message="first records")
        poller = rt.pollers[m.uuid]
        # Control table reads/writes and stream reads fail for 2 s; events keep arriving meanwhile.
        with outage({ddb: {"GetItem", "UpdateItem", "TransactWriteItems", "Query"},
                     streams: {"GetRecords", "GetShardIterator", "DescribeStream"}}) as hits:
            written = []
            for i in range(5):
                written += put_events(ddb, table, [f"b{i:02d}"])
                time.sleep(0.4)
        assert hits["n"] > 0 and poller.errors > 0 and poller.is_alive()
        t0 = time.monotonic()
        wait_until(lambda: len(echo.handled) >= 10, timeout=30, message="caught up after the outage")
        caught_up = time.monotonic() - t0
    assert sorted(set(echo.handled_keys)) == sorted([f"a{i:02d}" for i in range(5)] + written)
    assert rt.restarts == {}  # the same thread resumed; no restart needed
    assert caught_up < 10, caught_up
    assert store.dead_letters(m.uuid) == []


def test_supervisor_restarts_a_poller_thread_that_died(prefix: str, ddb: Any) -> None:
    # SystemExit is not an Exception: it escapes every handler, and the poller thread dies.
    echo = EchoHandler(crash=raise_on_call(1, SystemExit("the poller thread dies")))
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10)
    table = day_table(prefix)
    written = put_events(ddb, table, [f"k{i:02d}" for i in range(8)])
    with runtime() as rt:
        wait_until(lambda: len(echo.handled) == 8, timeout=30, message="records handled by the restarted poller")
        assert rt.restarts == {m.uuid: 1}
        assert rt.pollers[m.uuid].is_alive()
    assert echo.handled_keys == written
    assert len(echo.invocations) == 2  # the batch that killed the thread, once more after the restart


def test_position_trimmed_from_the_stream_becomes_a_dead_letter(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10)
    table = day_table(prefix)
    with runtime():
        put_events(ddb, table, ["k0", "k1", "k2"])
        wait_until(lambda: len(echo.handled) == 3, message="first records")
    done = echo.handled_sequence_numbers[-1]
    put_events(ddb, table, ["k3", "k4", "k5"])  # written while no runtime runs ...
    time.sleep(0.5)
    streams = db.get_streams_client()
    shard_records = _all_records(streams, m, store, table)
    horizon = shard_records[4]  # ... and k3, k4 expire from the stream (retention) before anyone reads them

    def refuse_old_position(params: Any, **_: Any) -> None:
        if params.get("ShardIteratorType") == "AFTER_SEQUENCE_NUMBER" and int(params["SequenceNumber"]) < int(horizon):
            raise streams.exceptions.TrimmedDataAccessException(
                {"Error": {"Code": "TrimmedDataAccessException", "Message": "beyond the trim horizon"}},
                "GetShardIterator")

    def drop_trimmed(parsed: Any, **_: Any) -> None:
        parsed["Records"] = [r for r in parsed.get("Records", [])
                             if int(r["dynamodb"]["SequenceNumber"]) > int(horizon)]

    streams.meta.events.register("before-parameter-build.dynamodbstreams.GetShardIterator", refuse_old_position)
    streams.meta.events.register("after-call.dynamodbstreams.GetRecords", drop_trimmed)
    try:
        with runtime():
            wait_until(lambda: len(echo.handled) == 4, message="the record still in the stream")
            dead = wait_until(lambda: store.dead_letters(m.uuid), message="dead letter for the trimmed records")
    finally:
        streams.meta.events.unregister("before-parameter-build.dynamodbstreams.GetShardIterator", refuse_old_position)
        streams.meta.events.unregister("after-call.dynamodbstreams.GetRecords", drop_trimmed)
    assert echo.handled_keys == ["k0", "k1", "k2", "k5"]
    [d] = dead
    info = d.info["DDBStreamBatchInfo"]
    assert d.condition == "RecordsTrimmed"
    assert info["startSequenceNumber"] == done and info["endSequenceNumber"] == shard_records[5]
    assert "streamfold replay" in d.info["responseContext"]["error"]


def _all_records(streams: Any, m: Any, store: ControlStore, table: str) -> list[str]:
    [cp] = [c for c in store.checkpoints(m.uuid) if f":table/{table}/" in c.stream_arn]
    it = streams.get_shard_iterator(StreamArn=cp.stream_arn, ShardId=cp.shard_id,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return [r["dynamodb"]["SequenceNumber"] for r in streams.get_records(ShardIterator=it)["Records"]]


def test_lease_of_a_dead_process_is_recognised() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(proc.stdout)
    me = runtime_owner()
    host_part = me.rsplit("-", 2)[0]
    assert owner_is_dead(f"{host_part}-{dead_pid}-abcdef12")
    assert not owner_is_dead(me)  # this process
    assert not owner_is_dead(f"runtime-other-host-{dead_pid}-abcdef12")  # another machine: wait for expiry
    assert not owner_is_dead("runtime-0123456789ab")  # old-style owner names
