"""The local ESM runtime against DynamoDB Local's real streams: order, failures, crash, positions."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import pytest

from chalicelib import tables
from streams.functions import FunctionRegistry
from streams.poller import HostCrash
from tests.helpers.echo import EchoHandler, raise_on_call
from tests.helpers.streams import day_table, fast_options, local_parts, put_events, wait_until

pytestmark = pytest.mark.timeout(60)


def _keys(n: int, tag: str = "k") -> list[str]:
    return [f"{tag}{i:03d}" for i in range(n)]


def _setup(prefix: str, handler: Any, **opts: Any):  # type: ignore[no-untyped-def]
    reg = FunctionRegistry()
    reg.register("echo", handler, colour="blue")
    store, backend, runtime, src = local_parts(prefix, fast_options(**opts) if opts else None, reg)
    return reg, store, backend, runtime, src


def _checkpoint(store: Any, uuid: str, table: str) -> str | None:
    cps = [c for c in store.checkpoints(uuid) if f":table/{table}/" in c.stream_arn]
    return cps[0].sequence_number if cps else None


def test_lambda_event_shape_and_order_per_shard(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10)
    assert m.state == "Enabled" and m.batch_size == 10
    table = day_table(prefix)
    ddb.put_item(TableName=table, Item={"pk": {"S": "bin"}, "blob": {"B": b"\x00\xffdata"},
                                        "nested": {"M": {"bs": {"BS": [b"\x01"]}}}})
    with runtime():
        written = put_events(ddb, table, _keys(25))
        wait_until(lambda: len(echo.handled) >= 26, message="all records handled")
    assert echo.handled_keys == ["bin", *written]
    assert all(len(inv) <= 10 for inv in echo.invocations)
    flat = [s for inv in echo.invocations for s in inv]
    assert flat == sorted(flat, key=int) and len(set(flat)) == len(flat)  # in order, once each
    rec = echo.events[0]["Records"][0]
    assert set(rec) >= {"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb",
                        "eventSourceARN"}
    assert rec["eventVersion"] == "1.1" and rec["eventSource"] == "aws:dynamodb" and rec["eventName"] == "INSERT"
    assert f":table/{table}/stream/" in rec["eventSourceARN"]
    assert isinstance(rec["dynamodb"]["ApproximateCreationDateTime"], float)
    assert abs(rec["dynamodb"]["ApproximateCreationDateTime"] - time.time()) < 120
    assert rec["dynamodb"]["NewImage"]["blob"] == {"B": base64.b64encode(b"\x00\xffdata").decode()}
    assert rec["dynamodb"]["NewImage"]["nested"]["M"]["bs"] == {"BS": ["AQ=="]}
    assert rec["dynamodb"]["Keys"] == {"pk": {"S": "bin"}}
    assert _checkpoint(store, m.uuid, table) == flat[-1]


def test_partial_failure_retries_from_lowest_failed_record(prefix: str, ddb: Any) -> None:
    seen: dict[str, int] = {}

    def fail_once(record: Any) -> bool:
        pk = record.dynamodb.keys["pk"]
        seen[pk] = seen.get(pk, 0) + 1
        return pk in ("k005", "k007") and seen[pk] == 1

    echo = EchoHandler(fail=fail_once)
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10,
                       function_response_types=["ReportBatchItemFailures"])
    table = day_table(prefix)
    put_events(ddb, table, _keys(10))  # written before the runtime starts: one batch of 10
    with runtime():
        wait_until(lambda: "k009" in echo.handled_keys and echo.handled_keys.count("k007") == 1,
                   message="retried records handled")
        wait_until(lambda: _checkpoint(store, m.uuid, table) == echo.invocations[-1][-1])
    first, second = echo.invocations[0], echo.invocations[1]
    assert len(first) == 10
    assert second == first[5:]  # retry starts at the lowest failed sequence number (k005)
    # records before the lowest failure are never re-delivered; the ones after it are (at least once)
    assert sum(inv.count(first[4]) for inv in echo.invocations) == 1
    assert echo.handled_keys[:5] == _keys(5)
    assert set(echo.handled_keys) == set(_keys(10))


def test_bisect_isolates_poison_record_into_dead_letter_store(prefix: str, ddb: Any) -> None:
    poison = "k005"
    echo = EchoHandler(crash=lambda ev: any(r["dynamodb"]["Keys"]["pk"]["S"] == poison for r in ev["Records"]))
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=8,
                       bisect_batch_on_function_error=True, maximum_retry_attempts=1)
    table = day_table(prefix)
    put_events(ddb, table, _keys(8))
    with runtime():
        wait_until(lambda: store.dead_letters(m.uuid), message="dead letter")
        wait_until(lambda: len(echo.handled) == 7, message="the seven good records")
    [dead] = store.dead_letters(m.uuid)
    assert dead.condition == "RetryAttemptsExhausted"
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in dead.records or []] == [poison]
    assert dead.info["DDBStreamBatchInfo"]["batchSize"] == 1
    assert sorted(echo.handled_keys) == sorted(set(_keys(8)) - {poison})
    sizes = [len(inv) for inv in echo.invocations]
    # 8 fails -> [0-3] ok, [4-7] fails -> [4,5] fails -> [4] ok, [5] fails, retried once, dead-lettered; [6,7] ok
    assert sizes == [8, 4, 4, 2, 1, 1, 1, 2]
    wait_until(lambda: _checkpoint(store, m.uuid, table) == echo.invocations[-1][-1] or
               _checkpoint(store, m.uuid, table) == dead.records[0]["dynamodb"]["SequenceNumber"])  # type: ignore[index]


def test_retries_exhausted_go_to_dead_letter_store_and_shard_moves_on(prefix: str, ddb: Any) -> None:
    echo = EchoHandler(crash=lambda ev: any(r["dynamodb"]["Keys"]["pk"]["S"] == "k002" for r in ev["Records"]))
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=5, maximum_retry_attempts=2)
    table = day_table(prefix)
    put_events(ddb, table, _keys(10))
    with runtime():
        wait_until(lambda: len(echo.handled) == 5, message="second batch handled")
    first = echo.invocations[0]
    assert echo.invocations[:3] == [first, first, first]  # 1 attempt + 2 retries
    assert echo.handled_keys == _keys(10)[5:]
    [dead] = store.dead_letters(m.uuid)
    assert [r["dynamodb"]["SequenceNumber"] for r in dead.records or []] == first
    assert dead.info["DDBStreamBatchInfo"]["startSequenceNumber"] == first[0]
    assert dead.info["DDBStreamBatchInfo"]["endSequenceNumber"] == first[-1]
    assert dead.info["requestContext"]["approximateInvokeCount"] == 3
    assert _checkpoint(store, m.uuid, table) == echo.invocations[-1][-1]


def test_crash_mid_batch_redelivers_that_batch_and_nothing_earlier(prefix: str, ddb: Any) -> None:
    crashing = EchoHandler(crash=raise_on_call(2, HostCrash("host died mid-batch")))
    reg, store, backend, runtime, src = _setup(prefix, crashing)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=5)
    table = day_table(prefix)
    put_events(ddb, table, _keys(12))
    rt = runtime().start()
    wait_until(lambda: rt.pollers.get(m.uuid) is not None and rt.pollers[m.uuid].crashed is not None,
               message="simulated crash")
    rt.stop()
    assert len(crashing.invocations) == 2
    first, in_flight = crashing.invocations
    assert _checkpoint(store, m.uuid, table) == first[-1]  # nothing of the crashed batch was checkpointed
    restarted = EchoHandler()
    reg.register("echo", restarted, colour="blue")
    with runtime():  # takes over once the dead runtime's lease expires
        wait_until(lambda: len(restarted.handled) == 7, message="rest handled after restart")
    assert restarted.invocations[0] == in_flight  # the crashed batch again (at least once) ...
    assert first[-1] not in {s for inv in restarted.invocations for s in inv}  # ... and nothing earlier
    assert restarted.handled_keys == _keys(12)[5:]


def test_latest_starts_after_creation_and_recreate_starts_over(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    table = day_table(prefix)
    put_events(ddb, table, _keys(3, "old"))
    wait_until(lambda: True)
    time.sleep(0.3)  # stream records appear shortly after the write
    m = backend.create(event_source_arn=src, function_name="echo:blue", starting_position="LATEST")
    with runtime():
        put_events(ddb, table, _keys(3, "new"))
        wait_until(lambda: len(echo.handled) >= 3, message="new records")
        time.sleep(0.3)
    assert echo.handled_keys == _keys(3, "new")
    backend.delete(m.uuid)
    assert backend.get(m.uuid) is None and store.checkpoints(m.uuid) == []
    again = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, again)
    backend.create(event_source_arn=src, function_name="echo:blue", starting_position="TRIM_HORIZON")
    with runtime():
        wait_until(lambda: len(again.handled) >= 6, message="everything from TRIM_HORIZON")
    assert again.handled_keys == _keys(3, "old") + _keys(3, "new")


def test_latest_on_empty_shard_then_writes(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    backend.create(event_source_arn=src, function_name="echo:blue", starting_position="LATEST")
    with runtime():
        put_events(ddb, day_table(prefix), _keys(4))
        wait_until(lambda: len(echo.handled) == 4, message="records after LATEST on an empty shard")
    assert echo.handled_keys == _keys(4)


def test_new_day_tables_are_discovered(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue")
    later = tables.utc_today().replace(year=tables.utc_today().year + 1)
    with runtime():
        put_events(ddb, day_table(prefix), ["today"])
        wait_until(lambda: echo.handled_keys == ["today"])
        tables.ensure_table(ddb, tables.events_table_spec(prefix, later))
        put_events(ddb, day_table(prefix, later), ["later-1", "later-2"])
        wait_until(lambda: len(echo.handled) == 3, message="record in a new day table")
    assert echo.handled_keys == ["today", "later-1", "later-2"]
    arns = {c.stream_arn for c in store.checkpoints(m.uuid)}
    assert any(f":table/{day_table(prefix, later)}/" in a for a in arns)
    assert all(f":table/{prefix}events-" in a for a in arns)


def test_record_age_exceeded_goes_to_dead_letter_store(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    # The runtime's clock says the records are two hours old.
    _, store, backend, runtime, src = _setup(prefix, echo, clock=lambda: time.time() + 7200)
    m = backend.create(event_source_arn=src, function_name="echo:blue", maximum_record_age_in_seconds=3600)
    put_events(ddb, day_table(prefix), _keys(3))
    with runtime():
        wait_until(lambda: store.dead_letters(m.uuid), message="expired records dead-lettered")
        wait_until(lambda: _checkpoint(store, m.uuid, day_table(prefix)) is not None)
    assert echo.invocations == []
    assert all(d.condition == "RecordAgeExceeded" for d in store.dead_letters(m.uuid))
    got = [r["dynamodb"]["Keys"]["pk"]["S"] for d in store.dead_letters(m.uuid) for r in d.records or []]
    assert got == _keys(3)


def test_missing_function_keeps_mapping_enabled_without_advancing(prefix: str, ddb: Any) -> None:
    reg = FunctionRegistry()
    reg.register("projector", "streams.no_such_module_yet:handler", colour="blue")
    store, backend, runtime, src = local_parts(prefix, None, reg)
    m = backend.create(event_source_arn=src, function_name="projector:blue")
    table = day_table(prefix)
    put_events(ddb, table, _keys(3))
    echo = EchoHandler()
    with runtime():
        time.sleep(1.0)
        assert backend.get(m.uuid).state == "Enabled"  # type: ignore[union-attr]
        assert _checkpoint(store, m.uuid, table) is None
        reg.register("projector", echo, colour="blue")  # the code arrives
        wait_until(lambda: len(echo.handled) == 3, message="handled once the function exists")
    assert echo.handled_keys == _keys(3)


def test_lag_reports_records_behind_and_iterator_age(prefix: str, ddb: Any) -> None:
    gate = threading.Event()
    echo = EchoHandler(crash=lambda ev: not gate.wait(10))
    _, store, backend, runtime, src = _setup(prefix, echo, clock=lambda: time.time() + 30)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=10)
    put_events(ddb, day_table(prefix), _keys(30))
    with runtime() as rt:
        wait_until(lambda: echo.invocations, message="first invocation")
        lag = wait_until(lambda: [x for x in rt.lag(m.uuid) if x.records_behind], message="lag")
        assert lag[0].records_behind >= 20
        assert lag[0].iterator_age_ms >= 30_000
        gate.set()
        wait_until(lambda: len(echo.handled) == 30)
        wait_until(lambda: all(x.records_behind == 0 for x in rt.lag(m.uuid)))
    persisted = [c for c in store.checkpoints(m.uuid) if c.sequence_number]
    assert persisted and persisted[0].records_behind == 0
