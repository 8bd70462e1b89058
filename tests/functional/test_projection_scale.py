"""No item grows with traffic: 200,000 events of one account and one event name in one UTC day, and an
account with 50,000 users, on DynamoDB Local.

The view writer is driven directly with 100-record batches of 100-event chunks (the shape a stream
batch of packed chunks has), not over HTTP: the point is the view's items, and HTTP ingest at this
volume would take the test past its time budget on a 2-core machine. The suite runs it at
``STREAMFOLD_SCALE=0.1`` (20,000 events, 5,000 users: about 2 minutes on a shared 2-core machine);
``STREAMFOLD_SCALE=1`` runs the full 200,000 events and 50,000 users (measured in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import db, keys, tables
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from projections.account import DayActivity
from projections.events import Event
from streams.writer import ViewWriter

pytestmark = pytest.mark.timeout(int(300 + 3000 * float(os.environ.get("STREAMFOLD_SCALE", "0.1"))))

SCALE = float(os.environ.get("STREAMFOLD_SCALE", "0.1"))
DAY = datetime(2026, 11, 20, tzinfo=UTC)
CHUNK = 100
BATCH = 100

# The stated bounds (docs/ARCHITECTURE.md, "Largest size of every item (view version 2)").
BOUND_BYTES = {
    "claim": 300 * 1024,  # a claim page: streams.writer.PAGE_DIGESTS digests with their owners
    "account_day": 60 * 1024,
    "user_day": 56 * 1024,
    "catalog_day": 3 * 1024,
    "members": 100,
    "link": 10 * 1024,
    "other": 170 * 1024,  # HEADs (account 140 KB, user 170 KB), TL (110 KB), SUMMARY, catalog names
}
TYPICAL_BYTES = 4 * 1024
"""Every item of this workload (short ASCII names) stays below this: nothing grows with the volume."""


def item_kind(pk: str, sk: str) -> str:
    if sk.startswith(keys.CLAIM_PAGE_PREFIX):
        return "claim"
    if "#CATALOG" in pk and sk.startswith(keys.DAY_PREFIX):
        return "catalog_day"
    if "#A#" in pk and sk.startswith(keys.DAY_PREFIX):
        return "account_day"
    if sk.startswith(keys.USER_DAY_PREFIX):
        return "user_day"
    if sk == keys.MEMBERS_SK:
        return "members"
    if sk.startswith(keys.USER_LINK_PREFIX):
        return "link"
    return "other"


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (UTF-8 / binary lengths, numbers ~ digits/2 + 1)."""
    def value(v: dict[str, Any]) -> int:
        (t, x), = v.items()
        if t == "S":
            return len(x.encode())
        if t == "B":
            return len(x)
        if t == "N":
            return len(x) // 2 + 2
        if t in ("L",):
            return 3 + sum(value(e) + 1 for e in x)
        if t == "M":
            return 3 + sum(len(k.encode()) + value(e) + 1 for k, e in x.items())
        return 1
    return sum(len(k.encode()) + value(v) for k, v in item.items())


def max_sizes(client: Any, table: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in db.items(client, "scan", TableName=table):
        kind = item_kind(it["pk"]["S"], it["sk"]["S"])
        out[kind] = max(out.get(kind, 0), item_size(it))
    return out


def ev(mid: str, kind: str, at: datetime, **fields: Any) -> Event:
    # Sent as an SDK sends it: the client's timestamp (the claim pages key on its minute).
    return Event.from_wire({"messageId": mid, "type": kind, "timestamp": at.isoformat(),
                            "originalTimestamp": at.isoformat(), **fields})


def batches(tenant: str, events: list[Event]) -> list[list[tuple[str, list[Event]]]]:
    """Events as batches of BATCH chunks of CHUNK events (chunk id = what a stream record names)."""
    chunks = [(f"{tenant}|c{i}", events[i:i + CHUNK]) for i in range(0, len(events), CHUNK)]
    return [chunks[b:b + BATCH] for b in range(0, len(chunks), BATCH)]


def run(writer: ViewWriter, tenant: str, work: list[list[tuple[str, list[Event]]]], now: datetime,
        per_batch: list[float] | None = None) -> float:
    """Apply the batches; returns the write units spent (and each batch's units per event in
    ``per_batch``). Any failed write raises: nothing is skipped or dead-lettered."""
    before = writer.store.stats.write_units
    for batch in work:
        start = writer.store.stats.write_units
        writer.record(None, now, chunks={tenant: batch})
        if per_batch is not None:
            per_batch.append((writer.store.stats.write_units - start) / sum(len(evs) for _, evs in batch))
    return writer.store.stats.write_units - before


def account_total(store: ViewStore, tenant: str, account_id: str) -> tuple[int, int]:
    blobs, _ = store.query_prefix(keys.account_pk(tenant, account_id), keys.DAY_PREFIX)
    days = [DayActivity.from_dict(b.data) for b in blobs]
    return sum(d.count() for d in days), max((len(d.users) for d in days), default=0)


def test_a_busy_account_day_and_a_huge_account_stay_exact_and_bounded(ddb: Any, prefix: str) -> None:
    table = tables.ensure_view_table(ddb, prefix, VIEW_VERSION)
    writer = ViewWriter(ViewStore(ddb, table, workers=8), ScoreModelStore(ddb, keys.control_table_name(prefix)))
    now = DAY + timedelta(hours=23)

    # 1. 200,000 events, one account, one event name, one UTC day; the users joined by group, the
    #    tracks carry no groupId (the usual Segment pattern).
    n_events = int(200_000 * SCALE)
    users = [f"u{i}" for i in range(50)]
    busy = [ev(f"g-{u}", "group", DAY, userId=u, groupId="busy") for u in users]
    busy += [ev(f"e{i}", "track", DAY + timedelta(seconds=i * 86_000 // n_events), userId=users[i % 50],
                event="Report Viewed") for i in range(n_events)]
    started = time.monotonic()
    busy_batches = batches("t-busy", busy)
    per_batch: list[float] = []
    units = run(writer, "t-busy", busy_batches, now, per_batch)
    busy_seconds = time.monotonic() - started
    total, active = account_total(writer.store, "t-busy", "busy")
    assert (total, active) == (n_events, 50)
    # Linear cost: the last full batch of the day costs what the second did (no item grows with the day).
    full = per_batch[1:-1] or per_batch
    assert max(full) <= 1.25 * min(full), per_batch
    # The mapping re-delivers the last batch, whole and bisected: nothing is added, nothing written.
    last = busy_batches[-1]
    assert run(writer, "t-busy", [last, last[: len(last) // 2], last[len(last) // 2:]], now) == 0
    assert account_total(writer.store, "t-busy", "busy") == (n_events, 50)

    # 2. An account with 50,000 users: each joins by group and uses the product once.
    n_users = int(50_000 * SCALE)
    crowd: list[Event] = []
    for i in range(n_users):
        crowd.append(ev(f"cg{i}", "group", DAY, userId=f"m{i}", groupId="crowd"))
        crowd.append(ev(f"ct{i}", "track", DAY + timedelta(seconds=i % 80_000), userId=f"m{i}", event="Login"))
    started = time.monotonic()
    crowd_units = run(writer, "t-crowd", batches("t-crowd", crowd), now)
    crowd_seconds = time.monotonic() - started
    total, active = account_total(writer.store, "t-crowd", "crowd")
    assert total == n_users
    assert abs(active - n_users) <= max(1, n_users * 0.1)  # HyperLogLog above 128 users (4.6% standard error)
    members = writer.store.get_plain([(keys.account_pk("t-crowd", "crowd"), keys.MEMBERS_SK)])
    assert members[(keys.account_pk("t-crowd", "crowd"), keys.MEMBERS_SK)]["n"] == n_users
    summary = writer.store.get_many([(keys.account_pk("t-crowd", "crowd"), keys.SUMMARY_SK)])
    assert summary[(keys.account_pk("t-crowd", "crowd"), keys.SUMMARY_SK)].attrs["users_count"] == n_users

    sizes = max_sizes(ddb, table)
    print(f"\nbusy: {n_events} events {busy_seconds:.1f}s {units:.0f} WU ({units / n_events:.3f}/event, per batch "
          f"{min(full):.3f}-{max(full):.3f}); "
          f"crowd: {len(crowd)} events {crowd_seconds:.1f}s {crowd_units:.0f} WU; largest items (bytes): {sizes}")
    for kind, size in sizes.items():
        assert size <= BOUND_BYTES[kind], (kind, size)
        assert size <= TYPICAL_BYTES, (kind, size)
