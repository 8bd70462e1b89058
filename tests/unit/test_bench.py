"""``streamfold bench``: the report's shape, from one run of ``--quick`` (the smoke test; no speed is asserted,
ever)."""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.pages import PAGE_BUCKETS
from tooling import bench, spread
from tooling import ceilings as ceilings_module

QUICK = bench.Workload.quick()

SUMMARY_KEYS = {"append_wru_per_event", "projection_wru_per_event", "total_wru_per_event", "ingest_vs_raw",
                "lag_p99_ms", "replay_vs_scan", "replay_events_per_s", "replay_rss_mb", "query_p99_ms",
                # issue 17: the spread workload beside the concentrated one, the replay's write floor
                "projection_wru_per_event_spread", "projection_wru_per_event_spread_tracks", "live_events_per_s_spread",
                "naive_live_events_per_s_spread", "replay_writes_per_final_item",
                # past one writer: events/s at ParallelizationFactor 2 against 1, batches in sandbox processes
                "parallel_speedup_factor_2"}


def test_percentiles() -> None:
    assert bench._pct([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bench._pct([5.0], 95) == 5.0
    assert math.isnan(bench._pct([], 50))


def test_events_are_typical_segment_track_calls() -> None:

    f = bench.EventFactory(4, 3)
    events = [f.track(datetime(2026, 1, 1, tzinfo=UTC)) for _ in range(200)]
    mean = sum(bench._event_bytes(e) for e in events) / len(events)
    assert 250 <= mean <= 350
    assert len({e["messageId"] for e in events}) == 200


def test_spread_events_are_the_membership_pattern() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    identity = spread.identity_events(3, now)
    assert [e["type"] for e in identity] == ["identify", "group"] * 3
    assert {e["groupId"] for e in identity if e["type"] == "group"} == {spread.account_id(a) for a in range(3)}
    tracks = spread.track_events(300, 3, now)
    assert all(e["type"] == "track" and "groupId" not in e["context"] for e in tracks)  # attributed by membership
    assert {e["userId"] for e in tracks} == {spread.user_id(a) for a in range(3)}
    assert tracks[0]["timestamp"] < tracks[-1]["timestamp"] <= "2026-01-01T12:00:00.000Z"
    assert 200 <= sum(bench._event_bytes(e) for e in tracks) / len(tracks) <= 350


def test_a_step_holds_when_its_p99_with_lost_probes_is_within_the_goal() -> None:
    assert spread._p99_holds([1.0] * 10, 0, 15.0)
    assert not spread._p99_holds([1.0] * 10, 1, 15.0)  # a lost probe is infinitely late
    assert not spread._p99_holds([1.0] * 99 + [20.0], 0, 15.0)
    assert spread._p99_holds([1.0] * 999 + [20.0] * 9, 0, 15.0)  # 9 late of 1,008: p99 still on time
    assert not spread._p99_holds([1.0] * 999 + [20.0] * 11, 0, 15.0)
    assert not spread._p99_holds([], 0, 15.0)
    for late in range(12):  # the count rule agrees with the interpolated percentile
        values = [1.0] * 1000 + [20.0] * late
        assert spread._p99_holds(values, 0, 15.0) == (bench._pct(sorted(values), 99) <= 15.0)


def test_markdown_of_a_report_from_before_the_spread_phases() -> None:
    # The full run of 2026-12-06, the last before the spread phases (docs/bench-latest.json is newer now).
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "bench-2026-12-06.json"
    report = json.loads(fixture.read_text())
    doc = bench.markdown(report)
    assert "spread" not in doc.lower() and "| replay events/s |" in doc


def test_register_adds_the_bench_command() -> None:
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--quick", "--out", "x.json"])
    assert args.quick and args.out == "x.json" and args.func is bench.cmd_bench


@pytest.mark.timeout(300)  # a hang guard with margin, not a speed: the quick run takes well under two minutes
def test_quick_bench_report_shape(ddb_endpoint: str, tmp_path: Path) -> None:
    report = bench.run(quick=True, endpoint=ddb_endpoint)
    assert report["quick"] is True and report["workload"]["lag_probes"] == QUICK.lag_probes
    assert set(report) >= {"date", "machine", "workload", "ingest", "projector", "redelivery", "lag", "seconds"}
    by_size = report["ingest"]["by_batch_size"]
    assert set(by_size) == {"1", "10", "100"}
    assert report["ingest"]["baseline_wcu_per_event"] == 1.0
    # Packing is what makes ingest cheap: bigger requests, fewer units per event.
    assert by_size["100"]["wcu_per_event"] < by_size["10"]["wcu_per_event"] < by_size["1"]["wcu_per_event"]
    assert report["ingest"]["http"]["errors"] == 0
    assert report["ingest"]["http"]["events_stored"] == report["ingest"]["http"]["events_sent"]
    for name, usage in (("live", QUICK.live_events), ("live_small_batches", QUICK.live_events),
                        ("backfill", QUICK.backfill_events)):
        r = report["projector"][name]
        assert r["events"] == usage + r["setup_events"]
        assert 0 < r["wcu_per_event"] and r["baseline_wcu_per_event"] == 3.0
        assert r["ratio_vs_baseline"] == pytest.approx(r["wcu_per_event"] / r["baseline_wcu_per_event"], rel=1e-3)
    one = report["projector"]["one_record_invocations"]  # usage alone, after the tenant's identify/group
    assert one["events"] == QUICK.one_record_events and one["invocations"] == one["records"]
    goals = ceilings_module.verdicts(report)
    assert goals[0] == "| line | goal | figure | verdict |" and all(row.count("|") == 5 for row in goals)
    assert sum("≤ 0.5" in row or "≤ 1.0×" in row or "≤ 1,000 ms" in row for row in goals) == 5
    assert any("spread" in row and "≥ 1,000 events/s" in row for row in goals)
    assert any("writes per final item" in row for row in goals)
    for r in report["redelivery"].values():
        # The live page mode: a re-delivered batch rewrites its own delta pages and their buckets' counters (one
        # page and one META item per bucket it touches), nothing else; the direct mode wrote nothing at all.
        assert r["failures"] == 0 and r["records"] > 0 and r["writes"] <= 2 * PAGE_BUCKETS
    assert report["lag"]["probes"] == QUICK.lag_probes and report["lag"]["timeouts"] == 0
    text = bench.table(report)
    assert "WCU/event" in text and "p95" in text
    doc = bench.markdown(report)  # the generated part of docs/PERFORMANCE.md: the goal table and a line per phase
    assert goals[0] in doc and f"{report['ceilings']['replay']['replay_events_per_s']:,}" in doc
    assert sum(line.startswith("- ") for line in doc.splitlines()) >= 8
    # The headline numbers: exactly the keys, every one a number measured in this run.
    assert set(report["summary"]) == SUMMARY_KEYS
    assert all(isinstance(v, float | int) and not math.isnan(v) for v in report["summary"].values())
    ceilings = report["ceilings"]
    assert ceilings["ingest"]["failures"] == 0 and ceilings["ingest"]["events"] == QUICK.ceiling_events
    assert ceilings["replay"]["events"] >= QUICK.replay_events and ceilings["replay"]["replay_rss_mb"] > 0
    assert ceilings["replay"]["query"]["samples"] > 0
    assert ceilings["eventsourcing"]["counted"] == ceilings["eventsourcing"]["events"]
    curve = report["projector"]["cost_curve"]
    assert [p["events_per_account_day"] for p in curve] == list(QUICK.curve_sizes)
    assert all(p["wcu_per_event"] > 0 for p in curve)
    for design in ("streamfold", "naive"):
        load = report["load"][design]
        assert load["requests"] > 0 and load["probes_seen"] + load["probes_lost"] == load["requests"]
    assert report["load"]["streamfold"]["probes_lost"] == 0
    # The spread workload (issue 17): identity and tracks measured apart, both parts in the combined figure.
    sp = report["projector"]["spread"]
    assert sp["accounts"] == QUICK.spread_accounts and sp["tracks"]["events"] == QUICK.spread_tracks
    assert sp["identity"]["events"] == 2 * QUICK.spread_accounts
    assert sp["events"] == sp["identity"]["events"] + sp["tracks"]["events"]
    assert sp["write_units"] == sp["identity"]["write_units"] + sp["tracks"]["write_units"] > 0
    assert sp["baseline_wcu_per_event"] == 3.0 and sp["item_bytes"]
    assert report["summary"]["projection_wru_per_event_spread"] == sp["wcu_per_event"]
    for design in ("streamfold", "naive"):
        k = report["keep_up"][design]
        assert k["accounts"] == QUICK.keepup_accounts and k["failures"] == 0 and k["steps"]
        assert k["mapping"]["batch_size"] == 100  # the projector mapping's own settings
        for step in k["steps"]:
            assert step["requests"] > 0 and step["probes_seen"] + step["probes_lost"] == step["requests"]
            # where the step's cores went: the machine's busy cores cover the projector's runtime and the API
            cores = step["cores"]
            assert {"machine", "runtime", "api", "bench"} <= set(cores) and cores["runtime"] > 0
            assert cores["machine"] >= cores["runtime"] + cores["api"] - 0.1
            assert 0 <= step["watcher_busy"][design] <= 1.05
        assert k["highest_sustained_events_per_s"] in {0.0} | {st["achieved_events_per_s"] for st in k["steps"]}
    assert report["keep_up"]["naive"]["write_units_per_event"] > 0
    assert report["summary"]["live_events_per_s_spread"] == \
        report["keep_up"]["streamfold"]["highest_sustained_events_per_s"]
    replay = report["ceilings"]["replay"]
    assert replay["final_items"] > 0 and replay["write_floor_s"] > 0
    # the floor on the view's own schema (its listing indexes and stream), from the rebuilt view's own items
    assert replay["view_batch_write_items_per_s"] > 0 and replay["view_write_floor_s"] > 0
    assert replay["replay_writes_per_final_item"] == pytest.approx(replay["replay_writes"] / replay["final_items"],
                                                                   abs=1e-3)
    # Past one writer: every factor ran its batches concurrently (sandbox processes) and counted every event once.
    par = report["parallel"]
    assert set(par["by_factor"]) == {str(f) for f in QUICK.parallel_factors} and par["processes"] is True
    for f, v in par["by_factor"].items():
        assert v["exact"], v["runs"][0]["problems"]
        assert v["max_concurrent"] >= min(int(f), 2) and v["runs"][0]["usage_events_stored"] == QUICK.parallel_events
    assert any("past one writer" in row for row in goals) and "Past one writer" in doc
    # (a rebuild runs at most one worker per partition: the quick replay is one partition)
    assert 1 <= replay["replay_workers"] <= QUICK.replay_workers and replay["replay_rss_by_process_mb"]
    # Where the run's time went: a duration per announced phase, DynamoDB Local's start and stop around them.
    phases = report["phase_seconds"]
    assert list(phases)[0] == "start" and list(phases)[-1] == "stop" and len(phases) == bench.PHASES + 2
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= report["seconds"] + 1
    assert "by phase: " in text
    png = tmp_path / "bench.png"
    ceilings_module.chart(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
