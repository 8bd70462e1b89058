"""View item codecs shared by the writer (stream side) and the query API: how folded states are
stored in, and assembled back from, the view table's items.

Items per account (view version 2): ``HEAD`` (traits, first/last seen, event spans), ``DAY#<day>``
(counters, distinct-user sketch, ring of applied chunks), ``MEMBERS`` (user link count),
``TL#<day>`` (timeline), ``SUMMARY`` (score, band, trend, factors, listing-index keys). Per user:
``HEAD`` plus a ``USER#<user>`` link in each of its accounts. Per tenant: the catalog.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from chalicelib import keys, pages
from chalicelib.views import Blob, ViewStore
from projections import account, catalog, user
from projections.account import AccountState, DayActivity
from projections.events import FrozenMap, format_ts, thaw
from projections.folds import Fold
from projections.health import HealthScore

__all__ = ["MAX_TRAITS_JSON", "cap_json",
           "account_head_dict", "assemble_account", "load_account", "load_catalog", "pending_for", "seats",
           "summary_attrs", "user_link"]


def account_head_dict(state: AccountState) -> dict[str, Any]:
    d = state.to_dict()
    d.pop("days")
    return d


def assemble_account(head: dict[str, Any] | None, account_id: str, days: dict[str, dict[str, Any]]) -> AccountState:
    base = dict(head or {"account_id": account_id})
    base["days"] = days
    # merge() with an empty state re-applies the retention cut, exactly as the pure fold does.
    return account.merge(AccountState.from_dict(base), account.empty(account_id))


def pending_for(store: ViewStore, tenant_id: str, account_id: str, *, consistent: bool = False,
                fold: Fold | None = None) -> pages.Derived:
    """What the account's bucket's pending delta pages add to it (``chalicelib.pages``): one Query. ``fold``:
    the fold of the version read (default: that of :data:`chalicelib.versions.VIEW_VERSION`)."""
    bucket = pages.bucket_of(account_id)
    found = pages.pending_pages(store, tenant_id, [bucket], consistent=consistent)[bucket]
    # An account's read needs the pages' account parts only: users=set() skips decoding every user's days.
    return pages.derive(tenant_id, found, accounts={account_id}, users=set(), fold=fold)


def merge_days(pk: str, day_blobs: dict[str, Blob], pending: pages.Derived | None) -> dict[str, dict[str, Any]]:
    """Day items as reads see them: stored counters plus the pending contributions not yet in their ring."""
    days = {d: b.data for d, b in day_blobs.items() if b.data is not None}
    for (kpk, sk), per in (pending.account_days.items() if pending else ()):
        if kpk != pk:
            continue
        day = sk[len(keys.DAY_PREFIX):]
        blob = day_blobs.get(day)
        stored = DayActivity.from_dict(blob.data) if blob is not None and blob.data else None
        ring = str(blob.attrs.get("ring") or "") if blob is not None else ""
        also = pending.account_seen.get((kpk, sk), set()) if pending else set()
        days[day] = pages.merge_counters(stored, ring, per, also, DayActivity).to_dict()
    return days


def load_account(store: ViewStore, tenant_id: str, account_id: str, head: Blob | None = None,
                 day_blobs: list[Blob] | None = None, pending: pages.Derived | None = None,
                 ) -> tuple[AccountState, Blob, dict[str, Blob]]:
    """The full stored state of an account, with the blobs it was built from (``head`` and ``day_blobs``:
    already read); ``pending``: delta pages not yet settled, merged in (what the API serves)."""
    pk = keys.account_pk(tenant_id, account_id)
    if head is None:
        head = store.get_many([(pk, keys.HEAD_SK)])[(pk, keys.HEAD_SK)]
    if day_blobs is None:
        day_blobs, _ = store.query_prefix(pk, keys.DAY_PREFIX)
    days = {b.sk[len(keys.DAY_PREFIX):]: b for b in day_blobs}
    state = assemble_account(head.data, account_id, merge_days(pk, days, pending))
    extra = pending.heads.get(account_id) if pending else None
    if extra is not None:
        state = account.merge(state, AccountState(account_id, extra.traits, extra.first_seen, extra.last_seen,
                                                  frozenset(), FrozenMap(), extra.event_spans))
    return state, head, days


def seats(state: AccountState) -> int | None:
    seats = state.trait("seats")
    if isinstance(seats, bool) or not isinstance(seats, (int, float)) or seats < 1:
        return None
    return int(seats)


MAX_TRAITS_JSON = 8 * 1024
"""Traits JSON stored on SUMMARY and user links is at most this many characters (see :func:`cap_json`)."""


def cap_json(traits: dict[str, Any], limit: int = MAX_TRAITS_JSON) -> str:
    """JSON of ``traits`` with at most ``limit`` characters: whole traits in key order while they fit."""
    out: dict[str, Any] = {}
    size = 2
    for k in sorted(traits):
        piece = len(json.dumps({k: traits[k]}, default=str)) - 1
        if size + piece > limit:
            break
        out[k] = traits[k]
        size += piece
    return json.dumps(out, sort_keys=True, default=str)


def summary_attrs(tenant_id: str, state: AccountState, hs: HealthScore, as_of: datetime, *,
                  users_count: int | None = None) -> dict[str, Any]:
    """Attributes of an account's SUMMARY item (listing indexes, score, why).

    ``users_count`` is the account's ``MEMBERS`` counter (view version 2 keeps no user set in HEAD).
    """
    counts = account.active_user_counts(state, as_of, (1, 7, 30))
    traits = {k: thaw(v.value) for k, v in state.traits.items()}
    last_seen = format_ts(state.last_seen) if state.last_seen else None
    name = state.name or state.account_id
    plan = traits.get("plan")
    return {
        "gpk": keys.accounts_gpk(tenant_id),
        "score_sk": keys.score_sk(hs.score, state.account_id),
        "seen_sk": keys.seen_sk(last_seen, state.account_id),
        "active_sk": keys.active_sk(counts[30], state.account_id),
        "name_sk": keys.name_sk(name, state.account_id),
        "account_id": state.account_id,
        "name": name,
        "plan": plan if isinstance(plan, str) else None,
        "traits_json": cap_json(traits),
        "first_seen": format_ts(state.first_seen) if state.first_seen else None,
        "last_seen": last_seen,
        "users_count": len(state.users) if users_count is None else users_count,
        "active_1d": counts[1],
        "active_7d": counts[7],
        "active_30d": counts[30],
        "score": hs.score,
        "band": hs.band,
        "trend": hs.trend,
        "model_version": hs.model_version,
        "health_json": json.dumps({**hs.to_dict(), "as_of": None}, sort_keys=True),
    }


def load_catalog(store: ViewStore, tenant_id: str) -> catalog.CatalogState:
    """The tenant's catalog assembled from its head and per-day items (retention re-applied)."""
    pk = keys.catalog_pk(tenant_id)
    heads, _ = store.query_prefix(pk, keys.CATALOG_NAME_PREFIX)
    days, _ = store.query_prefix(pk, keys.DAY_PREFIX)
    entries: dict[str, dict[str, Any]] = {}
    for b in heads:
        data = dict(b.data)
        entries[data.pop("name")] = data
    for b in days:
        day, name = b.sk[len(keys.DAY_PREFIX):].split("#", 1)
        # version 2: a counter item; version 1 (read during an upgrade): the day's digest list.
        count = len(b.data) if isinstance(b.data, list) else account.DayActivity.from_dict(b.data).count()
        entries.setdefault(name, {}).setdefault("days", {})[day] = count
    state = catalog.CatalogState.from_dict({"entries": {n: e for n, e in entries.items() if "first_seen" in e}})
    return catalog.merge(state, catalog.empty())


def user_link(state: user.UserState) -> dict[str, Any]:
    traits = {k: thaw(v.value) for k, v in state.traits.items()}
    return {
        "user_id": state.user_key,
        "name": traits.get("name") if isinstance(traits.get("name"), str) else None,
        "email": traits.get("email") if isinstance(traits.get("email"), str) else None,
        "traits_json": cap_json(traits),
        "first_seen": format_ts(state.first_seen) if state.first_seen else None,
    }
