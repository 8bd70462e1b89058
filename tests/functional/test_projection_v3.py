"""View version 3's fold on DynamoDB Local: the same events through a version 2 writer and a version 3 writer into
two tables. Every item the same but for the per-name users fold 3 adds to account-days (and the score factor that
reads them); the per-name users agree with the order-free reference; the API serves ``key_features_wau`` and the
``key_feature_wau`` factor on version 3 only."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib import db, keys, tables, versions
from chalicelib.query import QueryService
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.views import ViewStore
from projections.account import DayActivity
from projections.events import Event
from projections.folds import fold_for
from projections.usage import NameSketch, attributed_events
from streams.writer import ViewWriter
from tests.helpers.api import api_get

pytestmark = pytest.mark.timeout(300)

NOW = datetime.now(UTC).replace(microsecond=0)
KEY_FEATURES = ["Export", "Report Viewed"]


def ev(mid: str, kind: str, at: datetime, **fields: Any) -> Event:
    stamp = at.isoformat().replace("+00:00", "Z")
    return Event.from_wire({"messageId": mid, "type": kind, "timestamp": stamp, "originalTimestamp": stamp, **fields})


def population() -> list[list[tuple[str, list[Event]]]]:
    """Batches of chunks: groups before and after their users' tracks (retro attribution), an alias merging an
    anonymous history, ``context.groupId`` tracks, re-sends, several days and names."""
    d = [NOW - timedelta(days=i, hours=1) for i in range(4)]
    early = [ev(f"t{i}", "track", d[i % 4], userId=f"u{i % 4}", event=["Export", "Report Viewed", "Other"][i % 3])
             for i in range(12)]
    anon = [ev(f"a{i}", "track", d[1], anonymousId="anon-1", event="Export") for i in range(2)]
    groups = [ev(f"g{u}", "group", d[3], userId=f"u{u}", groupId="acme" if u < 3 else "globex",
                 traits={"name": "Acme" if u < 3 else "Globex"}) for u in range(4)]
    alias = [ev("al", "alias", d[0], userId="u0", previousId="anon-1")]
    explicit = [ev(f"x{i}", "track", d[0], userId="u5", event="Export", groupId="acme", context={"groupId": "acme"})
                for i in range(2)]
    late = [ev(f"l{i}", "track", d[0], userId=f"u{i % 4}", event="Report Viewed") for i in range(4)]
    return [[("c1", early[:6]), ("c2", anon)], [("c3", groups[:2])], [("c4", early[6:] + early[:2])],
            [("c5", alias + groups[2:]), ("c6", explicit)], [("c7", late)]]


def scan(store: ViewStore) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for raw in db.items(store.client, "scan", TableName=store.table, ConsistentRead=True):
        b = ViewStore._blob(raw)
        out[(b.pk, b.sk)] = {"data": b.data, **{k: v for k, v in b.attrs.items() if k not in ("ttl", "at", "seq")}}
    return out


def without_v3(item: dict[str, Any]) -> dict[str, Any]:
    """An item as fold 2 would have written it: no per-name users, no ``key_feature_wau`` contribution."""
    item = json.loads(json.dumps(item, default=str))
    if isinstance(item.get("data"), dict):
        item["data"].pop("names", None)
    if "health_json" in item:
        health = json.loads(item["health_json"])
        health["factors"] = [f for f in health["factors"] if f["name"] != "key_feature_wau"]
        item["health_json"] = json.dumps(health, sort_keys=True)
    return item


@pytest.fixture
def writers(ddb: Any, prefix: str) -> tuple[ViewWriter, ViewWriter]:
    models = ScoreModelStore(ddb, keys.control_table_name(prefix))
    return tuple(ViewWriter(ViewStore(ddb, tables.ensure_view_table(ddb, prefix, v)), models, fold=fold_for(v))
                 for v in (2, 3))  # type: ignore[return-value]


@pytest.mark.parametrize("mode", ["direct", "pages"])
def test_same_events_through_a_v2_and_a_v3_writer(writers: tuple[ViewWriter, ViewWriter], mode: str) -> None:
    """Counts, users, heads, timelines, links, catalog, claims: the same items; fold 3 adds per-name users that
    agree with the reference. Without key features the scores are the same (the factor is not applicable)."""
    tenant = f"t-v3-{mode}"
    batches = population()
    for w in writers:
        if mode == "pages":  # the live projector's mode: delta pages, settled at the end
            w = ViewWriter(w.store, w.models, deferred=True, settle_after=1e9, settle_pages=10**6, fold=w.fold)
        for batch in batches:
            w.record(None, NOW, chunks={tenant: batch})
        if mode == "pages":
            w.settle(tenant, NOW, force=True)
    v2, v3 = (scan(w.store) for w in writers)
    meta = (keys.META_PK, keys.FOLD_CODE_SK)
    assert v2.pop(meta)["codes"] == [fold_for(2).code] and v3.pop(meta)["codes"] == [fold_for(3).code]
    claims = lambda items: {k for k in items if "#M#" in k[0]}  # noqa: E731  (claim pages name their batch)
    assert len(claims(v2)) == len(claims(v3))
    v2 = {k: without_v3(v) for k, v in v2.items() if k not in claims(v2)}
    v3_plain = {k: without_v3(v) for k, v in v3.items() if k not in claims(v3)}
    assert v3_plain == v2
    # Fold 3's per-name users: the reference's distinct users per (account, day, name).
    expected: dict[tuple[str, str, str], set[str]] = {}
    everything = [e for batch in batches for _, evs in batch for e in evs]
    for e in attributed_events(everything):
        if e.is_usage and e.user_id:
            expected.setdefault((e.group_id or "", e.day, e.catalog_name or ""), set()).add(e.user_id)
    got = {}
    for (pk, sk), item in v3.items():
        if "#A#" in pk and sk.startswith(keys.DAY_PREFIX):
            day = DayActivity.from_dict(item["data"])
            for name, users in day.names.items():
                got[(pk.split("#A#", 1)[1], sk[len(keys.DAY_PREFIX):], name)] = users
    assert got == {k: NameSketch.of(v) for k, v in expected.items()}
    assert {k[0] for k in got} == {"acme", "globex"}


def test_the_api_serves_key_feature_wau_on_version_3_only(writers: tuple[ViewWriter, ViewWriter], ddb: Any,
                                                          prefix: str, server: str, tenant: dict[str, str]) -> None:
    tid, token = tenant["tenant_id"], tenant["api_token"]
    writers[0].models.put(tid, {"key_features": KEY_FEATURES})
    batches = population()
    for w in writers:
        for batch in batches:
            w.record(None, NOW, chunks={tid: batch})
    # Expected, from the reference: the week's users of each key feature, and of anything, for acme.
    week = {(NOW - timedelta(days=i)).date().isoformat() for i in range(7)}
    used: dict[str, set[str]] = {f: set() for f in KEY_FEATURES}
    active: set[str] = set()
    for e in attributed_events([e for b in batches for _, evs in b for e in evs]):
        if e.is_usage and e.group_id == "acme" and e.day in week and e.user_id:
            active.add(e.user_id)
            if e.catalog_name in used:
                used[e.catalog_name].add(e.user_id)
    wau = {f: len(u) for f, u in used.items()}
    share = sum(min(1.0, n / len(active)) for n in wau.values()) / len(KEY_FEATURES)
    assert 0 < share < 1

    # Version 2 serving: no per-feature users; the factor is listed, not applicable, and weighs nothing.
    detail = api_get(server, token, "/api/accounts/acme")
    assert detail.status_code == 200, detail.text
    assert detail.json()["key_features_wau"] is None
    score = api_get(server, token, "/api/accounts/acme/score").json()
    f = next(f for f in score["factors"] if f["name"] == "key_feature_wau")
    assert (f["applicable"], f["points"], f["raw"]) == (False, 0, None) and "version" in f["detail"]
    v2_score = score["score"]
    assert sum(x["points"] for x in score["factors"]) == v2_score

    # Version 3 promoted: served, and in the score.
    versions.set_active_view_version(ddb, keys.control_table_name(prefix), 3)
    versions.forget()
    detail = api_get(server, token, "/api/accounts/acme").json()
    assert detail["key_features_wau"] == wau
    score = api_get(server, token, "/api/accounts/acme/score").json()
    f = next(f for f in score["factors"] if f["name"] == "key_feature_wau")
    assert f["applicable"] and f["raw"] == pytest.approx(share) and f["label"] == "Key-feature weekly active users"
    assert f["detail"].endswith("use each key feature, on average")
    assert sum(x["points"] for x in score["factors"]) == score["score"]
    # The query service of a version reads it with that version's fold, pending pages included.
    q = QueryService(writers[1].store, writers[1].models)
    assert q.fold == fold_for(3) and QueryService(writers[0].store, writers[0].models).fold == fold_for(2)
