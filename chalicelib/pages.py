"""Delta pages: what a batch changes on many accounts, packed into few items (spread traffic).

A B2B tenant's batch of 10,000 events touches thousands of accounts about once each. Written item by item,
every touched account costs a write per item it has (day counters, timeline, HEAD, score): 5 to 14 write
units per event. DynamoDB charges a write per started KB *of one item*, so the projector instead packs the
batch's usage, per tenant and **bucket of accounts and users** (:data:`PAGE_BUCKETS`, by a hash of the
id), into one *delta page* each: ``<tenant>#P#<bucket>`` / ``P#<page id>``. One page write carries a few
dozen accounts' events (about 70 bytes each after zlib), and the per-account items are *settled* from the
pages later, once per many events (``streams.writer.ViewWriter.settle``), the way Propulsion's indexer packs
many streams' appends into one epoch item.

What a page holds (compact, the same facts the writer would have applied at once):

* ``a``: per account, ``e``: the usage and group events attributed to it in this batch (with the chunk
  tag each counts under, empty for an event whose count arrived by retro attribution), and ``r``: retro
  contributions (a late ``group`` or an ``alias``: a user-day, its tag and the tags it already holds);
* ``u``: per user, ``e``: usage without ``context.groupId`` (the user-days), and ``r``: anonymous
  histories merged into the user by ``alias``.

**Reads merge.** Until a page is settled, the account it names is its stored items *plus* its bucket's
pending pages (:func:`derive` then :func:`merge_counters`): the query API, the writer's retro attribution
(user-days) and the score all see every acknowledged event as soon as its batch is written. Counters stay
exactly-once across re-deliveries and bisected batches: a contribution is keyed by (item, chunk tag); the
same key in two pages (a batch re-delivered whole or bisected) counts once, and a tag already in the
item's ring (settled) counts not at all. Head and timeline contributions are joins.

Pages are the same for every fold version (:mod:`projections.folds`): a row names its event's user, so a reader
builds what its version keeps (version 3: each name's users per account-day) from the same page; :func:`derive`
takes the fold of the version it reads for.

Page size bound: a page holds one batch's events of one bucket; a batch is at most 100 records of
300 KB compressed chunks, so a bucket's page is split at :data:`PAGE_EVENTS` events (several items ``#n``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from chalicelib import keys, versions
from chalicelib.views import Blob, ViewStore
from projections import account, timeline
from projections.account import AccountState, DayActivity
from projections.events import Event, format_ts
from projections.folds import Fold, fold_for
from projections.registers import max_opt, min_opt, opt_ts, opt_ts_str
from projections.userday import UserDay

__all__ = ["LAST_SEEN_STEP", "PAGE_BUCKETS", "PAGE_EVENTS", "Derived", "PageCache", "PageWriter", "TAG_CHARS",
           "apply_tagged", "bucket_of", "derive", "merge_counters", "one", "pending_pages", "ring_tags"]

PAGE_BUCKETS: Final = 64
"""Buckets of accounts (and of users) per tenant. A 10,000-event batch over 10,000 accounts writes one page
per bucket (~156 accounts, ~11 KB); a read of one account reads its bucket's pending pages."""
PAGE_EVENTS: Final = 2_000
"""Events per page item at most (a bucket's share of a batch beyond this is split over several items):
with 128-character names and 256-byte ids, under 400 KB before zlib."""
TAG_CHARS: Final = 12
LAST_SEEN_STEP: Final = timedelta(minutes=15)
"""Usage alone moves a stored "last seen" (user and account HEAD, event spans, SUMMARY, catalog names) at
most this often: it lags the newest event by less than this. Counts, days and timelines are exact. Reads that
merge pending pages apply the same step, so a settle changes none of them."""


def bucket_of(entity: str) -> int:
    """The page bucket of an account or user id (stable: a hash, not the order of arrival)."""
    return hashlib.blake2b(entity.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0] % PAGE_BUCKETS


def ring_tags(ring: str) -> set[str]:
    return {ring[i:i + TAG_CHARS] for i in range(0, len(ring), TAG_CHARS)}


def one(name: str, who: str | None, fold: Fold | None = None) -> DayActivity:
    """One event of ``name`` by ``who`` (a user or None) on a day counter, as ``fold`` keeps it (default: the
    fold of :data:`chalicelib.versions.VIEW_VERSION`)."""
    return (fold or fold_for(versions.VIEW_VERSION)).one(name, who)


def apply_tagged(total: Any, ring: str, per_tag: dict[str, Any], also_seen: Iterable[str], *,
                 keep: int) -> tuple[Any, str, bool]:
    """Add each contribution whose tag is not in ``ring``; returns ``(total, ring, changed)``.

    The new ring keeps this write's tags and, of older tags and ``also_seen`` (tags a retro contribution
    brings in: chunks already inside it), the last ``keep``."""
    seen = ring_tags(ring)
    new = [t for t in sorted(per_tag) if t not in seen]
    if not new:
        return total, ring, False
    for t in new:
        total = total.merge(per_tag[t])
    own = "".join(new)
    kept = (ring + "".join(sorted(set(also_seen) - seen)) + own)[-(keep * TAG_CHARS + len(own)):]
    return total, kept, True


def _event(row: list[Any], group_id: str | None) -> Event:
    mid, kind, ts, ev_name, page_name, user = row[:6]
    return Event.from_wire({"messageId": mid, "type": kind, "timestamp": ts, "event": ev_name, "name": page_name,
                            "userId": user, "groupId": group_id})


def _row(e: Event, tag: str, *, with_user: bool = True) -> list[Any]:
    row: list[Any] = [e.message_id, e.type, format_ts(e.timestamp), e.event, e.name]
    if with_user:
        row.append(e.user_id)
    return [*row, tag]


@dataclass
class Derived:
    """What pending pages add to items: counters by item key and tag (first page wins for a repeated key and
    tag), the tags retro contributions hold, and the HEAD/timeline contributions per account."""

    account_days: dict[tuple[str, str], dict[str, DayActivity]] = field(default_factory=dict)
    account_seen: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    user_days: dict[tuple[str, str], dict[str, UserDay]] = field(default_factory=dict)
    user_seen: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    synth: dict[str, list[Event]] = field(default_factory=dict)
    heads: dict[str, AccountState] = field(default_factory=dict)
    timelines: dict[tuple[str, str], timeline.TimelineBucket] = field(default_factory=dict)
    links: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    user_times: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    recent: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """(account, user) -> the newest pending usage of that user attributed to that account."""
    anonymous: set[str] = field(default_factory=set)
    """Anonymous ids with pending user-days, not merged into a user when their page was written: a settle drops
    those days if the id has been merged since (the merge read them into the user's)."""
    pages: list[tuple[str, str]] = field(default_factory=list)

    @property
    def accounts(self) -> set[str]:
        return set(self.synth) | set(self.heads) | {a for a, _ in self.timelines} | {a for a, _ in self.links} | {
            pk.split("#A#", 1)[1] for pk, _ in self.account_days}


def derive(tenant_id: str, pages: list[Blob], *, accounts: set[str] | None = None,
           users: set[str] | None = None, fold: Fold | None = None) -> Derived:
    """Item contributions of pending pages (only of ``accounts`` / ``users`` when given), as ``fold`` (the fold
    of the version read; default: that of :data:`chalicelib.versions.VIEW_VERSION`) keeps account-days."""
    fold = fold or fold_for(versions.VIEW_VERSION)
    out = Derived()
    # Tags a retro contribution holds count as applied for the pages *after* its own (as a write adds them to
    # the item's ring after applying its own contributions): a later re-delivery of such a chunk adds nothing.
    later_seen: dict[tuple[str, str], set[str]] = {}
    for page in pages:
        out.pages.append((page.pk, page.sk))
        body = page.data or {}
        page_days: dict[tuple[str, str], dict[str, DayActivity]] = {}
        page_udays: dict[tuple[str, str], dict[str, UserDay]] = {}
        page_seen: dict[tuple[str, str], set[str]] = {}
        for acct, part in (body.get("a") or {}).items():
            if accounts is not None and acct not in accounts:
                continue
            pk = keys.account_pk(tenant_id, acct)
            evs = out.synth.setdefault(acct, [])
            for row in part.get("e") or ():
                e = _event(row, acct)
                evs.append(e)
                if e.is_usage and e.user_id:
                    _newest(out.recent, (acct, e.user_id), e.timestamp)
                tag = row[6]
                if tag and e.is_usage:
                    per = page_days.setdefault((pk, keys.day_sk(e.day)), {})
                    act = fold.one(e.catalog_name or "", e.user_id)
                    per[tag] = act if tag not in per else per[tag].merge(act)
            for wire in part.get("g") or ():
                evs.append(Event.from_wire(wire))
            for who, (ver, link) in (part.get("l") or {}).items():
                if out.links.get((acct, who), (-1, None))[0] < int(ver):
                    out.links[(acct, who)] = (int(ver), link)
            for day, who, tag, ud_data, also in part.get("r") or ():
                ud = UserDay.from_dict(ud_data)
                if ud.last is not None:
                    _newest(out.recent, (acct, who), ud.last)
                key = (pk, keys.day_sk(day))
                per = page_days.setdefault(key, {})
                act = fold.of_user(ud.activity.counts, who)
                per[tag] = act if tag not in per else per[tag].merge(act)
                page_seen.setdefault(key, set()).update(also)
                head, bucket = ud.for_account(acct, day, who)
                out.heads[acct] = head if acct not in out.heads else account.merge(out.heads[acct], head)
                tkey = (acct, day)
                out.timelines[tkey] = bucket if tkey not in out.timelines else timeline.merge(out.timelines[tkey],
                                                                                                bucket)
        for who, part in (body.get("u") or {}).items():
            if users is not None and who not in users:
                continue
            pk = keys.user_pk(tenant_id, who)
            if part.get("n"):
                out.anonymous.add(who)
            if part.get("s"):
                first, last = (opt_ts(t) for t in part["s"])
                was = out.user_times.get(who, (None, None))
                out.user_times[who] = (min_opt(was[0], first), max_opt(was[1], last))
            for row in part.get("e") or ():
                e = _event([*row[:5], who], None)
                per_u = page_udays.setdefault((pk, keys.user_day_sk(e.day)), {})
                tag = row[5]
                ud = UserDay.of(e)
                per_u[tag] = ud if tag not in per_u else per_u[tag].merge(ud)
            for day, tag, ud_data, also in part.get("r") or ():
                key = (pk, keys.user_day_sk(day))
                per_u = page_udays.setdefault(key, {})
                ud = UserDay.from_dict(ud_data)
                per_u[tag] = ud if tag not in per_u else per_u[tag].merge(ud)
                page_seen.setdefault(key, set()).update(also)
        # A (key, tag) already taken from an earlier page is a re-delivery of the same chunk: first page wins.
        for key, per in page_days.items():
            target = out.account_days.setdefault(key, {})
            for tag, act in per.items():
                if tag not in later_seen.get(key, ()):
                    target.setdefault(tag, act)
        for key, per_u in page_udays.items():
            target_u = out.user_days.setdefault(key, {})
            for tag, ud in per_u.items():
                if tag not in later_seen.get(key, ()):
                    target_u.setdefault(tag, ud)
        for key, also_tags in page_seen.items():
            later_seen.setdefault(key, set()).update(also_tags)
            (out.user_seen if "#U#" in key[0] else out.account_seen).setdefault(key, set()).update(also_tags)
    for acct, evs in out.synth.items():
        state = account.fold_all(evs).get(acct)
        if state is not None:
            out.heads[acct] = state if acct not in out.heads else account.merge(out.heads[acct], state)
        for key, bucket in timeline.fold_all(evs).items():
            out.timelines[key] = bucket if key not in out.timelines else timeline.merge(out.timelines[key], bucket)
    return out


def _newest(into: dict[tuple[str, str], datetime], key: tuple[str, str], at: datetime) -> None:
    if key not in into or at > into[key]:
        into[key] = at


def merge_counters(stored: Any, ring: str, per_tag: dict[str, Any], also_seen: set[str], codec: Any) -> Any:
    """A counter item as reads see it: the stored total plus every pending contribution not yet in its ring
    (``per_tag`` as :func:`derive` leaves it: already without what a retro contribution holds). ``also_seen``
    is accepted for symmetry with the writer, which adds it to the ring."""
    total = stored if stored is not None else codec()
    seen = ring_tags(ring)
    for tag in sorted(per_tag):
        if tag in seen:
            continue
        total = total.merge(per_tag[tag])
    return total


def pending_pages(store: ViewStore, tenant_id: str, buckets: Iterable[int], *,
                  consistent: bool = True) -> dict[int, list[Blob]]:
    """The pending (unsettled) pages of some buckets, oldest first."""
    order = sorted(set(buckets))
    found = store.query_many([(keys.page_pk(tenant_id, b), keys.PAGE_PREFIX) for b in order]) if consistent else [
        store.query_prefix(keys.page_pk(tenant_id, b), keys.PAGE_PREFIX, consistent=False)[0] for b in order]
    return {b: sorted(pages, key=lambda p: (int(p.attrs.get("seq", 0)), p.sk))
            for b, pages in zip(order, found, strict=True)}


class PageCache:
    """Decoded pending pages of the buckets a long-lived reader reads again and again (an API process, the bench's
    probe watcher): a page item is written once (its id holds the wall clock in ns) and only ever deleted, by the
    settle that takes it, so a reader needs to fetch and decode only the pages it has not seen yet. Each read still
    asks the table which pages are pending (a keys-only Query per bucket, consistent), so what it returns is what
    :func:`pending_pages` returns; pages no longer pending are forgotten. At most ``max_pages`` are held (the
    oldest reads dropped first). On AWS the keys-only Query costs the same read units as the full one (a Query is
    charged by the bytes it reads): the saving is the transfer and the decoding, the reader's CPU."""

    def __init__(self, max_pages: int = 20_000) -> None:
        self.max_pages = max_pages
        self._pages: dict[tuple[str, str, int], Blob] = {}
        self.fetched = 0

    def pending(self, store: ViewStore, tenant_id: str, buckets: Iterable[int]) -> dict[int, list[Blob]]:
        """:func:`pending_pages` of ``buckets`` (consistent), new pages fetched in one ``BatchGetItem`` round."""
        order = sorted(set(buckets))
        pks = [keys.page_pk(tenant_id, b) for b in order]
        listed = store.run(lambda pk: store.query_keys(pk, keys.PAGE_PREFIX, ("seq",)), pks)
        wanted = [(str(i["pk"]), str(i["sk"]), int(i.get("seq", 0))) for found in listed for i in found]
        missing = [k for k in wanted if k not in self._pages]
        if missing:
            got = store.get_many([(pk, sk) for pk, sk, _ in missing], consistent=True)
            self.fetched += len(missing)
            for k in missing:
                blob = got[(k[0], k[1])]
                if blob.data is not None:  # else settled between the two reads: no longer pending
                    self._pages[k] = blob
        out: dict[int, list[Blob]] = {b: [] for b in order}
        by_pk = dict(zip(pks, order, strict=True))
        for k in wanted:
            if (page := self._pages.get(k)) is not None:
                out[by_pk[k[0]]].append(page)
        listed_pks, now_pending = set(pks), set(wanted)
        for k in [k for k in self._pages if k[0] in listed_pks and k not in now_pending]:
            del self._pages[k]  # settled
        for k in list(self._pages)[:max(0, len(self._pages) - self.max_pages)]:
            del self._pages[k]
        return {b: sorted(ps, key=lambda p: (int(p.attrs.get("seq", 0)), p.sk)) for b, ps in out.items()}


class PageWriter:
    """Collects one batch's contributions per bucket and writes them as pages."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.buckets: dict[int, dict[str, Any]] = {}

    def _part(self, side: str, entity: str) -> dict[str, Any]:
        body = self.buckets.setdefault(bucket_of(entity), {"a": {}, "u": {}})
        return body[side].setdefault(entity, {})  # type: ignore[no-any-return]

    def account_event(self, account_id: str, e: Event, tag: str) -> None:
        if e.type == "group":
            self._part("a", account_id).setdefault("g", []).append(e.to_wire())
        else:
            self._part("a", account_id).setdefault("e", []).append(_row(e, tag))

    def account_retro(self, account_id: str, day: str, user_id: str, tag: str, ud: UserDay,
                      also: Iterable[str]) -> None:
        self._part("a", account_id).setdefault("r", []).append([day, user_id, tag, ud.to_dict(), sorted(also)])

    def account_link(self, account_id: str, user_key: str, link: dict[str, Any], ver: int) -> None:
        self._part("a", account_id).setdefault("l", {})[user_key] = [ver, link]

    def user_times(self, user_key: str, first: datetime | None, last: datetime | None) -> None:
        self._part("u", user_key)["s"] = [opt_ts_str(first), opt_ts_str(last)]

    def user_event(self, user_key: str, e: Event, tag: str, *, anonymous: bool = False) -> None:
        """Usage without ``context.groupId`` of ``user_key``; ``anonymous``: an anonymous id not merged into a user
        (yet), whose pending days a settle drops once it is (:attr:`Derived.anonymous`)."""
        part = self._part("u", user_key)
        part.setdefault("e", []).append(_row(e, tag, with_user=False))
        if anonymous:
            part["n"] = 1

    def user_retro(self, user_key: str, day: str, tag: str, ud: UserDay, also: Iterable[str]) -> None:
        self._part("u", user_key).setdefault("r", []).append([day, tag, ud.to_dict(), sorted(also)])

    def items(self, page_id: str, at: int, ttl: int) -> list[dict[str, Any]]:
        """The page items to put: one per bucket (split past :data:`PAGE_EVENTS` events). ``at``: the batch's
        time (settle ages); ``seq``: the wall clock in ns when written (the order pages are merged in)."""
        out = []
        seq = time.time_ns()
        for b, body in sorted(self.buckets.items()):
            for n, part in enumerate(self.split(body)):
                out.append({"pk": keys.page_pk(self.tenant_id, b), "sk": keys.page_sk(page_id, n),
                            "body": part, "at": at, "seq": seq, "ttl": ttl})
        return out


    @staticmethod
    def split(body: dict[str, Any]) -> list[dict[str, Any]]:
        """A bucket's body as page items of at most :data:`PAGE_EVENTS` events each."""
        return _split(body)


def _split(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"a": {}, "u": {}}]
    room = PAGE_EVENTS
    for side in ("a", "u"):
        for entity, part in sorted(body[side].items()):
            size = sum(len(v) for v in part.values() if isinstance(v, list | dict))
            if size > room and (parts[-1]["a"] or parts[-1]["u"]):
                parts.append({"a": {}, "u": {}})
                room = PAGE_EVENTS
            parts[-1][side][entity] = part
            room -= size
    return parts
