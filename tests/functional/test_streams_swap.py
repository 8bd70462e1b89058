"""Blue/green retarget keeps the stream position: nothing skipped, nothing re-delivered."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import tables
from streams.backend import SwapFailed, swap, swap_verified
from streams.functions import FunctionRegistry
from streams.mapping_settings import PROJECTOR_MAPPING
from streams.poller import HostCrash
from streams.store import Checkpoint
from tests.helpers.echo import EchoHandler
from tests.helpers.streams import day_table, local_parts, put_events, wait_until

pytestmark = pytest.mark.timeout(90)

_example_days = itertools.count()


def _registry() -> tuple[FunctionRegistry, EchoHandler, EchoHandler]:
    reg, blue, green = FunctionRegistry(), EchoHandler(), EchoHandler()
    reg.register("projector", blue, colour="blue")
    reg.register("projector", green, colour="green")
    return reg, blue, green


def _writer(ddb: Any, table: str, keys: list[str], pause: float) -> threading.Thread:
    def run() -> None:
        for k in keys:
            put_events(ddb, table, [k])
            time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_swap_under_continuous_writes_loses_and_repeats_nothing(prefix: str, ddb: Any) -> None:
    reg, blue, green = _registry()
    store, backend, runtime, src = local_parts(prefix, functions=reg)
    m = backend.create(event_source_arn=src, function_name="projector:blue", batch_size=7,
                       function_response_types=["ReportBatchItemFailures"], bisect_batch_on_function_error=True,
                       maximum_retry_attempts=3)
    keys = [f"e{i:04d}" for i in range(120)]
    with runtime():
        writer = _writer(ddb, day_table(prefix), keys, 0.005)
        wait_until(lambda: len(blue.handled) >= 20, message="blue has started")
        before_enable: dict[str, Any] = {}
        orig_update = backend.update

        def spy(uuid: str, **kw: Any):  # type: ignore[no-untyped-def]
            if kw.get("enabled") is True:  # the position the mapping resumes from
                before_enable["cps"] = {c.shard_id: c.sequence_number for c in store.checkpoints(uuid)}
                before_enable["blue"] = list(blue.handled_sequence_numbers)
            return orig_update(uuid, **kw)

        backend.update = spy  # type: ignore[method-assign]
        swapped = swap(backend, m.uuid, to="green", timeout=20)
        assert swapped.function_name == "projector:green" and swapped.state == "Enabled"
        writer.join()
        wait_until(lambda: len(blue.handled) + len(green.handled) >= len(keys), message="all delivered")
        time.sleep(0.3)
    assert 0 < len(blue.handled) < len(keys) and green.handled, "the swap happened mid-stream"
    assert blue.handled_keys + green.handled_keys == keys  # in order, nothing lost, nothing twice
    assert blue.handled_sequence_numbers == before_enable["blue"]  # blue got nothing after Disabled
    assert before_enable["cps"][next(iter(before_enable["cps"]))] is not None
    assert max(before_enable["cps"].values(), key=lambda s: int(s or 0)) == blue.handled_sequence_numbers[-1]


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batch_size=st.integers(min_value=1, max_value=9),
    swap_after=st.integers(min_value=0, max_value=25),
    crash_frac=st.one_of(st.none(), st.floats(min_value=0.0, max_value=0.99)),
)
def test_swap_and_crash_schedules_keep_position(prefix: str, ddb: Any, batch_size: int, swap_after: int,
                                                crash_frac: float | None) -> None:
    """Random batch sizes, swap moments and host crashes: every record is handled; a swap never
    re-delivers; only a crash re-delivers, and only the batch that was in flight."""
    keys = [f"h{i:03d}" for i in range(30)]
    crash_key = keys[int(crash_frac * swap_after)] if crash_frac is not None and swap_after else None
    day = date(2001, 1, 1) + timedelta(days=next(_example_days))  # a fresh day table per example
    tables.ensure_table(ddb, tables.events_table_spec(prefix, day))
    table = day_table(prefix, day)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    reg, blue, green = _registry()
    crashed: list[bool] = []
    if crash_key is not None:
        def crash(event: dict[str, Any]) -> bool:  # the host dies the first time it sees crash_key
            if not crashed and any(r["dynamodb"]["Keys"]["pk"]["S"] == crash_key for r in event["Records"]):
                crashed.append(True)
                raise HostCrash("crash")
            return False
        blue.crash = crash
    store, backend, runtime, _ = local_parts(prefix, functions=reg)
    m = backend.create(event_source_arn=arn, function_name="projector:blue", batch_size=batch_size)
    put_events(ddb, table, keys[:swap_after])
    rt = runtime().start()
    try:
        if crash_key is not None:
            wait_until(lambda: rt.pollers[m.uuid].crashed is not None, message="crash")
            rt.stop()
            rt = runtime().start()  # restart (after the dead runtime's lease expires)
        wait_until(lambda: len(set(blue.handled_keys)) >= swap_after, message="blue caught up")
        swap(backend, m.uuid, to="green", timeout=20)
        put_events(ddb, table, keys[swap_after:])
        wait_until(lambda: len(set(blue.handled_keys) | set(green.handled_keys)) >= len(keys), message="all")
        time.sleep(0.2)
    finally:
        rt.stop()
    assert set(blue.handled_keys) | set(green.handled_keys) == set(keys)
    assert green.handled_keys == keys[swap_after:]  # green starts exactly after blue's last record
    deduped = list(dict.fromkeys(blue.handled_keys))
    assert deduped == keys[:swap_after]
    repeats = len(blue.handled_keys) - len(deduped)
    if crash_key is None:
        assert repeats == 0
    else:
        assert repeats <= batch_size  # at most the batch in flight at the crash
    backend.delete(m.uuid)


def test_verified_swap_under_continuous_ingest_reports_and_checks_checkpoints(prefix: str, ddb: Any) -> None:
    reg, blue, green = _registry()
    store, backend, runtime, src = local_parts(prefix, functions=reg)
    m = backend.create(event_source_arn=src, function_name="projector:blue",
                       **PROJECTOR_MAPPING.create_args(batch_size=5, maximum_batching_window_in_seconds=0))
    keys = [f"v{i:04d}" for i in range(100)]
    said: list[str] = []
    with runtime():
        writer = _writer(ddb, day_table(prefix), keys, 0.005)
        wait_until(lambda: len(blue.handled) >= 10, message="blue has started")
        report = swap_verified(backend, m.uuid, to="green", timeout=20, say=said.append)
        writer.join()
        wait_until(lambda: len(blue.handled_keys) + len(green.handled_keys) >= len(keys), message="all delivered")
        time.sleep(0.3)
    assert report.error is None and not report.rolled_back
    assert report.mapping is not None and report.mapping.function_name == "projector:green"
    [seq] = [v for k, v in report.before["checkpoints"].items() if f"table/{day_table(prefix)}/" in k]
    assert seq == blue.handled_sequence_numbers[-1]  # checkpointed exactly past blue's last batch
    n = len(report.before["checkpoints"])  # today's and tomorrow's table (one shard each)
    assert n >= 2 and report.verified[0] == f"{n} shard checkpoint(s) unchanged"
    assert said[0].endswith("disable requested") and said[-1].split(": ", 1)[1].startswith("verified")
    assert 0 < len(blue.handled_keys) < len(keys) and green.handled_keys
    assert blue.handled_keys + green.handled_keys == keys  # nothing lost, nothing twice, in order


def test_position_reset_during_swap_is_detected_and_rolled_back(prefix: str, ddb: Any) -> None:
    """A retarget that loses the position (as re-creating a mapping would) is caught while still
    disabled; the checkpoints are put back, blue is enabled again and nothing is re-delivered."""
    reg, blue, green = _registry()
    store, backend, runtime, src = local_parts(prefix, functions=reg)
    m = backend.create(event_source_arn=src, function_name="projector:blue",
                       **PROJECTOR_MAPPING.create_args(batch_size=5, maximum_batching_window_in_seconds=0))
    keys = [f"r{i:03d}" for i in range(40)]
    orig_update = backend.update

    def losing_update(uuid: str, **kw: Any):  # type: ignore[no-untyped-def]
        out = orig_update(uuid, **kw)
        if kw.get("function_name") == "projector:green":
            for cp in store.checkpoints(uuid):  # the position is reset to TRIM_HORIZON
                store.put_checkpoint(uuid, Checkpoint(cp.stream_arn, cp.shard_id, None), owner=None)
        return out

    backend.update = losing_update  # type: ignore[method-assign]
    with runtime():
        put_events(ddb, day_table(prefix), keys[:20])
        wait_until(lambda: len(blue.handled_keys) >= 20, message="blue caught up")
        with pytest.raises(SwapFailed, match="position moved while disabled") as err:
            swap_verified(backend, m.uuid, to="green", timeout=20)
        report = err.value.report
        assert report.rolled_back
        assert "rollback: shard checkpoints restored" in report.steps and report.steps[-1] == "rollback: Enabled"
        put_events(ddb, day_table(prefix), keys[20:])
        wait_until(lambda: len(blue.handled_keys) >= len(keys), message="all delivered")
        time.sleep(0.3)
    after = backend.get(m.uuid)
    assert after is not None and (after.function_name, after.state) == ("projector:blue", "Enabled")
    assert green.handled_keys == []
    assert blue.handled_keys == keys  # nothing re-delivered after the rollback, nothing lost
