"""Fold a batch of events into the view table: coalesced, idempotent, conflict-safe writes.

For every tenant in a batch the events are folded in memory (pure folds from ``projections/``),
merged with the stored states, and each touched item is written at most once per batch, and
only if it changed. Because every state is a join-semilattice, a re-delivered batch merges to
exactly the stored state and writes nothing; a concurrent writer's work is never lost (see
:mod:`chalicelib.views`).

Items per account: ``HEAD`` (traits, users, first/last seen), ``DAY#<day>`` (daily rollups
with message digests, so a message is never counted twice), ``TL#<day>`` (timeline), and
``SUMMARY`` (score, band, trend, factors, listing-index keys). Per user: ``HEAD`` plus a
``USER#<user>`` link in each of its accounts. Per tenant: one catalog item per event name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib import keys
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.view_items import account_head_dict, assemble_account, load_account, seats, summary_attrs, user_link
from chalicelib.views import Blob, ConflictError, ViewStore, to_ddb
from projections import account, catalog, health, timeline, user
from projections.account import AccountState, DayActivity
from projections.events import Event, FrozenMap, format_ts
from projections.health import HealthScore, ScoreModel

__all__ = ["ViewWriter", "WriteReport"]


@dataclass
class WriteReport:
    events: int = 0
    accounts: int = 0
    users: int = 0
    alerts: int = 0
    write_units: float = 0.0
    writes: int = 0
    skipped: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)


# Summary attributes that are bookkeeping, not content: a change in these alone is not written.
_VOLATILE = {"as_of", "alerts"}


class ViewWriter:
    """Applies batches of events to one view table version.

    Args:
        store: the view table.
        models: per-tenant score models.
        outbox: where alerts are written (``streams.alerts.Outbox``); may be None.
        search: an indexer with ``index(tenant, accounts, users)`` (search projection); may be None.
    """

    def __init__(self, store: ViewStore, models: ScoreModelStore, outbox: Any = None, search: Any = None) -> None:
        self.store = store
        self.models = models
        self.outbox = outbox
        self.search = search

    def record(self, events_by_tenant: dict[str, list[Event]], now: datetime) -> WriteReport:
        stats = WriteReport()
        before = (self.store.stats.write_units, self.store.stats.writes, self.store.stats.skipped)
        for tenant_id, events in events_by_tenant.items():
            if not events:
                continue
            stats.events += len(events)
            stats.by_tenant[tenant_id] = len(events)
            accounts_written = self._accounts(tenant_id, events, now, stats)
            users_written = self._users(tenant_id, events)
            self._catalog(tenant_id, events)
            stats.accounts += len(accounts_written)
            stats.users += len(users_written)
            if self.search is not None and (accounts_written or users_written):
                self.search.index(tenant_id, accounts_written, users_written)
        stats.write_units = self.store.stats.write_units - before[0]
        stats.writes = self.store.stats.writes - before[1]
        stats.skipped = self.store.stats.skipped - before[2]
        return stats

    # --- accounts ----------------------------------------------------------------------------

    def _accounts(self, tenant_id: str, events: list[Event], now: datetime,
                  stats: WriteReport) -> dict[str, dict[str, Any]]:
        batch = account.fold_all(events)
        if not batch:
            return {}
        timelines = timeline.fold_all(events)
        model = self.models.current(tenant_id, cached=True)
        pks = {a: keys.account_pk(tenant_id, a) for a in batch}
        heads = self.store.get_many([(pk, keys.HEAD_SK) for pk in pks.values()] +
                                    [(pk, keys.SUMMARY_SK) for pk in pks.values()])
        tl_blobs = self.store.get_many([(pks[a], keys.timeline_sk(d)) for a, d in timelines])

        def one(account_id: str) -> tuple[str, dict[str, Any] | None, int]:
            pk = pks[account_id]
            new = batch[account_id]
            head = heads[(pk, keys.HEAD_SK)]
            self._write_head(pk, head, new)
            # The head read before the write is enough: the state we score is joined with `new` below.
            state, _, day_blobs = load_account(self.store, tenant_id, account_id, head)
            for day, activity in new.days.items():
                self._write_day(day_blobs.get(day) or Blob(pk, keys.day_sk(day)), activity)
            for (a, d), tl in timelines.items():
                if a == account_id:
                    self._write_timeline(tl_blobs[(pk, keys.timeline_sk(d))], tl)
            # The state for scoring: stored days joined with the batch (covers our own writes too).
            full = account.merge(state, new)
            summary, alerts = self._write_summary(tenant_id, full, model, now, heads[(pk, keys.SUMMARY_SK)])
            return account_id, summary, alerts

        written: dict[str, dict[str, Any]] = {}
        for account_id, summary, alerts in self.store.run(one, sorted(batch)):
            stats.alerts += alerts
            if summary is not None:
                written[account_id] = summary
        return written

    def _write_head(self, pk: str, blob: Blob, new: AccountState) -> None:
        def update(b: Blob) -> tuple[Any, None] | None:
            stored = assemble_account(b.data, new.account_id, {}) if b.data else account.empty(new.account_id)
            head_only = AccountState(new.account_id, new.traits, new.first_seen, new.last_seen, new.users,
                                     FrozenMap(), new.event_spans)
            merged = account.merge(stored, head_only)
            data = account_head_dict(merged)
            return None if b.data == data else (data, None)

        self.store.upsert((pk, keys.HEAD_SK), update, current=blob)

    def _write_day(self, blob: Blob, activity: DayActivity) -> bool:
        def update(b: Blob) -> tuple[Any, None] | None:
            stored = DayActivity.from_dict(b.data) if b.data else DayActivity()
            merged = stored.merge(activity)
            return None if merged == stored and b.data is not None else (merged.to_dict(), None)

        return self.store.upsert((blob.pk, blob.sk), update, current=blob) is not None

    def _write_timeline(self, blob: Blob, tl: timeline.TimelineBucket) -> None:
        def update(b: Blob) -> tuple[Any, None] | None:
            stored = (timeline.TimelineBucket.from_dict(b.data) if b.data
                      else timeline.TimelineBucket(tl.account_id, tl.bucket))
            merged = timeline.merge(stored, tl)
            return None if merged == stored and b.data is not None else (merged.to_dict(), None)

        self.store.upsert((blob.pk, blob.sk), update, current=blob)

    def _write_summary(self, tenant_id: str, state: AccountState, model: ScoreModel, now: datetime,
                       blob: Blob | None) -> tuple[dict[str, Any] | None, int]:
        """Score the account and write its SUMMARY (and an alert, atomically) if anything changed."""
        hs = health.score(state, model, now, seats(state))
        attrs = summary_attrs(tenant_id, state, hs, now)
        pk = keys.account_pk(tenant_id, state.account_id)
        return self.write_summary(tenant_id, pk, attrs, hs, model, now, blob)

    def write_summary(self, tenant_id: str, pk: str, attrs: dict[str, Any], hs: HealthScore, model: ScoreModel,
                      now: datetime, blob: Blob | None) -> tuple[dict[str, Any] | None, int]:
        for _ in range(8):
            if blob is None:
                blob = self.store.get_many([(pk, keys.SUMMARY_SK)])[(pk, keys.SUMMARY_SK)]
            stored = {k: v for k, v in blob.attrs.items() if k not in _VOLATILE}
            if blob.ver and stored == {k: v for k, v in attrs.items() if v is not None}:
                self.store.stats.add(skipped=1)
                return None, 0
            prev = None
            if blob.attrs.get("health_json"):
                prev = HealthScore.from_dict({**json.loads(blob.attrs["health_json"]), "as_of": format_ts(now)})
                if _never_active(prev):
                    # An account's first usage is not a change of health: a score computed before
                    # any activity (only identify/group calls seen) does not raise alerts.
                    prev = None
            alerts_sent: dict[str, str] = dict(blob.attrs.get("alerts") or {})
            last = max((datetime.fromisoformat(v.replace("Z", "+00:00")) for v in alerts_sent.values()), default=None)
            kind = health.band_change(prev, hs, model, last)
            new_attrs = {**attrs, "as_of": format_ts(now), "alerts": alerts_sent}
            try:
                if kind is not None and self.outbox is not None:
                    alert = self.outbox.alert(tenant_id, attrs, prev, hs, kind, now)
                    new_attrs["alerts"] = {**alerts_sent, kind: format_ts(now)}
                    self._put_with_alert(blob, new_attrs, alert)
                    return attrs, 1
                self.store.put(blob, None, new_attrs)
                return attrs, 0
            except ConflictError:
                blob = None
        raise ConflictError(f"summary {pk}: too many conflicting writes")

    def _put_with_alert(self, blob: Blob, attrs: dict[str, Any], alert_item: dict[str, Any]) -> None:
        item = to_ddb({"pk": blob.pk, "sk": blob.sk, "ver": blob.ver + 1, **attrs})
        cond = "attribute_not_exists(pk)" if blob.ver == 0 else "ver = :v"
        put: dict[str, Any] = {"TableName": self.store.table, "Item": item, "ConditionExpression": cond}
        if blob.ver:
            put["ExpressionAttributeValues"] = {":v": {"N": str(blob.ver)}}
        try:
            resp = self.store.client.transact_write_items(TransactItems=[
                {"Put": put},
                {"Put": {"TableName": self.outbox.table, "Item": alert_item,
                         "ConditionExpression": "attribute_not_exists(pk)"}},
            ], ReturnConsumedCapacity="TOTAL")
        except self.store.client.exceptions.TransactionCanceledException:
            raise ConflictError(blob.pk) from None
        self.store.stats.add(writes=2, write_units=sum(c.get("CapacityUnits", 0)
                                                       for c in resp.get("ConsumedCapacity", [])))

    # --- rescoring as time passes -------------------------------------------------------------

    def rescore(self, tenant_id: str, account_ids: Iterable[str], now: datetime) -> int:
        """Recompute scores of accounts (time passing changes recency); returns summaries written."""
        model = self.models.current(tenant_id)

        def one(account_id: str) -> int:
            state, head, _ = load_account(self.store, tenant_id, account_id)
            if head.ver == 0:
                return 0
            summary, _ = self._write_summary(tenant_id, state, model, now, None)
            return 0 if summary is None else 1

        return sum(self.store.run(one, list(account_ids)))

    # --- users -------------------------------------------------------------------------------

    def _users(self, tenant_id: str, events: list[Event]) -> dict[str, dict[str, Any]]:
        batch = user.fold_all(events)
        if not batch:
            return {}
        blobs = self.store.get_many([(keys.user_pk(tenant_id, u), keys.HEAD_SK) for u in batch])

        def one(user_key: str) -> tuple[str, dict[str, Any] | None]:
            new = batch[user_key]
            key = (keys.user_pk(tenant_id, user_key), keys.HEAD_SK)
            box: list[Any] = []

            def update(b: Blob) -> tuple[Any, dict[str, Any]] | None:
                stored = user.UserState.from_dict(b.data) if b.data else user.empty(user_key)
                merged = user.merge(stored, new)
                box[:] = [stored if b.data else None, merged]
                if merged == stored and b.data is not None:
                    return None
                # last_seen as a plain attribute: the users list reads it with a projection.
                return merged.to_dict(), {"last_seen": format_ts(merged.last_seen) if merged.last_seen else None}

            result = self.store.upsert(key, update, current=blobs[key])
            if result is None:
                return user_key, None
            stored, merged = box
            link = user_link(merged)
            # Links hold what rarely changes (traits, first seen): rewrite them only when that
            # changed or the user joined an account, not on every event of the user.
            unchanged = stored is not None and user_link(stored) == link
            for account_id in merged.accounts:
                if unchanged and account_id in stored.accounts:
                    continue
                self._write_link(keys.account_pk(tenant_id, account_id), keys.user_link_sk(user_key), link,
                                 result.ver)
            return user_key, {**link, "accounts": sorted(merged.accounts),
                              "last_seen": format_ts(merged.last_seen) if merged.last_seen else None}

        return {u: link for u, link in self.store.run(one, sorted(batch)) if link is not None}

    def _write_link(self, pk: str, sk: str, link: dict[str, Any], user_ver: int) -> None:
        item = to_ddb({"pk": pk, "sk": sk, "user_ver": user_ver, **link})
        try:
            resp = self.store.client.put_item(
                TableName=self.store.table, Item=item, ReturnConsumedCapacity="TOTAL",
                ConditionExpression="attribute_not_exists(pk) OR user_ver < :v",
                ExpressionAttributeValues={":v": {"N": str(user_ver)}})
            self.store.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        except self.store.client.exceptions.ConditionalCheckFailedException:
            pass  # a newer version of the user already wrote its link: nothing to do

    # --- catalog -------------------------------------------------------------------------------

    def _catalog(self, tenant_id: str, events: list[Event]) -> None:
        """One small head item per event name, and one digest item per (day, name) touched.

        Splitting by day keeps a live batch from rewriting a tenant's whole history of digests
        for a busy event name (DynamoDB charges a write unit per started KB of the item).
        """
        batch = catalog.fold_all(events)
        if not batch.entries:
            return
        pk = keys.catalog_pk(tenant_id)
        work: list[tuple[tuple[str, str], Any]] = []
        for name, entry in batch.entries.items():
            head = catalog.CatalogEntry(entry.first_seen, entry.last_seen, FrozenMap(), entry.properties)
            work.append(((pk, keys.catalog_name_sk(name)), ("head", name, head)))
            for day, digests in entry.days.items():
                work.append(((pk, keys.catalog_day_sk(day, name)), ("day", name, frozenset(digests))))
        blobs = self.store.get_many([k for k, _ in work])

        def one(job: tuple[tuple[str, str], Any]) -> None:
            key, (kind, name, new) = job

            def update(b: Blob) -> tuple[Any, None] | None:
                if kind == "day":
                    stored = frozenset(b.data or ())
                    merged = stored | new
                    return None if merged == stored and b.data is not None else (sorted(merged), None)
                old = catalog.CatalogEntry.from_dict(b.data) if b.data else None
                merged_entry = new if old is None else catalog.merge(
                    catalog.CatalogState(FrozenMap({name: old})), catalog.CatalogState(FrozenMap({name: new}))
                ).entries[name]
                return None if merged_entry == old else ({"name": name, **merged_entry.to_dict()}, None)

            self.store.upsert(key, update, current=blobs[key])

        self.store.run(one, work)


def _never_active(score: HealthScore) -> bool:
    return any(f.name == "recency" and f.raw is None for f in score.factors)
