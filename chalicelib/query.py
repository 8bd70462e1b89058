"""The private query API's work: tenant-scoped reads of the view table, by Query, never Scan.

Every list is served by a Query on a key or a listing index designed for it, so a dashboard
call costs a few DynamoDB requests whatever the tenant's size.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from chalicelib import keys, tables, versions
from chalicelib.db import batch_get, items
from chalicelib.errors import ApiError, FieldError
from chalicelib.pages import LAST_SEEN_STEP, Derived
from chalicelib.scoremodels import ModelFieldError, ScoreModelStore
from chalicelib.search import SearchIndex
from chalicelib.view_items import load_account, merge_days, pending_for, seats, summary_attrs
from chalicelib.views import ViewStore, from_ddb
from projections import account, catalog, health, timeline, user
from projections.events import format_ts, parse_ts
from projections.folds import Fold, fold_for
from projections.timeline import Entry

__all__ = ["MAX_PAGE", "QueryService", "Rescorer", "SORTS"]


class Rescorer(Protocol):
    """What a score-model change needs from the stream side: recompute and store these accounts' scores
    (the view writer, :class:`streams.writer.ViewWriter`, handed in by ``app.py``)."""

    def rescore(self, tenant_id: str, account_ids: Iterable[str], now: datetime) -> int: ...

MAX_PAGE = 200
MAX_ID = 256  # the longest id ingest accepts
MAX_PARAM = 2048  # query parameter values (cursors are the longest legitimate ones)
MAX_TIMELINE_SKIP = 100_000  # entries skipped inside one timeline bucket (a bucket holds far fewer)

SORTS = {"score": "by_score", "last_seen": "by_seen", "active_users": "by_active", "name": "by_name"}
DEFAULT_ORDER = {"score": "asc", "last_seen": "desc", "active_users": "desc", "name": "asc"}
BANDS = ("red", "yellow", "green")
TOP_SERIES = 10


def _bad(param: str, message: str, limit: Any = None) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{param}: {message}", [FieldError(param, message, limit=limit)])


def _int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"must be an integer between {lo} and {hi}", f"{lo}..{hi}") from None
    if not lo <= value <= hi:
        raise _bad(name, f"must be between {lo} and {hi}", f"{lo}..{hi}")
    return value


def encode_cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> Any:
    if not raw:
        return None
    if len(raw) > MAX_PARAM:
        raise _bad("cursor", f"is longer than {MAX_PARAM} characters", f"0..{MAX_PARAM} characters")
    try:
        return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _bad("cursor", "is not a cursor returned by this API") from None


_KEY_BYTES = 1024  # DynamoDB's limit on a sort key (partition keys: 2048)
_NUMBER = re.compile(r"-?\d{1,38}(\.\d{1,38})?")


def _key_cursor(cursor: Any, attrs: Mapping[str, str], prefixes: Mapping[str, str]) -> dict[str, Any]:
    """A cursor that must be a DynamoDB key with exactly ``attrs`` (name -> "S" or "N"), each ``S`` value
    starting with its ``prefixes`` entry: anything else is a forged cursor (400), never a storage error."""
    if not isinstance(cursor, dict) or set(cursor) != set(attrs):
        raise _bad("cursor", "is not a cursor for this listing")
    for name, kind in attrs.items():
        value = cursor[name]
        if not isinstance(value, dict) or set(value) != {kind} or not isinstance(value[kind], str):
            raise _bad("cursor", "is not a cursor for this listing")
        text = value[kind]
        if kind == "N" and not _NUMBER.fullmatch(text):
            raise _bad("cursor", "is not a cursor for this listing")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise _bad("cursor", "is not a cursor for this listing") from None
        if not 0 < size <= _KEY_BYTES or not text.startswith(prefixes.get(name, "")):
            raise _bad("cursor", "is not a cursor for this listing")
    return cursor


def _account_item(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": item["account_id"], "name": item.get("name") or item["account_id"],
        "score": item.get("score"), "band": item.get("band"), "trend": item.get("trend"),
        "last_seen": item.get("last_seen"), "first_seen": item.get("first_seen"),
        "active_users_1d": item.get("active_1d", 0), "active_users_7d": item.get("active_7d", 0),
        "active_users_30d": item.get("active_30d", 0), "users_count": item.get("users_count", 0),
        "plan": item.get("plan"), "traits": json.loads(item.get("traits_json") or "{}"),
    }


def table_version(table: str) -> int | None:
    """The view version of a ``<prefix>view-v<N>`` table name, or None."""
    tail = table.rsplit("-v", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) >= 1 else None


class QueryService:
    """Reads for one tenant-agnostic view table; every method takes the caller's tenant id.

    ``fold``: what the table holds (:mod:`projections.folds`); default ``fold_for(<the table's version>)``, so a
    reader of a version reads it with that version's fold (pending delta pages included)."""

    def __init__(self, store: ViewStore, models: ScoreModelStore, *, search: SearchIndex | None = None,
                 clock: Callable[[], datetime] | None = None, fold: Fold | None = None) -> None:
        self.store = store
        self.client = store.client
        self.table = store.table
        self.fold = fold if fold is not None else fold_for(table_version(store.table) or versions.VIEW_VERSION)
        self.models = models
        self.search_index = search
        self.clock = clock or (lambda: datetime.now(UTC))

    # --- accounts ------------------------------------------------------------------------------

    def list_accounts(self, tenant_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        sort = params.get("sort") or "score"
        if sort not in SORTS:
            raise _bad("sort", f"must be one of {', '.join(SORTS)}", "|".join(SORTS))
        order = params.get("order") or DEFAULT_ORDER[sort]
        if order not in ("asc", "desc"):
            raise _bad("order", "must be asc or desc", "asc|desc")
        limit = _int_param(params, "limit", 50, 1, MAX_PAGE)
        band = params.get("band")
        if band is not None and band not in BANDS:
            raise _bad("band", "must be red, yellow or green", "red|yellow|green")
        plan = params.get("plan")
        traits = {k[len("trait."):]: v for k, v in params.items() if k.startswith("trait.")}
        for k, v in params.items():
            if len(k) > MAX_ID or len(v) > MAX_PARAM:
                raise _bad(k[:MAX_ID], f"is longer than {MAX_PARAM} characters", f"0..{MAX_PARAM} characters")
            if k not in ("sort", "order", "limit", "cursor", "band", "plan") and not k.startswith("trait."):
                raise _bad(k, "unknown parameter")
        if any(not k for k in traits):
            raise _bad("trait.", "trait name is empty")
        cursor = decode_cursor(params.get("cursor"))
        filters, names, values = [], {}, {":g": {"S": keys.accounts_gpk(tenant_id)}}
        if band:
            filters.append("#band = :band")
            names["#band"] = "band"
            values[":band"] = {"S": band}
        if plan:
            filters.append("#plan = :plan")
            names["#plan"] = "plan"
            values[":plan"] = {"S": plan}
        for i, k in enumerate(sorted(traits)):
            # A cheap pre-filter on the stored JSON; the exact check happens below.
            filters.append(f"contains(traits_json, :t{i})")
            values[f":t{i}"] = {"S": json.dumps(k) + ": "}
        kwargs: dict[str, Any] = {
            "TableName": self.table, "IndexName": SORTS[sort], "KeyConditionExpression": "gpk = :g",
            "ExpressionAttributeValues": values, "ScanIndexForward": order == "asc",
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if cursor is not None:
            sort_attr = kwargs_sort_attr(sort)
            # Every view key attribute is a string.
            _key_cursor(cursor, {"pk": "S", "sk": "S", "gpk": "S", sort_attr: "S"},
                        {"pk": keys.account_pk(tenant_id, ""), "sk": keys.SUMMARY_SK})
            if cursor["gpk"]["S"] != keys.accounts_gpk(tenant_id):
                raise _bad("cursor", "is not a cursor for this listing")
            kwargs["ExclusiveStartKey"] = cursor
        items: list[dict[str, Any]] = []
        last = None
        for _ in range(10):  # bounded: a filtered listing reads at most 10 index pages per call
            kwargs["Limit"] = max(limit - len(items), 1) if not filters else max(limit * 2, 50)
            resp = self.client.query(**kwargs)
            for raw in resp["Items"]:
                it = _account_item(from_ddb(raw))
                if traits and any(str(it["traits"].get(k)) != v for k, v in traits.items()):
                    continue
                items.append(it)
                if len(items) == limit:
                    last = {k: raw[k] for k in ("pk", "sk", "gpk", kwargs_sort_attr(sort))}
                    break
            if len(items) == limit:
                break
            last = resp.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        return {"items": items, "next_cursor": encode_cursor(last) if last else None}

    def _pending(self, tenant_id: str, account_id: str) -> Derived:
        """The account's events in delta pages not yet settled (``chalicelib.pages``): every read below merges
        them, so a figure the API serves includes every batch the projector has written."""
        return pending_for(self.store, tenant_id, account_id, fold=self.fold)

    def _summary(self, tenant_id: str, account_id: str, pending: Derived | None = None) -> dict[str, Any]:
        """The account's SUMMARY; ``{}`` for an account known only from pending pages (not yet settled); 404
        for an unknown account."""
        if not account_id or len(account_id) > MAX_ID:
            # Ingest never stores longer ids, so such an account cannot exist (and the key would be invalid).
            raise ApiError(404, "not_found", "account not found", [FieldError("id", "unknown account",
                                                                             limit=f"1..{MAX_ID} characters")])
        pk = keys.account_pk(tenant_id, account_id)
        resp = self.client.get_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": keys.SUMMARY_SK}})
        if "Item" not in resp:
            if account_id in (pending if pending is not None else self._pending(tenant_id, account_id)).accounts:
                return {}
            raise ApiError(404, "not_found", f"account {account_id!r} not found", [FieldError("id", "unknown account")])
        return from_ddb(resp["Item"])

    def get_account(self, tenant_id: str, account_id: str) -> dict[str, Any]:
        pending = self._pending(tenant_id, account_id)
        summary = self._summary(tenant_id, account_id, pending)
        state, _, _ = load_account(self.store, tenant_id, account_id, pending=pending)
        model = self.models.current(tenant_id, cached=True)
        now = self.clock()
        if account_id in pending.accounts:
            # Pending pages move the score and the figures the SUMMARY holds: computed from the merged state
            # (the SUMMARY, and with it the listing, follows when the pages are settled).
            hs = health.score(state, model, now, seats(state))
            summary = {**summary, **summary_attrs(tenant_id, state, hs, now,
                                                  users_count=self._members(tenant_id, account_id, pending))}
        features = account.feature_usage(state, model.key_features, now, 30)
        wau_by_feature: dict[str, int] | None = None
        if self.fold.name_users:
            # Version 3: distinct users of each key feature in the 7 days ending today (version 2 keeps none: null).
            wau_by_feature = account.key_feature_users(state, model.key_features, now, 7) or {
                f: 0 for f in model.key_features}
        out = _account_item(summary)
        out.update({
            "active_users": {"1d": summary.get("active_1d", 0), "7d": summary.get("active_7d", 0),
                             "30d": summary.get("active_30d", 0)},
            "score": {"score": summary.get("score"), "band": summary.get("band"), "trend": summary.get("trend")},
            "key_features": [{"name": f.name, "count": f.count, "active_days": f.active_days,
                              "last_used": format_ts(f.last_used) if f.last_used else None} for f in features],
            "key_features_wau": wau_by_feature,
        })
        return out

    def _pending_links(self, tenant_id: str, account_id: str, pending: Derived) -> dict[str, dict[str, Any]]:
        """Links of the account still in pending pages (newest version of each user), by link sort key."""
        return {keys.user_link_sk(u): {**link, "user_ver": ver} for (a, u), (ver, link) in pending.links.items()
                if a == account_id}

    def _members(self, tenant_id: str, account_id: str, pending: Derived) -> int | None:
        """MEMBERS plus the pending links that do not exist yet (None: no MEMBERS item, a version 1 account)."""
        pk = keys.account_pk(tenant_id, account_id)
        links = self._pending_links(tenant_id, account_id, pending)
        got = self.store.get_plain([(pk, keys.MEMBERS_SK)] + [(pk, sk) for sk in links], projection="pk, sk, n")
        members = got.get((pk, keys.MEMBERS_SK), {})
        new = sum(1 for sk in links if (pk, sk) not in got)
        if "n" not in members and not new:
            return None
        return int(members.get("n", 0)) + new

    def account_users(self, tenant_id: str, account_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        pending = self._pending(tenant_id, account_id)
        self._summary(tenant_id, account_id, pending)
        limit = _int_param(params, "limit", 50, 1, MAX_PAGE)
        cursor = decode_cursor(params.get("cursor"))
        pk = keys.account_pk(tenant_id, account_id)
        if cursor is not None:
            _key_cursor(cursor, {"pk": "S", "sk": "S"}, {"sk": keys.USER_LINK_PREFIX})
            if cursor["pk"]["S"] != pk:
                raise _bad("cursor", "is not a cursor for this listing")
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
                                  "ExpressionAttributeValues": {":p": {"S": pk}, ":s": {"S": keys.USER_LINK_PREFIX}},
                                  "Limit": limit}
        if cursor:
            kwargs["ExclusiveStartKey"] = cursor
        resp = self.client.query(**kwargs)
        links = [from_ddb(raw) for raw in resp["Items"]]
        extra = self._pending_links(tenant_id, account_id, pending)
        if extra:
            # Pending links (not settled yet) within this page's key range join it; a newer version replaces
            # the stored link.
            lo = cursor["sk"]["S"] if cursor else ""
            hi = resp["LastEvaluatedKey"]["sk"]["S"] if resp.get("LastEvaluatedKey") else None
            by_sk = {lk["sk"]: lk for lk in links}
            for sk, lk in extra.items():
                if sk > lo and (hi is None or sk <= hi) and int(by_sk.get(sk, {}).get("user_ver", -1)) < lk["user_ver"]:
                    by_sk[sk] = {**lk, "sk": sk}
            links = [by_sk[sk] for sk in sorted(by_sk)]
        seen = self._users_last_seen(tenant_id, [lk["user_id"] for lk in links])
        # The account's pending usage moves its users' last seen as the settle will (the same step).
        for (a, u), at in pending.recent.items():
            if a != account_id:
                continue
            stored = seen.get(u)
            if u in seen and (stored is None or at - parse_ts(stored) >= LAST_SEEN_STEP):
                seen[u] = format_ts(at)
        items = [{"user_id": lk["user_id"], "name": lk.get("name"), "email": lk.get("email"),
                  "traits": json.loads(lk.get("traits_json") or "{}"), "first_seen": lk.get("first_seen"),
                  "last_seen": seen.get(lk["user_id"])} for lk in links]
        last = resp.get("LastEvaluatedKey")
        return {"items": items, "next_cursor": encode_cursor(last) if last else None}

    def _users_last_seen(self, tenant_id: str, user_ids: list[str]) -> dict[str, str | None]:
        """``last_seen`` of users from their HEAD items (one BatchGetItem, projected)."""
        if not user_ids:
            return {}
        prefix = keys.user_pk(tenant_id, "")
        found = batch_get(self.client, self.table, [{"pk": {"S": keys.user_pk(tenant_id, u)}, "sk": {"S": keys.HEAD_SK}}
                                                    for u in user_ids], projection="pk, last_seen")
        return {raw["pk"]["S"][len(prefix):]: raw.get("last_seen", {}).get("S") for raw in found}

    def account_timeline(self, tenant_id: str, account_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        pending = self._pending(tenant_id, account_id)
        self._summary(tenant_id, account_id, pending)
        limit = _int_param(params, "limit", 50, 1, MAX_PAGE)
        cursor = decode_cursor(params.get("cursor"))
        pk = keys.account_pk(tenant_id, account_id)
        start, skip = None, 0
        if cursor is not None:
            if not isinstance(cursor, dict) or set(cursor) != {"bucket", "skip"} \
                    or not isinstance(cursor["bucket"], str) or not _is_day(cursor["bucket"]) \
                    or not isinstance(cursor["skip"], int) or isinstance(cursor["skip"], bool) \
                    or not 0 <= cursor["skip"] <= MAX_TIMELINE_SKIP:
                raise _bad("cursor", "is not a cursor for this listing")
            start, skip = cursor["bucket"], cursor["skip"]
        extra = {day: tl for (a, day), tl in pending.timelines.items() if a == account_id}
        if extra:
            return self._timeline_merged(pk, account_id, extra, start, skip, limit)
        kwargs: dict[str, Any] = {"TableName": self.table, "ScanIndexForward": False, "Limit": 7}
        if start:
            # Resume inside the bucket the previous page stopped in (newest first).
            kwargs["KeyConditionExpression"] = "pk = :p AND sk BETWEEN :a AND :b"
            kwargs["ExpressionAttributeValues"] = {":p": {"S": pk}, ":a": {"S": keys.TIMELINE_PREFIX},
                                                   ":b": {"S": keys.timeline_sk(start)}}
        else:
            kwargs["KeyConditionExpression"] = "pk = :p AND begins_with(sk, :s)"
            kwargs["ExpressionAttributeValues"] = {":p": {"S": pk}, ":s": {"S": keys.TIMELINE_PREFIX}}
        items: list[dict[str, Any]] = []
        while True:
            resp = self.client.query(**kwargs)
            for blob in (ViewStore._blob(i) for i in resp["Items"]):
                bucket = blob.sk[len(keys.TIMELINE_PREFIX):]
                entries = sorted((Entry.from_dict(e) for e in blob.data["entries"]), reverse=True)
                offset = skip if bucket == start else 0
                take = entries[offset:offset + (limit - len(items))]
                items += [e.to_dict() for e in take]
                if len(items) >= limit:
                    next_cursor = {"bucket": bucket, "skip": offset + len(take)}
                    return {"items": items, "next_cursor": encode_cursor(next_cursor)}
            if "LastEvaluatedKey" not in resp:
                return {"items": items, "next_cursor": None}
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _timeline_merged(self, pk: str, account_id: str, extra: dict[str, timeline.TimelineBucket],
                         start: str | None, skip: int, limit: int) -> dict[str, Any]:
        """The timeline with pending buckets merged in: every stored bucket (at most one per retained day,
        each at most 50 entries) read and joined with the pending ones, then paged as the stored path pages."""
        blobs, _ = self.store.query_prefix(pk, keys.TIMELINE_PREFIX, consistent=False)
        buckets = {b.sk[len(keys.TIMELINE_PREFIX):]: timeline.TimelineBucket.from_dict(b.data) for b in blobs}
        for day, tl in extra.items():
            buckets[day] = tl if day not in buckets else timeline.merge(buckets[day], tl)
        items: list[dict[str, Any]] = []
        for bucket in sorted(buckets, reverse=True):
            if start and bucket > start:
                continue
            entries = buckets[bucket].newest_first()
            offset = skip if bucket == start else 0
            take = entries[offset:offset + (limit - len(items))]
            items += [e.to_dict() for e in take]
            if len(items) >= limit:
                return {"items": items, "next_cursor": encode_cursor({"bucket": bucket, "skip": offset + len(take)})}
        return {"items": items, "next_cursor": None}

    def account_usage(self, tenant_id: str, account_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        pending = self._pending(tenant_id, account_id)
        self._summary(tenant_id, account_id, pending)
        days = _int_param(params, "days", 30, 1, account.RETENTION_DAYS)
        end = self.clock().date()
        start = end - timedelta(days=days - 1)
        pk = keys.account_pk(tenant_id, account_id)
        blobs, _ = self.store.query_prefix(pk, "", sk_from=keys.day_sk(start.isoformat()),
                                           sk_to=keys.day_sk(end.isoformat()), consistent=False)
        merged = merge_days(pk, {b.sk[len(keys.DAY_PREFIX):]: b for b in blobs}, pending)
        by_day = {d: account.DayActivity.from_dict(v) for d, v in merged.items()
                  if start.isoformat() <= d <= end.isoformat()}
        day_list = [(start + timedelta(days=i)).isoformat() for i in range(days)]
        totals: dict[str, int] = {}
        for act in by_day.values():
            for name, n in act.counts.items():
                totals[name] = totals.get(name, 0) + n
        top = [n for n, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_SERIES]]
        series = [{"name": n, "counts": [by_day[d].count(n) if d in by_day else 0 for d in day_list]} for n in top]
        if len(totals) > len(top):
            series.append({"name": "All other events", "counts": [
                (by_day[d].count() - sum(by_day[d].count(n) for n in top)) if d in by_day else 0 for d in day_list]})
        return {"days": day_list, "series": series,
                "active_users": [len(by_day[d].users) if d in by_day else 0 for d in day_list],
                "totals": [by_day[d].count() if d in by_day else 0 for d in day_list]}

    def account_score(self, tenant_id: str, account_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        pending = self._pending(tenant_id, account_id)
        summary = self._summary(tenant_id, account_id, pending)
        days = _int_param(params, "days", 30, 1, 90)
        state, _, _ = load_account(self.store, tenant_id, account_id, pending=pending)
        model = self.models.current(tenant_id)
        now = self.clock()
        seats = state.trait("seats")
        seats = int(seats) if isinstance(seats, (int, float)) and not isinstance(seats, bool) and seats >= 1 else None
        current = health.score(state, model, now, seats)
        hist = health.history(state, model, now, days, seats)
        labels = {"recency": "Recency of activity", "active_days": "Active days (30d)",
                  "adoption": "Seat utilisation / stickiness", "breadth": "Key-feature breadth",
                  "trend": "Usage trend (14d vs prior 14d)",
                  "key_feature_wau": "Key-feature weekly active users"}
        factors = [{**f.to_dict(), "value": f.raw, "label": labels.get(f.name, f.name),
                    "detail": _factor_detail(f.name, f.raw, seats is not None or state.trait("seats") is not None,
                                             f.applicable)}
                   for f in current.factors]
        shown = {f.name for f in current.factors}
        # A factor the state cannot compute (per-name users on a version 2 view, or before any usage by a known
        # user): left out of the score; listed here as not applicable, with why.
        factors += [{"name": name, "weight": weight, "raw": None, "normalised": 0.0, "points": 0, "applicable": False,
                     "value": None, "label": labels.get(name, name),
                     "detail": "not applicable (this view version keeps no per-feature users)"
                     if not self.fold.name_users else "no usage by a known user yet"}
                    for name, weight in model.factors if name not in shown]
        return {
            "account_id": account_id, "name": summary.get("name") or state.name or account_id,
            "score": current.score, "band": current.band, "trend": current.trend, "as_of": format_ts(now),
            "model_version": current.model_version,
            "factors": factors,
            "history": [{"date": h.as_of.date().isoformat(), "score": h.score, "band": h.band} for h in hist],
            "thresholds": {"yellow_from": model.yellow_from, "green_from": model.green_from},
        }

    # --- score model ----------------------------------------------------------------------------

    def get_model(self, tenant_id: str) -> dict[str, Any]:
        return self.models.current(tenant_id).to_dict()

    def put_model(self, tenant_id: str, body: Any, rescorer: Rescorer | None) -> dict[str, Any]:
        try:
            model = self.models.put(tenant_id, body)
        except ModelFieldError as exc:
            raise ApiError(400, "invalid_score_model", str(exc), [FieldError(exc.field, str(exc), limit=exc.limit)]) \
                from None
        except (ValueError, TypeError, OverflowError) as exc:
            text = str(exc) or type(exc).__name__
            field = text.split(":")[0].split(" ")[0] if text else "body"
            raise ApiError(400, "invalid_score_model", text, [FieldError(field, text)]) from None
        rescored = 0
        if rescorer is not None:
            ids = self.account_ids(tenant_id)
            rescored = rescorer.rescore(tenant_id, ids, self.clock())
        return {"model": model.to_dict(), "rescored": rescored}

    def account_ids(self, tenant_id: str) -> list[str]:
        found = items(self.client, "query", TableName=self.table, IndexName="by_name",
                      KeyConditionExpression="gpk = :g", ProjectionExpression="account_id",
                      ExpressionAttributeValues={":g": {"S": keys.accounts_gpk(tenant_id)}})
        return [i["account_id"]["S"] for i in found]

    # --- search / status --------------------------------------------------------------------------

    def search(self, tenant_id: str, params: Mapping[str, str]) -> dict[str, Any]:
        q = (params.get("q") or "").strip()
        if not q:
            raise _bad("q", "is required", "1..200 characters")
        if len(q) > 200:
            raise _bad("q", "is too long", "1..200 characters")
        limit = _int_param(params, "limit", 20, 1, 100)
        if self.search_index is None:
            return {"items": []}
        return {"items": self.search_index.search(tenant_id, q, limit)}

    def status(self, mappings: list[dict[str, Any]]) -> dict[str, Any]:
        """The pipeline's state for ``/api/status``: ``mappings`` as :func:`streams.status.status_report` gives."""
        return {
            "mappings": [{"uuid": m["uuid"], "function": m["function"], "state": m["state"],
                          "lag_records": m.get("records_behind", 0), "iterator_age_ms": m.get("iterator_age_ms", 0),
                          "dead_letters": m.get("dead_letters", 0)} for m in mappings],
            "projections": [{"name": "view", "version": int(self.table.rsplit("-v", 1)[1]), "active": True,
                             "table": self.table, "fold_code": self.fold.code,
                             "folds": {"account": account.VERSION, "user": user.VERSION, "catalog": catalog.VERSION,
                                       "timeline": timeline.VERSION}}],
            "time": format_ts(self.clock()),
        }


def _factor_detail(name: str, raw: float | None, has_seats: bool, applicable: bool) -> str:
    """What a factor's raw value means, in words a customer-success manager uses."""
    if not applicable:
        return "not applicable (no key features configured)"
    if raw is None:
        return {"recency": "no activity yet", "trend": "no usage in the previous 14 days",
                "key_feature_wau": "no active users in the last 7 days"}.get(name, "no data")
    if name == "recency":
        return "active today" if raw == 0 else f"last active {raw:g} day{'s' if raw != 1 else ''} ago"
    if name == "active_days":
        return f"active on {raw:g} of the last 30 days"
    if name == "adoption":
        return f"{raw:.0%} of seats active in 30 days" if has_seats else f"DAU/MAU stickiness {raw:.2f}"
    if name == "breadth":
        return f"{raw:.0%} of key features used in 30 days"
    if name == "trend":
        return f"{raw:+.0%} events vs the prior 14 days"
    if name == "key_feature_wau":
        return f"{raw:.0%} of weekly active users use each key feature, on average"
    return f"{raw:g}"


def _is_day(text: str) -> bool:
    try:
        return len(text) == 10 and date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def kwargs_sort_attr(sort: str) -> str:
    return tables.VIEW_INDEXES[SORTS[sort]][1]
