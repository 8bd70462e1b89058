"""Delta pages on DynamoDB Local: spread traffic packed per bucket of accounts, reads that merge pending pages,
settles that change nothing a user sees, and exactly-once counting across re-delivered, bisected and settled
batches (``chalicelib.pages``, ``streams.writer.ViewWriter.settle``)."""

from __future__ import annotations

import itertools
import json
import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import db, keys, pages, tables, versions
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.query import QueryService
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from projections.events import Event
from projections.folds import fold_for
from projections.usage import attribute
from streams import replay
from streams.handler import handle_batch
from streams.writer import ViewWriter
from tests.functional.test_projection_v2 import expected_heads, merged_view, view_heads, view_usage
from tooling.bench import _wait_records

pytestmark = pytest.mark.timeout(300)

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
_ids = itertools.count()


def ev(mid: str, kind: str, at: datetime = T0, **fields: Any) -> Event:
    stamp = at.isoformat().replace("+00:00", "Z")
    return Event.from_wire({"messageId": mid, "type": kind, "timestamp": stamp, "originalTimestamp": stamp, **fields})


@pytest.fixture
def store(ddb: Any, prefix: str) -> ViewStore:
    return ViewStore(ddb, tables.ensure_view_table(ddb, prefix, VIEW_VERSION))


def pending_writer(store: ViewStore, prefix: str) -> ViewWriter:
    """The live projector's mode with the production settle policy, far from any settle here."""
    return ViewWriter(store, ScoreModelStore(store.client, keys.control_table_name(prefix)), deferred=True,
                      settle_after=3600, settle_min_age=30)


def page_items(store: ViewStore, tenant: str) -> list[dict[str, Any]]:
    return [i for i in db.items(store.client, "scan", TableName=store.table, ConsistentRead=True)
            if i["pk"]["S"].startswith(f"{tenant}#P#") and i["sk"]["S"].startswith(keys.PAGE_PREFIX)]


def api_view(q: QueryService, tenant: str, accounts: list[str]) -> dict[str, Any]:
    """What a customer-success user reads about each account, through the query API's service."""
    out = {}
    for a in accounts:
        acct = q.get_account(tenant, a)
        score = q.account_score(tenant, a, {})
        out[a] = {"account": acct, "usage": q.account_usage(tenant, a, {"days": "7"}),
                  "timeline": q.account_timeline(tenant, a, {"limit": "100"}),
                  "users": q.account_users(tenant, a, {}),
                  "score": {k: v for k, v in score.items() if k != "as_of"}}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def membership_traffic(accounts: int, tracks_per_user: int, late: set[int] = frozenset()) -> tuple[list[Event],  # type: ignore[assignment]
                                                                                                     list[Event]]:
    """identify + group per account's one user; tracks without groupId. Accounts in ``late`` get their group
    call only after the tracks (retro attribution)."""
    first: list[Event] = []
    last: list[Event] = []
    for a in range(accounts):
        u = f"user-{a:04d}"
        first.append(ev(f"id-{u}", "identify", T0 - timedelta(hours=1), userId=u,
                        traits={"email": f"{u}@example.com", "name": u}))
        (last if a in late else first).append(ev(f"gr-{u}", "group", T0 - timedelta(hours=1), userId=u,
                                                 groupId=f"acct-{a:04d}", traits={"name": f"Account {a}",
                                                                                  "plan": "pro"}))
    tracks = [ev(f"t-{a}-{i}", "track", T0 + timedelta(minutes=7 * i + a % 5), userId=f"user-{a:04d}",
                 event=f"Feature {i % 3}") for i in range(tracks_per_user) for a in range(accounts)]
    return first + tracks, last


def test_reads_merge_pending_pages_and_a_settle_changes_nothing_a_user_sees(store: ViewStore, prefix: str) -> None:
    tenant = f"t-pages-{next(_ids)}"
    writer = pending_writer(store, prefix)
    early, late = membership_traffic(6, 4, late={1, 4})
    explicit = [ev("x-1", "track", T0 + timedelta(minutes=3), userId="user-0002", event="Exported",
                   groupId="acct-0003", context={"groupId": "acct-0003"})]
    batches = [early[:8], early[8:] + explicit, late]
    for n, batch in enumerate(batches):
        writer.record(None, NOW, chunks={tenant: [(f"c{n}-{i}", batch[i::2]) for i in range(2)]})
    everything = [e for b in batches for e in b]
    accounts = sorted({f"acct-{a:04d}" for a in range(6)})
    assert page_items(store, tenant), "nothing was deferred"
    # Nothing settled: no account item holds usage yet, and yet the reads serve every event.
    assert view_usage(store, tenant, set(accounts)) == {}
    assert merged_view(store, tenant, set(accounts)) == (attribute(everything),
                                                        expected_heads(everything, set(accounts)))
    q = QueryService(store, writer.models, clock=lambda: NOW)
    before = api_view(q, tenant, accounts)
    assert before["acct-0001"]["account"]["users_count"] == 1
    assert before["acct-0001"]["users"]["items"][0]["email"] == "user-0001@example.com"
    assert sum(before["acct-0001"]["usage"]["totals"]) == 4  # a late group: its tracks count all the same
    assert sum(before["acct-0003"]["usage"]["totals"]) == 5  # its user's 4 + one with context.groupId

    writer.settle(tenant, NOW, force=True)
    assert page_items(store, tenant) == []
    assert view_usage(store, tenant, set(accounts)) == attribute(everything)
    assert view_heads(store, tenant, set(accounts)) == expected_heads(everything, set(accounts))
    after = api_view(q, tenant, accounts)
    assert _diff(after, before) == []
    listed = q.list_accounts(tenant, {"sort": "name"})["items"]
    assert [a["account_id"] for a in listed] == accounts
    assert {a["account_id"]: a["score"] for a in listed} == {a: before[a]["score"]["score"] for a in accounts}


def test_each_batch_counts_once_whatever_is_redelivered_bisected_or_settled_between(store: ViewStore,
                                                                                     prefix: str) -> None:
    tenant = f"t-pages-{next(_ids)}"
    writer = pending_writer(store, prefix)
    early, late = membership_traffic(5, 3, late={2})
    chunks = [(f"c{i}", early[i::4]) for i in range(4)]
    writer.record(None, NOW, chunks={tenant: chunks})
    writer.record(None, NOW, chunks={tenant: chunks})  # re-delivered whole
    writer.record(None, NOW, chunks={tenant: chunks[2:]})  # bisected: the second half again
    writer.settle(tenant, NOW, force=True)
    writer.record(None, NOW, chunks={tenant: chunks[1:3]})  # after the settle: the rings remember
    writer.record(None, NOW, chunks={tenant: [("late", late)]})
    writer.record(None, NOW, chunks={tenant: chunks[3:]})  # and again, pending beside the retro
    everything = early + late
    accounts = {f"acct-{a:04d}" for a in range(5)}
    assert merged_view(store, tenant, accounts)[0] == attribute(everything)
    writer.settle(tenant, NOW, force=True)
    assert view_usage(store, tenant, accounts) == attribute(everything)
    assert view_heads(store, tenant, accounts) == expected_heads(everything, accounts)


def test_spread_batch_is_a_few_page_writes_not_one_write_per_account(store: ViewStore, prefix: str) -> None:
    """2,000 accounts, one user each joined by group, then tracks without groupId: the tracks' batch writes
    one page per bucket (and claim pages), well under a write unit per event, whatever the account count."""
    tenant = f"t-pages-{next(_ids)}"
    writer = pending_writer(store, prefix)
    early, _ = membership_traffic(2000, 2)
    identity = [e for e in early if not e.is_usage]
    usage = [e for e in early if e.is_usage]
    writer.record(None, NOW, chunks={tenant: [(f"id{i}", identity[i:i + 100]) for i in range(0, len(identity), 100)]})
    report = writer.record(None, NOW, chunks={tenant: [(f"t{i}", usage[i:i + 100]) for i in range(0, len(usage), 100)]})
    assert report.counted == 4000
    # Usage of known users: no per-account, per-user or user-day write in the batch.
    assert report.write_units / report.events < 0.5, report
    assert report.writes <= 2 * pages.PAGE_BUCKETS + 20, report
    sizes = [len(i["body"]["B"]) for i in page_items(store, tenant)]
    assert max(sizes) < 64 * 1024  # far from 400 KB: 2,000 accounts' 4,000 events over 64 buckets
    q = QueryService(store, writer.models, clock=lambda: NOW)
    assert sum(q.account_usage(tenant, "acct-1234", {"days": "2"})["totals"]) == 2
    writer.settle(tenant, NOW, force=True)
    assert sum(q.account_usage(tenant, "acct-1234", {"days": "2"})["totals"]) == 2
    expected = attribute(early)
    assert view_usage(store, tenant, {"acct-0000", "acct-1999"}) == {a: expected[a] for a in ("acct-0000", "acct-1999")}


def test_a_bucket_settles_on_its_own_when_due(store: ViewStore, prefix: str) -> None:
    """Settling is the projector's own job: a bucket whose oldest page passed ``settle_after`` (or that holds
    an account new to the listing) is settled by a later batch that touches it; younger pages wait."""
    tenant = f"t-pages-{next(_ids)}"
    writer = ViewWriter(store, ScoreModelStore(store.client, keys.control_table_name(prefix)), deferred=True,
                        settle_after=600, settle_min_age=30)
    early, _ = membership_traffic(3, 2)
    writer.record(None, NOW, chunks={tenant: [("c0", early)]})
    # group calls named new accounts: due now, but its pages are younger than the minimum age
    assert page_items(store, tenant)
    writer.record(None, NOW + timedelta(seconds=31), chunks={tenant: [("c1", [ev("t-x", "track", T0,
                                                                                 userId="user-0000",
                                                                                 event="Later")])]})
    # the bucket of user-0000 / acct-0000 was touched and is due (new account): its ripe page settled
    q = QueryService(store, writer.models, clock=lambda: NOW)
    assert "acct-0000" in [a["account_id"] for a in q.list_accounts(tenant, {"sort": "name"})["items"]]
    writer.record(None, NOW + timedelta(seconds=700), chunks={tenant: [("c2", [ev("t-y", "track", T0,
                                                                                  userId="user-0001",
                                                                                  event="Later")])]})
    writer.settle(tenant, NOW + timedelta(seconds=2000))  # the hourly pass settles every old page
    assert page_items(store, tenant) == []
    assert view_usage(store, tenant, {"acct-0000", "acct-0001", "acct-0002"}) == attribute(
        early + [ev("t-x", "track", T0, userId="user-0000", event="Later"),
                 ev("t-y", "track", T0, userId="user-0001", event="Later")])


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON documents differ (readable failures)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_the_settler_schedule_settles_due_buckets_and_nothing_else(store: ViewStore, prefix: str) -> None:
    """The live projector settles nothing inline (a settle never holds up a shard); the settler schedule
    (``settle_due``, every minute on AWS) settles the buckets whose counters say they are due."""
    tenant = f"t-pages-{next(_ids)}"
    writer = ViewWriter(store, ScoreModelStore(store.client, keys.control_table_name(prefix)), deferred=True,
                        settle_after=600, settle_min_age=30, settle_inline=0)
    early, _ = membership_traffic(3, 2)
    writer.record(None, NOW, chunks={tenant: [("c0", early)]})
    assert writer.due_buckets(tenant, NOW) == []  # new accounts, but their pages are younger than 30 s
    due = writer.due_buckets(tenant, NOW + timedelta(seconds=31))
    assert due == sorted({pages.bucket_of(f"acct-{a:04d}") for a in range(3)})
    assert writer.settle_due(tenant, NOW + timedelta(seconds=31)) == len(due)
    q = QueryService(store, writer.models, clock=lambda: NOW)
    assert [a["account_id"] for a in q.list_accounts(tenant, {"sort": "name"})["items"]] == [
        f"acct-{a:04d}" for a in range(3)]
    writer.record(None, NOW + timedelta(seconds=60), chunks={tenant: [("c1", [ev("t-z", "track", T0,
                                                                                 userId="user-0002",
                                                                                 event="Later")])]})
    assert writer.due_buckets(tenant, NOW + timedelta(seconds=100)) == []  # a known account: by age only
    assert writer.due_buckets(tenant, NOW + timedelta(seconds=661)) != []
    writer.settle_due(tenant, NOW + timedelta(seconds=661))
    assert page_items(store, tenant) == [] or all(
        int(p["at"]["N"]) > (NOW + timedelta(seconds=631)).timestamp() for p in page_items(store, tenant))


def test_a_settler_run_is_bounded_and_a_new_account_stays_due_until_settled(store: ViewStore, prefix: str) -> None:
    """The settler settles due buckets one at a time, new accounts' first, and stops at its budget (the rest is
    due on the next run). A bucket due for a new account stays due until its settle has written; pages too young
    to be settled then keep it due until they may be (they may name new accounts too: the listing shows them
    after ~30 s, not at the age rule's 10 min)."""
    tenant = f"t-pages-{next(_ids)}"
    writer = ViewWriter(store, ScoreModelStore(store.client, keys.control_table_name(prefix)), deferred=True,
                        settle_after=600, settle_min_age=30, settle_inline=0)
    # Two accounts of one bucket: the first joins at NOW, the second 20 s later.
    same = [a for a in (f"acct-b{i}" for i in range(400)) if pages.bucket_of(a) == pages.bucket_of("acct-b0")][:2]
    other = next(a for a in (f"acct-o{i}" for i in range(400)) if pages.bucket_of(a) != pages.bucket_of(same[0]))

    def join(a: str) -> list[Event]:
        return [ev(f"id-{a}", "identify", T0, userId=f"u-{a}"),
                ev(f"gr-{a}", "group", T0, userId=f"u-{a}", groupId=a, traits={"name": a})]

    writer.record(None, NOW, chunks={tenant: [("c0", join(same[0]) + join(other))]})
    writer.record(None, NOW + timedelta(seconds=20), chunks={tenant: [("c1", join(same[1]))]})
    at = NOW + timedelta(seconds=31)
    assert len(writer.due_buckets(tenant, at)) == 2
    assert writer.settle_due(tenant, at, budget_seconds=0) == 1  # the budget: one bucket, then the next run
    assert len(writer.due_buckets(tenant, at)) == 1
    assert writer.settle_due(tenant, at, budget_seconds=0) == 1
    # The bucket of `same` kept a page too young at 31 s: due again once it may be settled, not at 10 min.
    assert writer.due_buckets(tenant, at) == []
    assert writer.due_buckets(tenant, NOW + timedelta(seconds=51)) == [pages.bucket_of(same[1])]
    assert writer.settle_due(tenant, NOW + timedelta(seconds=51)) == 1
    assert writer.due_buckets(tenant, NOW + timedelta(seconds=700)) == []
    q = QueryService(store, writer.models, clock=lambda: NOW)
    assert sorted(a["account_id"] for a in q.list_accounts(tenant, {"sort": "name"})["items"]) == sorted(
        [*same, other])


SPREAD_ACCOUNTS = int(os.environ.get("STREAMFOLD_SPREAD_ACCOUNTS", "1000"))
"""10,000 is the full size (`STREAMFOLD_SPREAD_ACCOUNTS=10000`); the suite runs 1,000 (about 1.5 min here)."""


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("version", [VIEW_VERSION, 3], ids=lambda v: f"fold{fold_for(v).version}")
def test_replay_equals_live_at_spread_whatever_the_arrival_order(ddb: Any, prefix: str, tenant: dict[str, str],
                                                                  version: int, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The full-size functional test of issue 17: 10,000 accounts, one user each (identify + group), one
    track each without groupId, sent in an order where about a third of the users' tracks arrive before
    their group call. Live: the stream records, in 100-record batches, through the projector's own handler
    in its production mode (delta pages, the production settle policy). Replay: the day tables in key order
    into another version. Every item equal, and ``compare`` says the same fold code built both. Parametrised over
    the fold: the live version ``version`` written with ``fold_for(version)`` (3: each name's users per day), the
    replay into ``version + 1`` and ``compare``'s settles with the default fold, made the same here (the
    default is ``chalicelib.versions.VIEW_VERSION``'s fold)."""
    monkeypatch.setattr(versions, "VIEW_VERSION", version)
    # The replay's table is version + 1, which fold_for gives the newest fold: it is built (and settled by
    # compare) with the live version's fold here, as the same fold code must build both.
    monkeypatch.setattr(replay, "fold_for", lambda _v: fold_for(version))
    tables.ensure_view_table(ddb, prefix, version)
    tid = tenant["tenant_id"]
    now = datetime.now(UTC)
    rng = random.Random(17)
    t0 = now - timedelta(hours=2)
    stamp = lambda t: t.isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    msgs: list[dict[str, Any]] = []
    for a in range(SPREAD_ACCOUNTS):
        u = f"user-{a:05d}"
        ident = [{"type": "identify", "messageId": f"id-{u}", "userId": u, "timestamp": stamp(t0),
                  "traits": {"email": f"{u}@example.com"}},
                 {"type": "group", "messageId": f"gr-{u}", "userId": u, "groupId": f"acct-{a:05d}",
                  "timestamp": stamp(t0), "traits": {"name": f"Account {a}", "plan": "pro"}}]
        track = [{"type": "track", "messageId": f"tr-{u}", "userId": u, "event": rng.choice(["A", "B", "C"]),
                  "timestamp": stamp(t0 + timedelta(seconds=rng.randrange(3600)))}]
        msgs += [(rng.random(), track + ident if a % 3 == 0 else ident + track)]  # type: ignore[list-item]
    ordered = [m for _, pair in sorted(msgs, key=lambda x: x[0]) for m in pair]  # type: ignore[misc]
    ing = Ingestor(ddb, prefix)
    for i in range(0, len(ordered), 100):
        ing.ingest(tid, parse_request({"batch": ordered[i:i + 100]}, "batch"))
    table = keys.events_table_name(prefix, now)
    records = _wait_records(ddb, db.get_streams_client(), table, (len(ordered) + 99) // 100)

    live = ViewWriter(ViewStore(ddb, keys.view_table_name(prefix, version)),
                      ScoreModelStore(ddb, keys.control_table_name(prefix)), deferred=True, fold=fold_for(version))
    for i in range(0, len(records), 100):
        response, _ = handle_batch(records[i:i + 100], writer=live, now=now)
        assert not response.get("batchItemFailures")
    # What users read before any settle: every account's track already counted.
    q = QueryService(live.store, live.models, clock=lambda: now)
    for a in rng.sample(range(SPREAD_ACCOUNTS), 20):
        assert sum(q.account_usage(tid, f"acct-{a:05d}", {"days": "2"})["totals"]) == 1

    replay.rebuild(ddb, prefix, version + 1, now=now)
    cmp = replay.compare(ddb, prefix, version, version + 1)
    assert cmp.same_code and cmp.equal, cmp.to_dict()
    assert cmp.codes_a == [fold_for(version).code]
    assert cmp.items_a > 5 * SPREAD_ACCOUNTS
    # Fold 3 kept each name's users on every account-day, fold 2 none.
    day_bodies = [ViewStore._blob(i).data
                  for i in db.items(ddb, "scan", TableName=keys.view_table_name(prefix, version))
                  if "#A#" in i["pk"]["S"] and i["sk"]["S"].startswith(keys.DAY_PREFIX)]
    assert day_bodies and all(("names" in b) == fold_for(version).name_users for b in day_bodies)


def test_a_bucket_is_due_by_its_pending_bytes_not_by_a_count_of_small_pages(store: ViewStore, prefix: str) -> None:
    """At spread every batch writes a page in every bucket: a bound on the *number* of pages (64 until 2026-12-07)
    settled every account every 64 batches whatever the rate, so a quiet tenant paid a settle per account every
    5 minutes. The bound is the pending pages' stored bytes (``SETTLE_BYTES``, what a read merges), counted in
    ``META`` (``nb``) as pages are written and taken off as a settle takes them; the page count only caps items."""
    tenant = f"t-pages-{next(_ids)}"
    writer = ViewWriter(store, ScoreModelStore(store.client, keys.control_table_name(prefix)), deferred=True,
                        settle_after=600, settle_min_age=30, settle_inline=0)
    assert writer.settle_pages > 64 and writer.settle_bytes == 512 * 1024
    setup, _ = membership_traffic(1, 0)
    writer.record(None, T0, chunks={tenant: [("c-setup", setup)]})
    writer.settle(tenant, T0, force=True)
    bucket = pages.bucket_of("acct-0000")
    meta_key = (keys.page_pk(tenant, bucket), keys.PAGE_META_SK)
    assert writer.store.get_plain([meta_key])[meta_key].get("nb", 0) == 0  # all taken
    for i in range(70):  # 70 small batches of one track each, a minute of the tenant's time apart from the first
        at = T0 + timedelta(seconds=i)
        writer.record(None, at, chunks={tenant: [(f"c-{i}", [ev(f"t-b-{i}", "track", at, userId="user-0000",
                                                                 event="Small")])]})
    meta = writer.store.get_plain([meta_key])[meta_key]
    stored = [p for p in page_items(store, tenant) if p["pk"]["S"] == meta_key[0]]
    assert int(meta["n"]) == len(stored) == 70
    assert int(meta["nb"]) == sum(int(p["nb"]["N"]) for p in stored) == sum(len(p["body"]["B"]) for p in stored)
    # 70 pages of a few hundred bytes: not due (the count bound used to make it due at 64), until the age rule
    assert writer.due_buckets(tenant, T0 + timedelta(seconds=120)) == []  # (the user's bucket neither)
    assert bucket in writer.due_buckets(tenant, T0 + timedelta(seconds=601))
    # The same pages against a byte bound they pass: due at once (as many bytes as a read should merge).
    small = ViewWriter(writer.store, writer.models, deferred=True, settle_after=600, settle_min_age=30,
                       settle_inline=0, settle_bytes=int(meta["nb"]))
    assert bucket in small.due_buckets(tenant, T0 + timedelta(seconds=120))
    # A settle takes what it settles off the count and the bytes; pages younger than the minimum age stay counted.
    small.settle(tenant, T0 + timedelta(seconds=60), buckets=[bucket])
    left = [p for p in page_items(store, tenant) if p["pk"]["S"] == meta_key[0]]
    meta = writer.store.get_plain([meta_key])[meta_key]
    assert 0 < len(left) < 70 and int(meta["n"]) == len(left)
    assert int(meta["nb"]) == sum(int(p["nb"]["N"]) for p in left)
    q = QueryService(store, writer.models, clock=lambda: NOW)
    assert sum(q.account_usage(tenant, "acct-0000", {"days": "2"})["totals"]) == 70  # settled or pending: all


def test_a_page_cache_reads_what_pending_pages_reads_and_fetches_each_page_once(store: ViewStore,
                                                                               prefix: str) -> None:
    """The probe watcher's (and any long-lived reader's) cache: the same pages, in the same order, as a plain read
    of the table, whatever was written or settled in between; a page already seen is not fetched again."""
    tenant = f"t-cache-{next(_ids)}"
    writer = pending_writer(store, prefix)
    cache = pages.PageCache()
    early, _ = membership_traffic(40, 3)
    buckets = sorted({pages.bucket_of(f"acct-{a:04d}") for a in range(40)} | {
        pages.bucket_of(f"user-{a:04d}") for a in range(40)})

    def same() -> int:
        plain = pages.pending_pages(store, tenant, buckets)
        cached = cache.pending(store, tenant, buckets)
        assert {b: [(p.sk, p.data) for p in ps] for b, ps in cached.items()} == {
            b: [(p.sk, p.data) for p in ps] for b, ps in plain.items()}
        return sum(len(ps) for ps in plain.values())

    assert same() == 0
    for n in range(3):
        before = len(page_items(store, tenant))
        writer.record(None, NOW, chunks={tenant: [(f"c{n}-{i}", early[n::3][i::2]) for i in range(2)]})
        new_pages = len(page_items(store, tenant)) - before
        assert new_pages > 0
        fetched = cache.fetched
        assert same() == before + new_pages
        assert cache.fetched - fetched == new_pages  # only the batch's own pages
        assert same() == before + new_pages and cache.fetched - fetched == new_pages  # a second look: none
    written = len(page_items(store, tenant))
    assert cache.fetched == written  # each page fetched once over the three batches and six looks
    # A settle takes the pages: the cache serves none of them, and forgets them.
    writer.settle(tenant, NOW, force=True)
    assert same() == 0
    assert not cache._pages
    # Accounts read through the cache see what the API sees.
    writer.record(None, NOW, chunks={tenant: [("c9", [ev("t-late", "track", T0, userId="user-0007",
                                                          event="Late")])]})
    assert same() > 0
