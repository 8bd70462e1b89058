"""``ParallelizationFactor`` in the local ESM runtime, against DynamoDB Local's real streams.

Records of one item stay in order in one lane; lanes run concurrently; the shard checkpoint moves only over
records done in every lane; a failed batch holds the shard while it retries, bisects and dead-letters; a crash
re-delivers everything after the checkpoint; a disable (a swap) leaves nothing done past the checkpoint.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib import db
from streams.functions import FunctionRegistry
from streams.poller import HostCrash, lane_of
from tests.helpers.echo import EchoHandler
from tests.helpers.streams import day_table, fast_options, local_parts, put_events, wait_until

pytestmark = pytest.mark.timeout(90)


def _setup(prefix: str, handler: Any, **opts: Any):  # type: ignore[no-untyped-def]
    reg = FunctionRegistry()
    reg.register("echo", handler, colour="blue")
    store, backend, runtime, src = local_parts(prefix, fast_options(**opts), reg)
    return reg, store, backend, runtime, src


def _lane(key: str, factor: int) -> int:
    return lane_of({"dynamodb": {"Keys": {"pk": {"S": key}}}}, factor)  # type: ignore[typeddict-item]


def _keys_in_lanes(factor: int, per_lane: int, tag: str) -> list[list[str]]:
    """``per_lane`` keys for each lane (the hash decides; the test picks keys that land where it needs them)."""
    lanes: list[list[str]] = [[] for _ in range(factor)]
    i = 0
    while any(len(k) < per_lane for k in lanes):
        key = f"{tag}{i:03d}"
        if len(lanes[_lane(key, factor)]) < per_lane:
            lanes[_lane(key, factor)].append(key)
        i += 1
    return lanes


def _checkpoint(store: Any, uuid: str, table: str) -> str | None:
    cps = [c for c in store.checkpoints(uuid) if f":table/{table}/" in c.stream_arn]
    return cps[0].sequence_number if cps else None


class Overlap:
    """An ``EchoHandler`` crash predicate that never crashes: it holds each invocation a while and records
    when it started, its lane and how many ran at once."""

    def __init__(self, factor: int, hold: float = 0.2) -> None:
        self.factor, self.hold = factor, hold
        self.lock = threading.Lock()
        self.running = self.max_running = 0
        self.starts: list[tuple[float, int]] = []

    def __call__(self, event: dict[str, Any]) -> bool:
        lanes = {lane_of(r, self.factor) for r in event["Records"]}
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.starts.append((time.monotonic(), lanes.pop() if len(lanes) == 1 else -1))
        time.sleep(self.hold)
        with self.lock:
            self.running -= 1
        return False


def test_concurrent_batches_keep_each_items_records_in_order(prefix: str, ddb: Any) -> None:
    factor = 4
    overlap = Overlap(factor)
    echo = EchoHandler(crash=overlap)
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=3, parallelization_factor=factor)
    assert m.parallelization_factor == factor
    table = day_table(prefix)
    keys = [k for lane in _keys_in_lanes(factor, 3, "k") for k in lane]
    for rnd in range(3):  # INSERT, then two MODIFYs of every item, interleaved across items
        put_events(ddb, table, keys, v=rnd)
    with runtime():
        wait_until(lambda: len(echo.handled) >= 3 * len(keys), message="every record handled")
        last = max((s for inv in echo.invocations for s in inv), key=int)
        wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint at the last record")
    seqs = echo.handled_sequence_numbers
    assert len(seqs) == len(set(seqs)) == 3 * len(keys)  # each record once
    per_item: dict[str, list[int]] = {}
    for r in echo.handled:
        per_item.setdefault(r.dynamodb.keys["pk"], []).append(int(r.dynamodb.sequence_number))  # type: ignore[union-attr,index,arg-type]
    assert all(v == sorted(v) and len(v) == 3 for v in per_item.values())  # an item's records in order
    assert all(lane != -1 for _, lane in overlap.starts)  # a batch holds one lane's records only
    assert {lane for _, lane in overlap.starts} == set(range(factor))
    assert overlap.max_running >= 2  # lanes ran at the same time
    assert all(len(inv) <= 3 for inv in echo.invocations)


def test_checkpoint_waits_for_an_older_batch_still_running(prefix: str, ddb: Any) -> None:
    factor = 2
    [slow], fast = _keys_in_lanes(factor, 1, "a")[0], _keys_in_lanes(factor, 5, "b")[1]
    gate = threading.Event()
    echo = EchoHandler(crash=lambda ev: any(r["dynamodb"]["Keys"]["pk"]["S"] == slow for r in ev["Records"])
                       and not gate.wait(20))  # the batch holding the oldest record waits for the gate
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=2, parallelization_factor=factor)
    table = day_table(prefix)
    put_events(ddb, table, [slow, *fast])
    with runtime() as rt:
        wait_until(lambda: set(echo.handled_keys) == set(fast), message="the other lane's records handled")
        time.sleep(0.3)
        assert _checkpoint(store, m.uuid, table) is None  # the oldest record is still running
        [lag] = [x for x in rt.lag(m.uuid) if f":table/{table}/" in x.stream_arn]
        assert lag.records_behind == 1
        gate.set()
        last = max((s for inv in echo.invocations for s in inv), key=int)
        wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint past everything")
    assert sorted(echo.handled_keys) == sorted([slow, *fast])


def test_a_failed_batch_holds_the_shard_while_it_bisects_and_dead_letters(prefix: str, ddb: Any) -> None:
    factor = 2
    lane0, lane1 = _keys_in_lanes(factor, 8, "p")
    lane0 = lane0[:4]  # one batch in lane 0, two in lane 1
    poison = lane0[1]
    overlap = Overlap(factor, hold=0.0)
    starts_with_poison: list[float] = []

    def crash(event: dict[str, Any]) -> bool:
        overlap(event)
        if any(r["dynamodb"]["Keys"]["pk"]["S"] == poison for r in event["Records"]):
            starts_with_poison.append(time.monotonic())
            return True
        if lane_of(event["Records"][0], factor) == 1:
            time.sleep(0.3)  # the other lane's batches are slow: one is running when the poison fails
        return False

    echo = EchoHandler(crash=crash)
    _, store, backend, runtime, src = _setup(prefix, echo, retry_base_delay=0.4, retry_max_delay=0.4)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=4, parallelization_factor=factor,
                       bisect_batch_on_function_error=True, maximum_retry_attempts=1)
    table = day_table(prefix)
    put_events(ddb, table, [k for pair in zip(lane0, lane1[:4], strict=True) for k in pair] + lane1[4:])
    with runtime():
        wait_until(lambda: store.dead_letters(m.uuid), message="dead letter")
        wait_until(lambda: len(echo.handled) == 11, message="the eleven good records")
        last = max((s for inv in echo.invocations for s in inv), key=int)
        wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint at the end")
    [dead] = store.dead_letters(m.uuid)
    assert dead.condition == "RetryAttemptsExhausted"
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in dead.records or []] == [poison]
    assert sorted(echo.handled_keys) == sorted(set(lane0 + lane1) - {poison})  # each good record once
    # Lane 0: [4] fails -> [2] fails -> [1] ok, [poison] fails, retried 0.4 s later, dead-lettered -> [2] ok.
    lane0_sizes = [len(inv) for inv, (_, lane) in zip(echo.invocations, overlap.starts, strict=True) if lane == 0]
    assert lane0_sizes == [4, 2, 1, 1, 1, 2]
    # While lane 0's failure was unresolved, lane 1 started nothing: its second batch came after lane 0's last.
    lane0_last = max(t for t, lane in overlap.starts if lane == 0)
    lane1_starts = [t for t, lane in overlap.starts if lane == 1]
    assert len(lane1_starts) == 2
    assert lane1_starts[0] < starts_with_poison[-1] < lane0_last < lane1_starts[1]


def test_host_crash_among_concurrent_batches_redelivers_only_after_the_checkpoint(prefix: str, ddb: Any) -> None:
    factor = 3
    calls = {"n": 0}
    lock = threading.Lock()

    def crash(event: dict[str, Any]) -> bool:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        time.sleep(0.05 * (n % 3))
        if n == 4:
            raise HostCrash("host died with batches in flight")
        return False

    crashing = EchoHandler(crash=crash)
    reg, store, backend, runtime, src = _setup(prefix, crashing)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=2, parallelization_factor=factor)
    table = day_table(prefix)
    keys = [k for lane in _keys_in_lanes(factor, 6, "c") for k in lane]
    put_events(ddb, table, keys)
    rt = runtime().start()
    wait_until(lambda: rt.pollers.get(m.uuid) is not None and rt.pollers[m.uuid].crashed is not None,
               message="simulated crash")
    rt.stop()
    time.sleep(0.5)  # batches of the dead host still running end (their results are never checkpointed)
    checkpoint = _checkpoint(store, m.uuid, table)
    done_before = set(crashing.handled_sequence_numbers)
    restarted = EchoHandler()
    reg.register("echo", restarted, colour="blue")
    with runtime():  # takes over once the dead runtime's lease expires
        wait_until(lambda: len(done_before | set(restarted.handled_sequence_numbers)) >= len(keys),
                   message="everything handled at least once")
        last = max((s for inv in crashing.invocations + restarted.invocations for s in inv), key=int)
        wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint at the end")
    again = restarted.handled_sequence_numbers
    assert len(again) == len(set(again))
    floor = int(checkpoint or 0)
    assert all(int(s) > floor for s in again)  # nothing at or before the checkpoint is delivered again ...
    all_seqs = {s for inv in crashing.invocations + restarted.invocations for s in inv}
    assert {s for s in all_seqs if int(s) > floor} <= set(again)  # ... and everything after it is
    assert {s for s in all_seqs if int(s) <= floor} <= done_before  # what the checkpoint passed was handled


def test_disable_leaves_nothing_done_past_the_checkpoint(prefix: str, ddb: Any) -> None:
    factor = 3
    lanes = _keys_in_lanes(factor, 8, "d")
    overlap = Overlap(factor, hold=0.0)

    def crash(event: dict[str, Any]) -> bool:
        overlap(event)
        time.sleep(0.05 + 0.15 * lane_of(event["Records"][0], factor))  # the lanes run at different speeds
        return False

    echo = EchoHandler(crash=crash)
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=2, parallelization_factor=factor)
    table = day_table(prefix)
    keys = [k for group in zip(*lanes, strict=True) for k in group]
    put_events(ddb, table, keys)
    with runtime():
        wait_until(lambda: len(echo.handled) >= 6, message="the lanes have started")
        backend.update(m.uuid, enabled=False)
        backend.wait_for_state(m.uuid, "Disabled", timeout=20)
        handled = echo.handled_sequence_numbers
        checkpoint = _checkpoint(store, m.uuid, table)
        assert checkpoint is not None and handled
        # The checkpoint lies exactly past every record handled: those up to it, none after it.
        assert max(handled, key=int) == checkpoint
        all_seqs = sorted({s for inv in echo.invocations for s in inv}, key=int)
        assert set(handled) == {s for s in all_seqs if int(s) <= int(checkpoint)}
        time.sleep(0.3)
        assert echo.handled_sequence_numbers == handled  # nothing runs while disabled
        backend.update(m.uuid, enabled=True)
        wait_until(lambda: len(echo.handled) >= len(keys), message="the rest after the enable")
        time.sleep(0.3)
    seqs = echo.handled_sequence_numbers
    assert len(seqs) == len(set(seqs)) == len(keys)  # nothing skipped, nothing repeated
    assert sorted(echo.handled_keys) == sorted(keys)


def test_record_age_exceeded_per_lane(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo, clock=lambda: time.time() + 7200)
    m = backend.create(event_source_arn=src, function_name="echo:blue", maximum_record_age_in_seconds=3600,
                       batch_size=3, parallelization_factor=3)
    table = day_table(prefix)
    keys = [k for lane in _keys_in_lanes(3, 2, "x") for k in lane]
    put_events(ddb, table, keys)
    with runtime():
        last = wait_until(lambda: max((r["dynamodb"]["SequenceNumber"] for d in store.dead_letters(m.uuid)
                                       for r in d.records or []), key=int, default=None)
                          if sum(len(d.records or []) for d in store.dead_letters(m.uuid)) == len(keys) else None,
                          message="every record dead-lettered")
        wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint past them")
    assert echo.invocations == []
    dead = store.dead_letters(m.uuid)
    assert all(d.condition == "RecordAgeExceeded" for d in dead) and len(dead) == 3  # one per lane
    for d in dead:
        assert len({lane_of(r, 3) for r in d.records or []}) == 1


def test_factor_updated_while_running(prefix: str, ddb: Any) -> None:
    echo = EchoHandler()
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=4)
    table = day_table(prefix)
    with runtime():
        put_events(ddb, table, [f"f{i:02d}" for i in range(6)])
        wait_until(lambda: len(echo.handled) == 6, message="factor 1")
        backend.update(m.uuid, parallelization_factor=4)
        wait_until(lambda: backend.get(m.uuid).parallelization_factor == 4  # type: ignore[union-attr]
                   and backend.get(m.uuid).state == "Enabled", message="updated")  # type: ignore[union-attr]
        put_events(ddb, table, [f"g{i:02d}" for i in range(12)])
        wait_until(lambda: len(echo.handled) == 18, message="factor 4")
    assert sorted(echo.handled_keys) == sorted([f"f{i:02d}" for i in range(6)] + [f"g{i:02d}" for i in range(12)])
    assert len(set(echo.handled_sequence_numbers)) == 18


def test_a_storage_error_does_not_deliver_again_what_finished_past_the_checkpoint(prefix: str, ddb: Any) -> None:
    factor = 2
    [slow], fast = _keys_in_lanes(factor, 1, "s")[0], _keys_in_lanes(factor, 4, "t")[1]
    gate = threading.Event()
    echo = EchoHandler(crash=lambda ev: any(r["dynamodb"]["Keys"]["pk"]["S"] == slow for r in ev["Records"])
                       and not gate.wait(20))
    _, store, backend, runtime, src = _setup(prefix, echo)
    m = backend.create(event_source_arn=src, function_name="echo:blue", batch_size=2, parallelization_factor=factor)
    table = day_table(prefix)
    put_events(ddb, table, [slow, *fast])
    active = threading.Event()

    def fail(model: Any, **_: Any) -> None:  # the control table is unreachable: every poller step fails
        if active.is_set():
            threading.Timer(0.3, gate.set).start()  # the oldest batch finishes while the poller recovers
            raise EndpointConnectionError(endpoint_url=f"fault injected into {model.name}")

    client = db.get_client()
    client.meta.events.register("before-call.dynamodb.GetItem", fail)
    try:
        with runtime() as rt:
            wait_until(lambda: set(echo.handled_keys) == set(fast), message="the other lane done, past the checkpoint")
            assert _checkpoint(store, m.uuid, table) is None
            active.set()
            wait_until(lambda: rt.pollers[m.uuid].errors > 0 and gate.is_set(), message="a failed step")
            active.clear()
            last = max((s for inv in echo.invocations for s in inv), key=int)
            wait_until(lambda: _checkpoint(store, m.uuid, table) == last, message="checkpoint at the end")
            time.sleep(0.3)
    finally:
        client.meta.events.unregister("before-call.dynamodb.GetItem", fail)
    seqs = echo.handled_sequence_numbers
    assert len(seqs) == len(set(seqs)) == 1 + len(fast)  # nothing delivered twice after the recovery
