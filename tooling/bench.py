"""``streamfold bench``: what an event costs, measured against baselines in the same run.

The machine running the benchmark is usually shared and noisy, so every figure that matters
is a *ratio* against a baseline measured in the same process, on the same DynamoDB Local:

* ingest: write units per event (``ReturnConsumedCapacity``) of the packed, compressed chunks
  at batch sizes 1, 10 and 100, against one ``PutItem`` per event; events/s through the HTTP
  API with the real Segment SDK (bounded by count and time);
* projector: view write units per event for a live-like workload (today's events, stream
  batches of 100 records) and a 30-day backfill, against a per-event ``UpdateItem`` design
  (counter per account/day/event name, ``last_seen`` on the account and on the user);
* a re-delivered batch (should cost 0 write units);
* spread traffic (issue 17, ``tooling.spread``): accounts of one user each joined by ``group``, then tracks
  without ``groupId`` spread over the users: view write units per event of the identity and the track parts
  through ``handle_batch`` in 100-record batches, against the per-event baseline; and a stepped-rate keep-up
  phase through the HTTP API and the local runtime, streamfold and the naive design, lag p99 ≤ 15 s per step;
* local event source mapping lag at rest: from the ingest API's 200 OK to the account's SUMMARY
  item, one event at a time, on the lag-under-load stack once it is warm (before the load).

DynamoDB Local reports consumed capacity with DynamoDB's on-demand rules (1 write unit per
started KB of item, the larger of old and new image for an update), so unit counts match AWS;
times do not, and are reported for orientation only. See ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app import app
from chalicelib import db, keys, services, tables
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.settings import get_settings
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from streams.decode import read_stream
from streams.handler import get_writer, handle_batch
from streams.writer import ViewWriter
from tooling import ceilings, spread
from tooling.dynamodb_local import DynamoDBLocal
from tooling.parallel import ParallelWorkload, measure_parallel
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

__all__ = ["Workload", "baseline_projection_units", "markdown", "register", "run"]

FEATURES = ("Report Created", "Dashboard Viewed", "Export Downloaded", "Filter Applied", "Alert Configured",
            "Invite Sent", "Integration Connected", "Comment Added")


@dataclass(frozen=True)
class Workload:
    """Sizes of one run (``quick`` keeps the whole run under about two minutes)."""

    ingest_events: dict[int, int]  # batch size -> events sent at that size
    baseline_put_events: int
    http_events: int
    http_seconds: float
    accounts: int
    users_per_account: int
    live_events: int
    backfill_events: int
    baseline_events: int
    lag_probes: int
    ceiling_events: int = 2000  # ingest API vs raw BatchWriteItem
    ceiling_threads: int = 2
    replay_events: int = 5000  # generated straight into a day table, then replayed and queried
    replay_accounts: int = 200
    eventsourcing_events: int = 3000
    load_rate: float = 200.0  # sustained events/s through the HTTP API for the lag-under-load phase
    load_seconds: float = 10.0
    load_accounts: int = 1000
    curve_sizes: tuple[int, ...] = (1000, 4000)  # events per account-day for the cost curve
    one_record_events: int = 500  # usage events projected one 10-event record per invocation
    query_samples: int = 40  # requests per query of the query API (each account-list sort, each page call)
    # spread (issue 17): N accounts of one user each joined by `group`, then tracks without groupId
    spread_accounts: int = 50
    spread_tracks: int = 200
    spread_baseline_events: int = 200  # tracks the naive per-event baseline is measured on (exactly 3 WCU each)
    keepup_accounts: int = 100
    keepup_rates: tuple[float, ...] = (50.0, 100.0)  # events/s, one step each
    keepup_seconds: float = 2.0  # per step
    keepup_together: bool = True  # both designs on one stack at once (quick: the time budget), else one by one
    # the rebuild's fold processes (replay view --workers); 2 measured no faster here: DynamoDB Local's writes bound it
    replay_workers: int = 1
    # past one writer (issue 17 item 7): one tenant's usage at each ParallelizationFactor, batches in sandbox processes
    parallel_factors: tuple[int, ...] = (1, 2, 4)
    parallel_events: int = 800
    parallel_accounts: int = 200  # the tenant's accounts (each settled once, untimed, before the exactness check)
    parallel_rounds: int = 1

    @classmethod
    def full(cls) -> Workload:
        return cls({1: 300, 10: 2000, 100: 10000}, 300, 10000, 30.0, 40, 6, 10000, 10000, 3000, 30,
                   20000, 4, 1_000_000, 10_000, 50_000, 1000.0, 60.0, 10_000, (1000, 10_000, 50_000, 200_000),
                   spread_accounts=10_000, spread_tracks=30_000, spread_baseline_events=3000,
                   keepup_accounts=10_000, keepup_rates=(50.0, 100.0, 250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0),
                   keepup_seconds=60.0, keepup_together=False, parallel_events=6000, parallel_rounds=3)

    @classmethod
    def quick(cls) -> Workload:
        return cls({1: 60, 10: 300, 100: 2000}, 60, 1500, 5.0, 10, 4, 600, 600, 150, 2, ceiling_events=1000,
                   replay_events=1500, replay_accounts=100, eventsourcing_events=2000, load_rate=100.0,
                   load_seconds=2.0, load_accounts=50, curve_sizes=(500, 2000), one_record_events=100,
                   query_samples=10, parallel_factors=(1, 2), parallel_events=400,
                   parallel_accounts=40)


# --- events ----------------------------------------------------------------------------------------


class EventFactory:
    """Typical Segment ``track`` calls of about 300 bytes (JSON), deterministic per seed."""

    def __init__(self, accounts: int, users: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.accounts = accounts
        self.users = users
        self.n = 0

    def track(self, when: datetime, account: int | None = None) -> dict[str, Any]:
        rng = self.rng
        self.n += 1
        a = rng.randrange(self.accounts) if account is None else account
        u = rng.randrange(self.users)
        return {
            "type": "track",
            "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "userId": f"user-{a:03d}-{u:02d}",
            "event": rng.choice(FEATURES),
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "properties": {"path": f"/app/reports/{rng.randrange(10000)}", "duration_ms": rng.randrange(20, 5000),
                           "rows": rng.randrange(1000)},
            "context": {"groupId": f"acct-{a:03d}", "library": {"name": "analytics-python", "version": "2.3.2"}},
        }

    def setup(self, when: datetime) -> list[dict[str, Any]]:
        """identify + group for every user (names, emails, plan) — what a tenant sends first."""
        out = []
        for a in range(self.accounts):
            for u in range(self.users):
                uid = f"user-{a:03d}-{u:02d}"
                out.append({"type": "identify", "messageId": f"id-{uid}", "userId": uid,
                            "timestamp": when.isoformat(), "traits": {"name": f"User {uid}",
                                                                      "email": f"{uid}@example.com"}})
                out.append({"type": "group", "messageId": f"gr-{uid}", "userId": uid, "groupId": f"acct-{a:03d}",
                            "timestamp": when.isoformat(),
                            "traits": {"name": f"Account {a}", "plan": "pro", "seats": self.users + 2}})
        return out


def _event_bytes(event: dict[str, Any]) -> int:
    return len(json.dumps(event, separators=(",", ":")).encode())


# --- DynamoDB helpers ---------------------------------------------------------------------------


def _units(resp: dict[str, Any]) -> float:
    cc = resp.get("ConsumedCapacity")
    if isinstance(cc, list):
        return float(sum(c.get("CapacityUnits", 0) for c in cc))
    return float((cc or {}).get("CapacityUnits", 0))


def _simple_table(client: Any, name: str, *, sort_key: bool) -> str:

    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    if sort_key:
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
    tables.ensure_table(client, {"TableName": name, "AttributeDefinitions": attrs, "KeySchema": schema,
                                 "BillingMode": "PAY_PER_REQUEST"})
    return name


def stream_records(client: Any, streams: Any, table: str) -> list[dict[str, Any]]:
    """All records of a table's stream, in order, in Lambda's shape."""

    return read_stream(client, streams, table)


def _wait_records(client: Any, streams: Any, table: str, expect: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = stream_records(client, streams, table)
        if len(records) >= expect or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


# --- phases ------------------------------------------------------------------------------------------


def _fresh_prefix(endpoint: str, name: str) -> str:

    prefix = f"bench{uuid.uuid4().hex[:6]}-{name}-"
    use_endpoint(endpoint, prefix)
    get_writer.cache_clear()
    client = db.get_client()
    tables.ensure_control_table(client, prefix)
    tables.ensure_event_tables(client, prefix, tables.utc_today())
    tables.ensure_view_table(client, prefix, VIEW_VERSION)
    return prefix


def measure_ingest(endpoint: str, w: Workload) -> dict[str, Any]:
    """Write units per event of packed chunks vs one PutItem per event."""

    prefix = _fresh_prefix(endpoint, "ingest")
    client = db.get_client()
    tenant = services.tenants().create("bench")["tenant_id"]
    ing = Ingestor(client, prefix)
    factory = EventFactory(50, 8)
    now = datetime.now(UTC)
    sizes: list[int] = []
    out: dict[str, Any] = {}

    baseline_table = _simple_table(client, f"{prefix}baseline-events", sort_key=False)
    base_units = 0.0
    for _ in range(w.baseline_put_events):
        ev = factory.track(now)
        item = {"pk": {"S": f"{tenant}#{ev['messageId']}"}, "event": {"S": json.dumps(ev, separators=(",", ":"))}}
        base_units += _units(client.put_item(TableName=baseline_table, Item=item, ReturnConsumedCapacity="TOTAL"))
    baseline = base_units / w.baseline_put_events

    for batch_size, total in w.ingest_events.items():
        units = 0.0
        requests = 0
        started = time.perf_counter()
        for start in range(0, total, batch_size):
            batch = [factory.track(now) for _ in range(min(batch_size, total - start))]
            sizes += [_event_bytes(e) for e in batch]
            result = ing.ingest(tenant, parse_request({"batch": batch}, "batch"))
            units += result.write_units
            requests += 1
        elapsed = time.perf_counter() - started
        per_event = units / total
        out[str(batch_size)] = {"events": total, "requests": requests, "write_units": units,
                                "wcu_per_event": round(per_event, 4),
                                "baseline_wcu_per_event": round(baseline, 4),
                                "ratio_vs_baseline": round(per_event / baseline, 4),
                                "events_per_s_direct": round(total / elapsed, 1)}
    return {"event_bytes_mean": round(statistics.mean(sizes), 1), "baseline": "one PutItem per event",
            "baseline_wcu_per_event": round(baseline, 4), "by_batch_size": out}


def _http_phase(endpoint: str, w: Workload) -> dict[str, Any]:
    # deferred: heavy optional dependency, only the SDK-driven phases need it
    from segment.analytics import Client


    _fresh_prefix(endpoint, "http")
    tenant = services.tenants().create("bench-http")

    server = LocalHttpServer(app, port=0).start()
    errors: list[str] = []
    try:
        sdk = Client(write_key=tenant["write_key"], host=server.url, gzip=True, max_queue_size=w.http_events + 10,
                     upload_size=100, on_error=lambda e, b: errors.append(str(e)))
        factory = EventFactory(50, 8, seed=11)
        now = datetime.now(UTC)
        started = time.perf_counter()
        sent = 0
        while sent < w.http_events and time.perf_counter() - started < w.http_seconds:
            ev = factory.track(now)
            sdk.track(ev["userId"], ev["event"], ev["properties"], context=ev["context"], timestamp=now,
                      message_id=ev["messageId"])
            sent += 1
        sdk.flush()
        elapsed = time.perf_counter() - started
        sdk.shutdown()
    finally:
        server.stop()
    stored = _count_events(services.ingestor())
    return {"events_sent": sent, "events_stored": stored, "errors": len(errors), "seconds": round(elapsed, 2),
            "events_per_s": round(sent / elapsed, 1), "sdk": "segment-analytics-python, gzip, upload_size 100"}


def _count_events(ingestor: Any) -> int:

    client = db.get_client()
    table = keys.events_table_name(get_settings().table_prefix, tables.utc_today())
    return sum(int(i["n"]["N"]) for i in db.items(client, "scan", TableName=table, ProjectionExpression="n"))


def baseline_projection_units(client: Any, table: str, tenant: str, events: list[dict[str, Any]],
                              workers: int = 8, *, members: dict[str, str] | None = None) -> float:
    """The per-event ``UpdateItem`` design: a counter per account/day/event name, ``last_seen`` on the
    account and on the user, three writes per usage event (not idempotent: a re-delivery counts again).

    ``members`` (user -> account): the account of a track without ``context.groupId``, as that design would
    read it from the user's item (a read, no write units; the group's own write is not counted here)."""

    def one(ev: dict[str, Any]) -> float:
        acct = (ev.get("context") or {}).get("groupId") or (members or {}).get(ev["userId"], "unattributed")
        day = ev["timestamp"][:10]
        ts = ev["timestamp"]
        units = _units(client.update_item(
            TableName=table, Key={"pk": {"S": f"{tenant}#A#{acct}"}, "sk": {"S": f"DAY#{day}#{ev['event']}"}},
            UpdateExpression="ADD events :one", ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnConsumedCapacity="TOTAL"))
        units += _units(client.update_item(
            TableName=table, Key={"pk": {"S": f"{tenant}#A#{acct}"}, "sk": {"S": "HEAD"}},
            UpdateExpression="SET last_seen = :t", ExpressionAttributeValues={":t": {"S": ts}},
            ReturnConsumedCapacity="TOTAL"))
        units += _units(client.update_item(
            TableName=table, Key={"pk": {"S": f"{tenant}#U#{ev['userId']}"}, "sk": {"S": "HEAD"}},
            UpdateExpression="SET last_seen = :t, account_id = :a",
            ExpressionAttributeValues={":t": {"S": ts}, ":a": {"S": acct}}, ReturnConsumedCapacity="TOTAL"))
        return units

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return float(sum(pool.map(one, events)))


def _projector_phase(endpoint: str, w: Workload, name: str, *, days: int, events_per_request: int,
                     records_per_batch: tuple[int, ...] = (100,), usage_events: int | None = None,
                     warm: bool = False) -> list[dict[str, Any]]:
    """Ingest a workload once, then project its stream records in batches as the mapping would: once per
    size in ``records_per_batch``, each time into a fresh view table (claims live in the view table, so
    every projection starts from nothing). One result per size; the per-event baseline is measured once,
    on the same events.

    ``warm``: the tenant's identify/group calls are projected first (in 100-record batches) and not
    counted, so the figures are those of usage alone (the one-record-invocation phase)."""

    prefix = _fresh_prefix(endpoint, name)
    client = db.get_client()
    tenant = services.tenants().create(f"bench-{name}")["tenant_id"]
    now = datetime.now(UTC)
    factory = EventFactory(w.accounts, w.users_per_account, seed=23 if days > 1 else 29)
    total = usage_events or (w.backfill_events if days > 1 else w.live_events)
    usage: list[dict[str, Any]] = []
    start = now - timedelta(days=days - 1)
    for i in range(total):
        # spread over the days (backfill) or over the hours up to now (live), in arrival order
        frac = i / total
        when = start + timedelta(seconds=frac * ((now - start).total_seconds() or 1)) if days > 1 else \
            now - timedelta(seconds=(1 - frac) * 3600)
        usage.append(factory.track(when))
    setup = factory.setup(start - timedelta(hours=1))
    ing = Ingestor(client, prefix)
    requests = [setup[i:i + 100] for i in range(0, len(setup), 100)] + \
        [usage[i:i + events_per_request] for i in range(0, len(usage), events_per_request)]
    counts = [ing.ingest(tenant, parse_request({"batch": b}, "batch")).chunks for b in requests]
    all_records = _wait_records(client, db.get_streams_client(), keys.events_table_name(prefix, now), sum(counts))

    baseline_table = _simple_table(client, f"{prefix}baseline-view", sort_key=True)
    sample = usage[: w.baseline_events]
    base_per_event = baseline_projection_units(client, baseline_table, tenant, sample) / len(sample)
    return [_project(client, prefix, VIEW_VERSION + n, all_records, now, size, w, days=days,
                     setup_records=sum(counts[:(len(setup) + 99) // 100]) if warm else 0,
                     usage=len(usage), setup=len(setup), baseline=(base_per_event, len(sample)), tenant=tenant)
            for n, size in enumerate(records_per_batch)]


def _spread_phase(endpoint: str, w: Workload) -> dict[str, Any]:
    """The membership pattern of issue 17 through the projector: ``spread_accounts`` accounts of one user each
    (``identify`` + ``group``), then ``spread_tracks`` tracks without ``groupId`` spread over the users (client
    timestamps over the last hour), ingested 100 messages per request, then projected in 100-record batches
    through ``streams.handler.handle_batch`` with a fresh view writer: the identity records first, then the
    track records. Write units from ``ReturnConsumedCapacity`` (the handler's ``WriteReport``), per part and
    combined; the naive per-event baseline on the same track events."""

    prefix = _fresh_prefix(endpoint, "spread")
    client = db.get_client()
    tenant = services.tenants().create("bench-spread")["tenant_id"]
    now = datetime.now(UTC)
    identity = spread.identity_events(w.spread_accounts, now - timedelta(hours=1, minutes=5))
    tracks = spread.track_events(w.spread_tracks, w.spread_accounts, now)
    ing = Ingestor(client, prefix)
    chunks = {name: sum(ing.ingest(tenant, parse_request({"batch": evs[i:i + 100]}, "batch")).chunks
                        for i in range(0, len(evs), 100))
              for name, evs in (("identity", identity), ("tracks", tracks))}
    expect = chunks["identity"] + chunks["tracks"]
    records = _wait_records(client, db.get_streams_client(), keys.events_table_name(prefix, now), expect, 120)
    if len(records) != expect:
        raise RuntimeError(f"spread: {len(records)} stream records of {expect}")

    view_table = tables.ensure_view_table(client, prefix, VIEW_VERSION)
    # The live projector's own mode: delta pages, the production settle policy, nothing settled inline.
    writer = ViewWriter(ViewStore(client, view_table), ScoreModelStore(client, keys.control_table_name(prefix)),
                        deferred=True, settle_inline=0)
    parts: dict[str, dict[str, Any]] = {}
    for name, recs in (("identity", records[:chunks["identity"]]), ("tracks", records[chunks["identity"]:])):
        batches: list[dict[str, Any]] = []
        for i in range(0, len(recs), 100):
            started = time.perf_counter()
            response, stats = handle_batch(recs[i:i + 100], writer=writer, now=now)
            if response.get("batchItemFailures"):
                raise RuntimeError(f"spread batch failed: {response}")
            batches.append({"records": len(recs[i:i + 100]), "events": stats.events, "write_units": stats.write_units,
                            "writes": stats.writes, "accounts": stats.accounts, "users": stats.users,
                            "seconds": round(time.perf_counter() - started, 2)})
        parts[name] = _spread_part(batches)
    combined = _spread_part([b for part in parts.values() for b in part["batches"]])

    # The settle the settler schedule does later (every account's items, SUMMARY and listing copies): what it
    # costs per account settled, and per event once an account gathers E events between two settles.
    before = (writer.store.stats.write_units, writer.store.stats.writes)
    started = time.perf_counter()
    writer.settle(tenant, now, force=True)
    settle_units = writer.store.stats.write_units - before[0]
    settle = {"write_units": settle_units, "writes": writer.store.stats.writes - before[1],
              "seconds": round(time.perf_counter() - started, 1), "accounts": w.spread_accounts,
              "wcu_per_account": round(settle_units / w.spread_accounts, 2),
              "wcu_per_event_this_workload": round(settle_units / combined["events"], 4),
              "wcu_per_event_at_events_per_account": {
                  str(e): round(settle_units / w.spread_accounts / e, 4) for e in (6, 36, 60)}}
    members = {spread.user_id(a): spread.account_id(a) for a in range(w.spread_accounts)}
    baseline_table = _simple_table(client, f"{prefix}baseline-view", sort_key=True)
    sample = tracks[: w.spread_baseline_events]
    base = baseline_projection_units(client, baseline_table, tenant, sample, members=members) / len(sample)
    item_sizes = _item_sizes(client, view_table)
    return {"accounts": w.spread_accounts, "users": w.spread_accounts, "records_per_invocation": 100,
            "events_per_request": 100, "identity": parts["identity"], "tracks": parts["tracks"],
            **{k: v for k, v in combined.items()
               if k not in ("batches", "wcu_per_event_first_batch", "wcu_per_event_later_batches")},
            "settle": settle,
            "wcu_per_event_with_settle": round((combined["write_units"] + settle_units) / combined["events"], 4),
            "baseline_wcu_per_event": round(base, 4), "baseline_events_sampled": len(sample),
            "tracks_ratio_vs_baseline": round(parts["tracks"]["wcu_per_event"] / base, 4),
            "ratio_vs_baseline": round(combined["wcu_per_event"] / base, 4),
            "view_items": sum(v["items"] for v in item_sizes.values()), "item_bytes": item_sizes}


def _spread_part(batches: list[dict[str, Any]]) -> dict[str, Any]:
    events = sum(b["events"] for b in batches)
    units = sum(b["write_units"] for b in batches)
    writes = sum(b["writes"] for b in batches)
    seconds = sum(b["seconds"] for b in batches)
    per_batch = [b["write_units"] / b["events"] for b in batches if b["events"]]
    return {"events": events, "records": sum(b["records"] for b in batches), "invocations": len(batches),
            "write_units": units, "writes": writes, "wcu_per_event": round(units / events, 4) if events else 0.0,
            "writes_per_event": round(writes / events, 4) if events else 0.0,
            "wcu_per_event_first_batch": round(per_batch[0], 4) if per_batch else 0.0,
            "wcu_per_event_later_batches": round(sum(b["write_units"] for b in batches[1:])
                                                 / sum(b["events"] for b in batches[1:]), 4)
            if sum(b["events"] for b in batches[1:]) else None,
            "seconds": round(seconds, 2), "events_per_s": round(events / seconds, 1) if seconds else 0.0,
            "batches": batches}


def _project(client: Any, prefix: str, version: int, all_records: list[dict[str, Any]], now: datetime,
             records_per_batch: int, w: Workload, *, days: int, setup_records: int, usage: int, setup: int,
             baseline: tuple[float, int], tenant: str) -> dict[str, Any]:
    """Project ``all_records`` into the (fresh) view table of ``version`` in batches of ``records_per_batch``
    (the first ``setup_records`` first, in 100-record batches, not counted), then re-deliver the last batch."""

    view_table = tables.ensure_view_table(client, prefix, version)
    # The live projector's own mode: delta pages, nothing settled inline; the settler's work (buckets due at
    # 64 pages: the bench compresses hours into seconds, so the age rule never fires) is run after every
    # batch and counted, and whatever is still pending at the end is settled and counted too.
    proj = ViewWriter(ViewStore(client, view_table), ScoreModelStore(client, keys.control_table_name(prefix)),
                      deferred=True, settle_inline=0)
    for i in range(0, setup_records, 100):
        handle_batch(all_records[i:min(i + 100, setup_records)], writer=proj, now=now)
    if setup_records:
        proj.settle(tenant, now, force=True)
    records = all_records[setup_records:]
    units = 0.0
    writes = 0
    events = 0
    batches = [records[i:i + records_per_batch] for i in range(0, len(records), records_per_batch)]
    store_stats = proj.store.stats
    settle_units = 0.0
    settle_writes = 0
    started = time.perf_counter()
    for batch in batches:
        response, stats = handle_batch(batch, writer=proj, now=now)
        if response.get("batchItemFailures"):
            raise RuntimeError(f"bench batch failed: {response}")
        units += stats.write_units
        writes += stats.writes
        events += stats.events
        before = (store_stats.write_units, store_stats.writes)
        proj.settle_due(tenant, now)
        settle_units += store_stats.write_units - before[0]
        settle_writes += store_stats.writes - before[1]
    before = (store_stats.write_units, store_stats.writes)
    proj.settle(tenant, now, force=True)
    settle_units += store_stats.write_units - before[0]
    settle_writes += store_stats.writes - before[1]
    elapsed = time.perf_counter() - started
    batch_units = units
    units += settle_units
    writes += settle_writes

    # a re-delivered batch: the last one, as after a crash before the checkpoint (a shard retries its
    # batch before it reads the next; docs/ARCHITECTURE.md states the re-delivery window)
    again_batch = batches[-1]
    again, redelivered = handle_batch(again_batch, writer=proj, now=now)

    base_per_event, sampled = baseline
    item_sizes = _item_sizes(client, view_table)
    per_event = units / events
    return {
        "events": events, "usage_events": usage, "setup_events": setup, "records": len(records),
        "events_per_record": round(events / len(records), 1), "invocations": len(batches),
        "records_per_invocation": records_per_batch, "days": days, "accounts": w.accounts,
        "users": w.accounts * w.users_per_account,
        "write_units": units, "writes": writes, "wcu_per_event": round(per_event, 4), "mode": "pages",
        "batch_write_units": batch_units, "settle_write_units": settle_units,
        "wcu_per_write": round(units / writes, 2) if writes else 0.0,
        "baseline_wcu_per_event": round(base_per_event, 4), "baseline_events_sampled": sampled,
        "ratio_vs_baseline": round(per_event / base_per_event, 4),
        "seconds": round(elapsed, 2), "events_per_s": round(events / elapsed, 1),
        "day_item_bytes": item_sizes.get("account_day", {}), "item_bytes": item_sizes,
        "redelivered": {"records": len(again_batch), "events": redelivered.events,
                        "write_units": redelivered.write_units, "writes": redelivered.writes,
                        "skipped": redelivered.skipped, "failures": len(again.get("batchItemFailures", []))},
    }


def _kind(pk: str, sk: str) -> str:
    if pk.endswith("#CATALOG"):
        return "catalog"
    if "#U#" in pk:
        return "user_head"
    for prefix, name in (("DAY#", "account_day"), ("TL#", "account_timeline"), ("USER#", "account_user_link")):
        if sk.startswith(prefix):
            return name
    return {"HEAD": "account_head", "SUMMARY": "account_summary"}.get(sk, "other")


def _item_sizes(client: Any, table: str) -> dict[str, dict[str, int]]:
    """Approximate stored size (bytes of names and values) of the view items, by kind."""

    sizes: dict[str, list[int]] = {}
    for it in db.items(client, "scan", TableName=table):
        size = 0
        for name, value in it.items():
            (tag, inner), = value.items()
            size += len(name) + (len(inner) if tag in ("B", "S") else len(json.dumps(inner, default=str)))
        sizes.setdefault(_kind(it["pk"]["S"], it["sk"]["S"]), []).append(size)
    return {k: {"items": len(v), "mean": round(statistics.mean(v)), "max": max(v)}
            for k, v in sorted(sizes.items())}


def _lag_at_rest(url: str, tenant: dict[str, Any], client: Any, view: str, probes: int) -> dict[str, Any]:
    """From ingest 200 OK to the event being served by the query API's read (``spread.probe_visible``: items plus
    pending delta pages), one event at a time (each alone in its batching window),
    through the local ESM runtime with the default mapping. Run on the warm lag-under-load stack (its
    warm-up has made the mapped function's first invocation), so every probe counts."""
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests as http

    samples: list[float] = []
    timeouts = 0
    session = http.Session()
    factory = EventFactory(1, 1, seed=31)
    for probe in range(probes):
        ev = factory.track(datetime.now(UTC))
        account = f"lag-{probe:03d}"
        ev["context"]["groupId"] = account
        r = session.post(f"{url}/v1/batch", json={"batch": [ev]}, auth=(tenant["write_key"], ""), timeout=30)
        r.raise_for_status()
        ok = time.perf_counter()
        while True:
            if ceilings.probe_visible(client, view, tenant["tenant_id"], [account]):
                samples.append((time.perf_counter() - ok) * 1000)
                break
            if time.perf_counter() - ok > 30:
                timeouts += 1
                break
            time.sleep(0.005)
    samples.sort()
    return {"probes": len(samples), "timeouts": timeouts,
            "p50_ms": round(_pct(samples, 50), 1), "p95_ms": round(_pct(samples, 95), 1),
            "p99_ms": round(_pct(samples, 99), 1),
            "max_ms": round(max(samples), 1) if samples else None,
            "samples_ms": [round(s, 1) for s in samples]}


def _pct(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = ""
    try:
        proc = subprocess.run(["java", "-version"], check=False, capture_output=True, text=True, timeout=20)
        java = proc.stderr.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), "java": java, "dynamodb": "DynamoDB Local (in memory)"}


@contextmanager
def _environment() -> Iterator[None]:
    """Benchmarks repoint the process at their own DynamoDB Local; put everything back after."""

    saved = {k: os.environ.get(k) for k in ("STREAMFOLD_DYNAMODB_ENDPOINT", "STREAMFOLD_TABLE_PREFIX")}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        use_endpoint(None)
        get_writer.cache_clear()


def run(quick: bool = False, endpoint: str | None = None, log: Any = None,
        workload: Workload | None = None) -> dict[str, Any]:
    """Run every phase; returns the JSON-able report.

    Args:
        quick: the small workload (about a minute).
        endpoint: an existing DynamoDB endpoint (default: start an in-memory DynamoDB Local).
        log: ``callable(str)`` for progress lines.
        workload: explicit sizes (overrides ``quick``).
    """

    w = workload or (Workload.quick() if quick else Workload.full())
    say = log or (lambda msg: None)
    marks: list[tuple[str, float]] = []

    def phase(key: str, message: str) -> None:
        """Announce a phase and note when it started (``phase_seconds``: where a run's time goes)."""
        marks.append((key, time.perf_counter()))
        say(message)

    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "streamfold", "quick": quick,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "workload": w.__dict__ | {"ingest_events": {
                                  str(k): v for k, v in w.ingest_events.items()}}}
    with _environment(), (_nullcontext(endpoint) if endpoint else DynamoDBLocal(in_memory=True)) as ddb:
        ep = endpoint or ddb.endpoint
        phase("ingest_units", "ingest: write units per event by batch size ...")
        report["ingest"] = measure_ingest(ep, w)
        phase("ingest_http", "ingest: events/s through the HTTP API with the Segment SDK ...")
        report["ingest"]["http"] = _http_phase(ep, w)
        phase("projector_live", "projector: live-like workload, stream batches of 100 records, then of 10 ...")
        live, small = _projector_phase(ep, w, "live", days=1, events_per_request=10, records_per_batch=(100, 10))
        phase("projector_one_record", "projector: usage alone, one record (10 events) per invocation ...")
        one, = _projector_phase(ep, w, "one", days=1, events_per_request=10, records_per_batch=(1,),
                                usage_events=w.one_record_events, warm=True)
        phase("projector_backfill", "projector: 30-day backfill ...")
        backfill, = _projector_phase(ep, w, "backfill", days=30, events_per_request=100)
        report["projector"] = {"baseline": "per-event UpdateItem: ADD counter on account/day/name, "
                                           "SET last_seen on account and user",
                               "live": {k: v for k, v in live.items() if k != "redelivered"},
                               "live_small_batches": {k: v for k, v in small.items() if k != "redelivered"},
                               "one_record_invocations": {k: v for k, v in one.items() if k != "redelivered"},
                               "backfill": {k: v for k, v in backfill.items() if k != "redelivered"}}
        report["redelivery"] = {"live": live["redelivered"], "live_small_batches": small["redelivered"],
                                "backfill": backfill["redelivered"]}
        phase("projector_spread",
              f"projector: spread traffic, {w.spread_accounts} accounts joined by group, then {w.spread_tracks} "
              "tracks without groupId, 100-record batches ...")
        report["projector"]["spread"] = _spread_phase(ep, w)
        phase("cost_curve", f"projector: cost per event against events per account-day {w.curve_sizes} ...")
        report["projector"]["cost_curve"] = ceilings.cost_curve(ep, list(w.curve_sizes))
        phase("ceiling_ingest",
              f"ceilings: ingest API vs raw BatchWriteItem ({w.ceiling_events} events, "
              f"{w.ceiling_threads} threads) ...")
        report["ceilings"] = {"ingest": ceilings.ingest_vs_raw(ep, w.ceiling_events, threads=w.ceiling_threads)}
        phase("replay", f"ceilings: replay of {w.replay_events} events vs raw Scan, then the query API over "
                        f"{w.replay_accounts} accounts ...")
        report["ceilings"]["replay"] = ceilings.replay_vs_scan(
            ep, w.replay_events, w.replay_accounts, query_samples=w.query_samples,
            raw_items_per_s=report["ceilings"]["ingest"]["raw_batch_write_events_per_s"], workers=w.replay_workers)
        phase("lag",
              f"local mapping lag at rest ({w.lag_probes} probes: ingest 200 OK -> SUMMARY item), then under load: "
              f"{w.load_rate} events/s for {w.load_seconds} s over {w.load_accounts} accounts, streamfold then the "
              "naive per-event design ...")
        streamfold = ceilings.lag_under_load(
            ep, w.load_rate, w.load_seconds, w.load_accounts,
            at_rest=lambda url, tenant, client, view: _lag_at_rest(url, tenant, client, view, w.lag_probes))
        report["lag"] = streamfold.pop("at_rest")
        report["load"] = {"streamfold": streamfold,
                          "naive": ceilings.lag_under_load(ep, w.load_rate, w.load_seconds, w.load_accounts,
                                                           naive=True)}
        phase("keep_up", f"keep-up at spread: {w.keepup_accounts} accounts, steps {w.keepup_rates} events/s of "
                         f"{w.keepup_seconds} s, streamfold and the naive per-event design "
                         f"{'on one stack at once' if w.keepup_together else 'one after the other'} ...")
        report["keep_up"] = {}
        for designs in [spread.DESIGNS] if w.keepup_together else [(d,) for d in spread.DESIGNS]:
            report["keep_up"].update(spread.keep_up(ep, w.keepup_accounts, w.keepup_rates, w.keepup_seconds,
                                                    designs=designs, warm_timeout=120.0 if quick else 1800.0,
                                                    settler_interval=1.0 if quick else 15.0,
                                                    settle_min_age_s=2.0 if quick else None))
        phase("parallel",
              f"past one writer: one tenant's {w.parallel_events} events at ParallelizationFactor "
              f"{w.parallel_factors}, concurrent batches in sandbox processes, {w.parallel_rounds} round(s) ...")
        report["parallel"] = measure_parallel(
            ep, w.parallel_factors, workload=ParallelWorkload(events=w.parallel_events, accounts=w.parallel_accounts),
            rounds=w.parallel_rounds,
            processes=True)
        use_endpoint(ep)
        phase("eventsourcing", f"baseline: the eventsourcing library folding {w.eventsourcing_events} events ...")
        report["ceilings"]["eventsourcing"] = ceilings.eventsourcing_baseline(w.eventsourcing_events,
                                                                               w.replay_accounts)
        marks.append(("stop", time.perf_counter()))  # DynamoDB Local's shutdown: the rest of the run
    report["seconds"] = round(time.perf_counter() - started, 1)
    ends = [t for _, t in marks[1:]] + [time.perf_counter()]
    report["phase_seconds"] = {"start": round(marks[0][1] - started, 1) if marks else 0.0} | {
        key: round(end - t, 1) for (key, t), end in zip(marks, ends, strict=True)}
    report["summary"] = ceilings.summarise(report)
    return report


@contextmanager
def _nullcontext(endpoint: str) -> Iterator[Any]:
    class _Ep:
        pass

    e = _Ep()
    e.endpoint = endpoint  # type: ignore[attr-defined]
    yield e


def table(report: dict[str, Any]) -> str:
    """The readable summary printed after a run."""
    ing = report["ingest"]
    rows = [(f"streamfold bench ({'quick' if report['quick'] else 'full'}) {report['date']}  "
             f"{report['machine']['cpu']} x{report['machine']['cores']}"), "",
            (f"ingest (mean event {ing['event_bytes_mean']} B; baseline PutItem/event "
             f"{ing['baseline_wcu_per_event']} WCU)"),
            f"  {'batch':>6} {'events':>7} {'WCU/event':>10} {'vs baseline':>12}"]
    for size, r in ing["by_batch_size"].items():
        rows.append(f"  {size:>6} {r['events']:>7} {r['wcu_per_event']:>10.4f} {r['ratio_vs_baseline']:>11.3f}x")
    h = ing["http"]
    rows.append(f"  HTTP API + Segment SDK: {h['events_per_s']} events/s ({h['events_sent']} events, "
                f"{h['errors']} errors, {h['events_stored']} stored)")
    rows += ["", "projector (view write units per event; baseline: 3 UpdateItems/event)",
             (f"  {'workload':>9} {'events':>7} {'ev/record':>9} {'WCU/event':>10} {'baseline':>9} {'ratio':>7}"
              f" {'DAY item max B':>15}")]
    for name in ("live", "live_small_batches", "one_record_invocations", "backfill"):
        r = report["projector"].get(name)
        if r is None:
            continue
        label = {"live_small_batches": "live/10", "one_record_invocations": "live/1"}.get(name, name)
        rows.append(f"  {label:>9} {r['events']:>7} {r['events_per_record']:>9} {r['wcu_per_event']:>10.4f} "
                    f"{r['baseline_wcu_per_event']:>9.3f} {r['ratio_vs_baseline']:>6.3f}x "
                    f"{r['day_item_bytes'].get('max', 0):>15}")
    sp = report["projector"].get("spread")
    if sp:
        rows.append(f"  spread ({sp['accounts']} accounts, one user each, tracks without groupId): "
                    f"{sp['wcu_per_event']:.4f} WCU/event (identity {sp['identity']['wcu_per_event']:.4f}, tracks "
                    f"{sp['tracks']['wcu_per_event']:.4f}; first track batch "
                    f"{sp['tracks']['wcu_per_event_first_batch']:.4f}), {sp['writes_per_event']:.2f} writes/event, "
                    f"{sp['events_per_s']} events/s; naive {sp['baseline_wcu_per_event']:.3f}; settle "
                    f"{sp['settle']['wcu_per_account']} WCU per account ({sp['wcu_per_event_with_settle']:.3f} "
                    "WCU/event with it, this workload)")
    for name, r in report["redelivery"].items():
        rows.append(f"  re-delivered {name} batch: {r['records']} records, {r['events']} events -> "
                    f"{r['write_units']} WCU, {r['writes']} writes")
    lag = report["lag"]
    rows += ["", (f"local mapping lag (200 OK -> SUMMARY, poll {lag['poll_interval_s']} s): "
                  f"p50 {lag['p50_ms']} ms, p95 {lag['p95_ms']} ms, max {lag['max_ms']} ms "
                  f"over {lag['probes']} probes")]
    curve = report["projector"].get("cost_curve", [])
    if curve:
        rows += ["", "cost against events per account-day (one account, one name, 100-record batches)"]
        rows += [f"  {p['events_per_account_day']:>8} events: {p['wcu_per_event']:.4f} WCU/event, last batch "
                 f"{p['marginal_wcu_per_event']:.4f}" for p in curve]
    c = report.get("ceilings", {})
    if c:
        i, r, e = c["ingest"], c["replay"], c["eventsourcing"]
        rows += ["", "against ceilings and baselines (same run)",
                 f"  ingest API {i['api_events_per_s']} ev/s vs raw BatchWriteItem {i['raw_batch_write_events_per_s']}"
                 f" ev/s ({i['threads']} threads): {i['ingest_vs_raw']}x",
                 f"  replay {r['replay_events_per_s']} ev/s vs raw Scan {r['scan_events_per_s']} ev/s: "
                 f"{r['replay_vs_scan']}x; peak RSS {r['replay_rss_mb']} MB over {r['events']} events",
                 f"  query p99 {r['query']['p99_ms']} ms over {r['accounts']} accounts",
                 f"  eventsourcing library (POPO): {e['events_per_s']} ev/s"]
        for name, ld in report.get("load", {}).items():
            rows.append(f"  lag under load ({name}): {ld['achieved_events_per_s']} ev/s for {ld['seconds']} s: "
                        f"p50 {ld['p50_ms']} ms, p99 {ld['p99_ms']} ms, {ld['probes_lost']} probes not seen")
    for name, k in report.get("keep_up", {}).items():
        rows.append(f"  keep-up at spread ({name}, {k['accounts']} accounts, warm-up {k['warm_up_s']} s): highest "
                    f"sustained {k['highest_sustained_events_per_s']} ev/s")
        rows += [f"    step {st['target_events_per_s']:>6} ev/s: {st['achieved_events_per_s']} ev/s for "
                 f"{st['seconds']} s, lag p50 {st['p50_ms']} ms, p99 {st['p99_ms']} ms, {st['probes_lost']} of "
                 f"{st['requests']} probes lost, {'held' if st['held'] else 'not held'}" for st in k["steps"]]
    rows += ["", "goals (docs/PERFORMANCE.md):", *ceilings.verdicts(report)]
    rows += ["", "summary: " + json.dumps(report.get("summary", {})), f"total {report['seconds']} s"]
    if report.get("phase_seconds"):
        rows.append("  by phase: " + ", ".join(f"{k} {v} s" for k, v in report["phase_seconds"].items()))
    return "\n".join(rows)


def markdown(report: dict[str, Any]) -> str:
    """The generated part of ``docs/PERFORMANCE.md``'s "Latest run": the goal table and one line per phase,
    every figure read from ``report`` (the interpretation around it is written by hand)."""
    p, c, s = report["projector"], report.get("ceilings", {}), report.get("summary") or ceilings.summarise(report)
    w = report["workload"]
    m = report["machine"]
    ms = ceilings.format_ms
    lines = [f"`streamfold bench{' --quick' if report['quick'] else ''}` ({report['date']}, "
             f"{report['seconds']:,.0f} s, {m['cpu']} × {m['cores']}, {m['dynamodb']}).", "",
             *ceilings.verdicts(report), ""]
    shapes = [("live", "100-record batches"), ("live_small_batches", "10-record batches"),
              ("one_record_invocations", "one-record invocations of usage alone"), ("backfill", "30-day backfill")]
    lines.append("- Projection by batch shape (write units per event; the per-event `UpdateItem` baseline is "
                 f"{p['live']['baseline_wcu_per_event']:.1f}): "
                 + ", ".join(f"{label} {p[k]['wcu_per_event']:.3f}" for k, label in shapes if k in p)
                 + ". A re-delivered batch: "
                 + ", ".join(f"{r['write_units']:g}" for r in report["redelivery"].values())
                 + " write units.")
    if "spread" in p:
        sp = p["spread"]
        i, t = sp["identity"], sp["tracks"]
        later = "—" if t["wcu_per_event_later_batches"] is None else f"{t['wcu_per_event_later_batches']:.3f}"
        sizes = ", ".join(f"{k} {v['items']:,} × {v['mean']:,} B (max {v['max']:,})"
                          for k, v in sp["item_bytes"].items())
        lines.append(f"- Spread ({sp['accounts']:,} accounts of one user each joined by `group`, then "
                     f"{t['events']:,} tracks without `groupId`; 100-record batches): {sp['wcu_per_event']:.3f} write "
                     f"units per event combined, identity {i['wcu_per_event']:.3f} ({i['events']:,} events), tracks "
                     f"{t['wcu_per_event']:.3f} (first batch {t['wcu_per_event_first_batch']:.3f}, later "
                     f"{later}); {sp['writes_per_event']:.2f} writes per event; "
                     f"{sp['events_per_s']:,} events/s (identity {i['events_per_s']:,}, tracks {t['events_per_s']:,}); "
                     f"naive per-event baseline {sp['baseline_wcu_per_event']:.1f} on "
                     f"{sp['baseline_events_sampled']:,} of the tracks. The later settle of every account (the "
                     f"settler schedule): {sp['settle']['wcu_per_account']} write units per account settled, "
                     f"{sp['wcu_per_event_with_settle']:.3f} per event with it on this workload "
                     f"({t['events'] / sp['accounts']:.0f} tracks per account); per event at E events per account "
                     f"between settles: " + ", ".join(f"E={e}: {v:.3f}" for e, v in
                                                      sp['settle']['wcu_per_event_at_events_per_account'].items())
                     + f". View items: {sizes}.")
    curve = p.get("cost_curve") or []
    if curve:
        lines.append("- Cost against events per account-day (one account, one event name, 100-record batches of "
                     "10-event records): " + "; ".join(f"{q['events_per_account_day']:,} → {q['wcu_per_event']:.3f} "
                                                       f"(last batch {q['marginal_wcu_per_event']:.3f})" for q in curve)
                     + ".")
    if "ingest" in c:
        i = c["ingest"]
        lines.append(f"- Ingest: HTTP API {i['api_events_per_s']:,} events/s vs raw `BatchWriteItem` "
                     f"{i['raw_batch_write_events_per_s']:,} ({i['threads']} threads, {i['events']:,} events, "
                     f"{i['failures']} failures); one Segment SDK client: {report['ingest']['http']['events_per_s']:,} "
                     "events/s.")
    if "replay" in c:
        r = c["replay"]
        batches = f"{r['replay_batches']:,} batches, " if r.get("replay_batches") else ""
        how = f"in memory, {batches}{r['replay_flushes']} flushes" if r.get("replay_in_memory") else "item by item"
        lines.append(f"- Replay ({how}): {r['replay_events_per_s']:,} events/s vs raw Scan {r['scan_events_per_s']:,} "
                     f"events/s ({r['events']:,} events over {r['accounts']:,} accounts, {r['replay_seconds']:,} s; "
                     f"{r['replay_writes']:,} writes, {r['replay_write_units']:,.0f} write units: "
                     f"{r['replay_write_units'] / max(r['events'], 1):.2f} per event); "
                     f"peak RSS {r['replay_rss_mb']} MB.")
        if r.get("final_items"):
            floor = (f"; writing each once at the same run's raw `BatchWriteItem` rate "
                     f"({r['raw_batch_write_items_per_s']:,} items/s) takes {r['write_floor_s']:,} s "
                     f"(≈ {r['write_floor_events_per_s']:,} events/s)") if r.get("write_floor_s") is not None else ""
            if r.get("view_write_floor_s") is not None:
                floor += (f"; into a table of the view's schema (its listing indexes and stream) the same writes run "
                          f"{r['view_batch_write_items_per_s']:,} items/s: {r['view_write_floor_s']:,} s "
                          f"(≈ {r['view_write_floor_events_per_s']:,} events/s)")
            lines.append(f"- Replay writes per final item: {r['replay_writes_per_final_item']:.2f} "
                         f"({r['replay_writes']:,} writes, {r['final_items']:,} items in the rebuilt view{floor}).")
        q = r["query"]
        sorts = ", ".join(f"{k.removeprefix('accounts_sort_')} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms"
                          for k, v in q.items() if k.startswith("accounts_sort_"))
        lines.append(f"- Query ({r['accounts']:,} accounts, {q['samples']} requests): {sorts}; account page calls "
                     f"p50 {q['account_page_calls']['p50_ms']} / p99 {q['account_page_calls']['p99_ms']} ms; the bare "
                     f"index `Query` of the same page (boto3, no HTTP): p50 {q['raw_index_query']['p50_ms']} / "
                     f"p99 {q['raw_index_query']['p99_ms']} ms.")
    for name, ld in report.get("load", {}).items():
        seen = f"{ld['probes_lost']} of {ld['requests']} probes not seen" if ld.get("probes_lost") else \
            f"all {ld['requests']} probes seen"
        tail = ", 3.0 write units/event" if name == "naive" else ""
        lines.append(f"- Lag under load, {ld['design']}: {ld['achieved_events_per_s']:,} events/s for "
                     f"{ld['seconds']} s over {ld['accounts']:,} accounts (warm-up {ld['warm_up_s']} s): "
                     f"p50 {ms(ld['p50_ms'])}, p99 {ms(ld['p99_ms'])}, max {ms(ld['max_ms'])}; {seen}{tail}.")
    for k in report.get("keep_up", {}).values():
        steps = "; ".join(f"{st['target_events_per_s']:,.0f} → {st['achieved_events_per_s']:,} events/s, p50 "
                          f"{ms(st['p50_ms'])} / p99 {ms(st['p99_ms'])}"
                          + (f", {st['probes_lost']} of {st['requests']} probes not seen" if st["probes_lost"] else "")
                          + ("" if st["held"] else " (not held)") for st in k["steps"])
        tail = f", {k['write_units_per_event']} write units/event" if "write_units_per_event" in k else ""
        if len(k.get("designs_on_the_stack", [])) > 1:
            tail += "; both designs on one stack at once"
        lines.append(f"- Keep-up at spread, {k['design']} ({k['accounts']:,} accounts, steps of "
                     f"{k['step_seconds']:g} s, warm-up {k['warm_up_s']} s): highest rate held "
                     f"{k['highest_sustained_events_per_s']:,} events/s (lag p99 ≤ {k['lag_goal_ms'] / 1000:g} s); "
                     f"{steps}{tail}.")
    if "parallel" in report:
        par = report["parallel"]
        runs = "; ".join(f"factor {f}: {v['events_per_s']:,} events/s ({v['max_concurrent']} at once, "
                         f"{v['wcu_per_event']} write units/event, exact: {'yes' if v['exact'] else 'NO'})"
                         for f, v in par["by_factor"].items())
        wl = par["workload"]
        lines.append(f"- Past one writer (one tenant, {wl['events']:,} usage events over {wl['accounts']:,} accounts, "
                     f"`BatchSize` {par['batch_size']}, each concurrent batch in a sandbox process of its own, median "
                     f"of {len(next(iter(par['by_factor'].values()))['runs'])} run(s)): {runs}; speedup "
                     f"{', '.join(f'{f}: {x}×' for f, x in par['speedup'].items())}.")
    if "eventsourcing" in c:
        e = c["eventsourcing"]
        lines.append(f"- {e['library']}: {e['events_per_s']:,} events/s folding "
                     f"{e['events']:,} tracks into per-account counts ({e['note']}).")
    lag = report["lag"]
    lines.append(f"- Lag at rest ({lag['probes']} single probes, 200 OK → `SUMMARY` item): p50 {ms(lag['p50_ms'])}, "
                 f"p95 {ms(lag['p95_ms'])}, max {ms(lag['max_ms'])}.")
    if report.get("phase_seconds"):
        lines.append(f"- Where the run's {report['seconds']:,} s went, by phase: "
                     + ", ".join(f"{k} {v:,} s" for k, v in report["phase_seconds"].items()) + ".")
    lines.append(f"- Summary: `{json.dumps(s)}` (workload: {w['replay_events']:,} replay events, "
                 f"{w['load_rate']:,} events/s for {w['load_seconds']} s of load).")
    return "\n".join(lines) + "\n"


PHASES = 13
"""The phases :func:`run` announces (one progress line each): the bar's length."""


def cmd_bench(args: argparse.Namespace) -> int:

    logging.getLogger("streamfold").setLevel(logging.WARNING)  # keep stdout for the table
    # deferred: the operator's bar (requirements-dev)
    from rich.console import Console

    # deferred: as above
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with contextlib.redirect_stdout(sys.stderr), \
            Progress(TextColumn("bench phases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, disable=args.no_progress) as bars:  # EMF metric lines of the handler
        phases = bars.add_task("bench", total=PHASES)

        def say(message: str) -> None:
            console.print(message, markup=False, highlight=False)
            bars.advance(phases)

        report = run(quick=args.quick, log=say)
        bars.update(phases, completed=PHASES)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.chart:
        ceilings.chart(report, args.chart)
    if args.markdown:
        Path(args.markdown).write_text(markdown(report))
    print(table(report))
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``streamfold`` command line."""
    p = subparsers.add_parser("bench", help="measure write units per event and lag (docs/PERFORMANCE.md)")
    p.add_argument("--quick", action="store_true", help="small workload, about a minute")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (phase lines only)")
    p.add_argument("--out", help="write the JSON report to this file")
    p.add_argument("--chart", help="draw the PNG chart of docs/PERFORMANCE.md to this file")
    p.add_argument("--markdown", help="write the generated part of docs/PERFORMANCE.md's latest run to this file")
    p.set_defaults(func=cmd_bench)
