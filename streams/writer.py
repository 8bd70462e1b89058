"""Fold a batch of events into the view table (view version 2): counters, exactly once, bounded.

For every tenant in a batch:

1. **Message claims, packed.** The message ids a batch counts are recorded in *claim pages*
   (``<tenant>#M#<window>`` / ``MP#<batch>#<n>``): one item per batch and minute of the events' client
   timestamps (``originalTimestamp``, which a retrying SDK re-sends unchanged whatever its new
   ``sentAt``), holding each id's 8-byte digest under its owner (source and chunk). Before counting,
   the batch reads every page of the windows its events fall in (strongly consistent ``Query``). A
   message claimed by another chunk is a duplicate (a re-send in another request, whatever its
   corrected timestamp) and is not counted again; one claimed by this very chunk is a re-delivery and
   goes on to the counters. An event without a client timestamp gets a window of its own (its digest).
2. **Counters with a ring of applied chunks.** Every counter item (user-day ``UD#``, account-day
   ``DAY#``, catalog day) records, in a bounded ``ring`` attribute, short tags of the last chunks it
   absorbed. A contribution whose tag is in the ring is skipped, so a re-delivered or bisected batch
   adds nothing twice.
3. **Attribution (Segment semantics).** A usage event with ``context.groupId`` counts towards that
   account; without it, towards every account its (alias-resolved) user joined through ``group``.
   Unattributed usage is also counted per user and day (``UD#``), so a ``group`` that arrives later
   adds the user's retained days to the account (tag ``j:<user>``), and an ``alias`` adds the anonymous
   id's days to the user (tag ``a:<anon>``).
4. Items per account: ``HEAD`` (traits, first/last seen, event spans), ``DAY#<day>`` (counters and
   a distinct-user sketch), ``TL#<day>`` (timeline), ``MEMBERS`` (count of user links),
   ``USER#<user>`` (link: traits, email, first seen) and ``SUMMARY`` (score, band, listing keys). Per
   user: ``HEAD`` and ``UD#<day>``. Per tenant: catalog name heads and per (day, name) counters.

The size bound of every item is in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from chalicelib import keys, pages, versions
from chalicelib.pages import PageWriter
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.view_items import (
    account_head_dict,
    assemble_account,
    load_account,
    seats,
    summary_attrs,
    user_link,
)
from chalicelib.views import Blob, ConflictError, ViewStore, encode_body, from_ddb, to_ddb
from projections import account, catalog, health, timeline, user
from projections.account import AccountState, DayActivity
from projections.events import Event, FrozenMap, format_ts, parse_ts
from projections.folds import Fold, fold_for
from projections.health import HealthScore, ScoreModel
from projections.usage import identity_links
from projections.userday import UserDay

__all__ = ["CLAIM_TTL_SECONDS", "FOLD_CODE", "LAST_SEEN_STEP", "RING", "ViewWriter", "WriteReport", "chunk_tag",
           "claim_window", "fold_codes", "same_but_recency"]


FOLD_CODE = fold_for(versions.VIEW_VERSION).code
"""The fold code of this process's default view version (:attr:`projections.folds.Fold.code`: the fold version
and a digest of the fold code); a writer records its own fold's code in every view table it writes."""


def fold_codes(store: ViewStore) -> set[str]:
    """The fold codes that have written ``store``'s table (empty: a table written before they were recorded)."""
    item = store.get_plain([(keys.META_PK, keys.FOLD_CODE_SK)]).get((keys.META_PK, keys.FOLD_CODE_SK), {})
    return {str(c) for c in item.get("codes") or ()}

RING = 32
"""Chunk tags a counter item remembers beyond those of its latest write (re-delivery window)."""
TAG_CHARS = 12
CLAIM_TTL_SECONDS = 7 * 86400
"""Claim pages expire (DynamoDB TTL on ``ttl``) this long after they were written."""
LAST_SEEN_STEP = pages.LAST_SEEN_STEP
SETTLE_AFTER_SECONDS = 600
"""A bucket's pending pages are settled into the per-account items once the oldest is this old (or once they
hold :data:`SETTLE_BYTES`, or number :data:`SETTLE_PAGES`): the freshness of what only settled items show (the
account listing and its order, scores on the listing, alerts). Everything else reads the pages too
(``chalicelib.pages``)."""
SETTLE_MIN_AGE_SECONDS = 30
"""Pages younger than this are not settled: a failed batch is retried (whole or bisected) before that, and its
new page then meets the old one while both are pending, where (item, chunk tag) keys make it count once."""
SETTLE_BYTES = 512 * 1024
"""Stored (zlib) bytes of pending pages per bucket at most before a settle: what a read of one account merges
is at most this plus one batch's page (one Query page of 1 MB). The bound follows the events: at spread every
batch writes a page in every bucket, so a bound on the *number* of pages alone (64 until 2026-12-07) settled
every account every 64 batches (320 s at the 5 s window) whatever the rate, and ``STREAMFOLD_SETTLE_SECONDS``
above that was no knob at all."""
SETTLE_PAGES = 1024
"""Pending pages per bucket at most before a settle (bounds the items a read of one account merges: 85 minutes
of 5 s windows, so the age rule and :data:`SETTLE_BYTES` decide first)."""
OWN_TAGS = 512
"""Chunk tags one settle keeps in a counter's ring at most (beyond :data:`RING` older ones)."""
DIGEST_CHARS = 16
"""Hex characters of a message digest (8 bytes of BLAKE2b; ``Event.digest``)."""
PAGE_DIGESTS = 8_000
"""Digests per claim page at most: with their owners under 300 KB even before zlib (stored: ~9 B each)."""


def chunk_tag(text: str) -> str:
    """A short, fixed-size tag of a chunk (or of a retro-attribution source)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


@dataclass
class WriteReport:
    events: int = 0
    counted: int = 0
    duplicates: int = 0
    accounts: int = 0
    users: int = 0
    alerts: int = 0
    write_units: float = 0.0
    writes: int = 0
    skipped: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)


# Summary attributes that are bookkeeping, not content: a change in these alone is not written.
_VOLATILE = {"as_of", "alerts"}

Chunks = Sequence[tuple[str, Sequence[Event]]]
Deltas = dict[tuple[str, str], dict[str, Any]]
"""Counter contributions by item key and tag: :class:`DayActivity` (account and catalog days) or
:class:`UserDay` (user-days), both with ``merge``."""
RetroHeads = dict[str, AccountState]
RetroTimelines = dict[tuple[str, str], timeline.TimelineBucket]


def _add(deltas: Deltas, key: tuple[str, str], tag: str, activity: Any) -> None:
    per_tag = deltas.setdefault(key, {})
    current = per_tag.get(tag)
    per_tag[tag] = activity if current is None else current.merge(activity)


def _many(fold: Fold, named: Sequence[tuple[str, str | None]]) -> DayActivity:
    """Events ``(name, who)`` on an account-day counter, as ``fold`` keeps them (version 3: each name's users
    too): one event each, merged in order, in one pass."""
    return fold.many(named)


class ViewWriter:
    """Applies batches of events to one view table version.

    Args:
        store: the view table.
        models: per-tenant score models.
        outbox: where alerts are written (``streams.alerts.Outbox``); may be None.
        search: an indexer with ``index(tenant, accounts, users)`` (search projection); may be None.
        fold: what the table's items hold (:mod:`projections.folds`); default: the fold of
            :data:`chalicelib.versions.VIEW_VERSION`. A table is written by ``fold_for(its version)``.
    """

    def __init__(self, store: ViewStore, models: ScoreModelStore, outbox: Any = None, search: Any = None, *,
                 deferred: bool = False, settle_after: float = SETTLE_AFTER_SECONDS,
                 settle_min_age: float = SETTLE_MIN_AGE_SECONDS, settle_pages: int = SETTLE_PAGES,
                 settle_bytes: int = SETTLE_BYTES, settle_inline: int = pages.PAGE_BUCKETS,
                 fold: Fold | None = None) -> None:
        self.store = store
        self.fold = fold if fold is not None else fold_for(versions.VIEW_VERSION)
        self.models = models
        self.outbox = outbox
        self.search = search
        # deferred: usage goes to delta pages (one item per bucket of accounts per batch) and the per-account
        # items are settled later; otherwise every touched item is written in the batch (replay, tests).
        self.deferred = deferred
        self.settle_after = settle_after
        self.settle_min_age = settle_min_age
        self.settle_pages = settle_pages
        self.settle_bytes = settle_bytes
        # Due buckets a batch settles itself, at most (the rest: the settler schedule, ``settle_due``). The
        # live projector settles none inline, so a settle never holds up a shard's next batch.
        self.settle_inline = settle_inline
        self._code_recorded = False
        self._code_lock = threading.Lock()

    def _record_code(self) -> None:
        """Add this writer's fold code (``self.fold.code``) to the table's ``META``/``FOLD_CODE`` set, once per
        writer (one small write per process and table)."""
        with self._code_lock:
            if self._code_recorded:
                return
            self.store.client.update_item(
                TableName=self.store.table, Key={"pk": {"S": keys.META_PK}, "sk": {"S": keys.FOLD_CODE_SK}},
                UpdateExpression="ADD codes :c", ExpressionAttributeValues={":c": {"SS": [self.fold.code]}})
            self._code_recorded = True

    def record(self, events_by_tenant: dict[str, list[Event]] | None, now: datetime, *,
               chunks: Mapping[str, Chunks] | None = None, source: str = "L") -> WriteReport:
        """Apply events. ``chunks`` (tenant -> ``[(chunk id, events)]``) says which stored chunk each
        event came from (the unit of re-delivery); plain ``events_by_tenant`` lists are one chunk per
        tenant named by their message ids. ``source`` tells live (``L``) from replay (``R``) claims."""
        stats = WriteReport()
        self._record_code()
        before = (self.store.stats.write_units, self.store.stats.writes, self.store.stats.skipped)
        work: dict[str, Chunks] = dict(chunks or {})
        for tenant_id, events in (events_by_tenant or {}).items():
            if events:
                ids = sorted({e.message_id for e in events})
                work[tenant_id] = [*work.get(tenant_id, []), ("E:" + chunk_tag("\n".join(ids)), events)]
        for tenant_id, tenant_chunks in work.items():
            n = sum(len(evs) for _, evs in tenant_chunks)
            if not n:
                continue
            stats.events += n
            stats.by_tenant[tenant_id] = n
            accounts_written, users_written = self._tenant(tenant_id, tenant_chunks, now, stats, source)
            stats.accounts += len(accounts_written)
            stats.users += len(users_written)
            if self.search is not None and (accounts_written or users_written):
                self.search.index(tenant_id, accounts_written, users_written)
        stats.write_units = self.store.stats.write_units - before[0]
        stats.writes = self.store.stats.writes - before[1]
        stats.skipped = self.store.stats.skipped - before[2]
        return stats

    # --- one tenant ------------------------------------------------------------------------------

    def _tenant(self, tenant_id: str, tenant_chunks: Chunks, now: datetime, stats: WriteReport,
                source: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        # Chunk tags a retro contribution carries into a counter's ring (local: a writer serves several
        # shards' invocations at once).
        also_seen: dict[tuple[str, str], set[str]] = {}
        tag_of: dict[str, str] = {}
        events: list[Event] = []
        identity_copies: set[Event] = set()
        # Live: a tag per chunk (the unit of re-delivery). Replay is never re-delivered: one tag per flush
        # keeps the rings small whatever the flush size.
        batch_tag = chunk_tag("\n".join(sorted(c for c, _ in tenant_chunks)))
        for chunk_id, evs in tenant_chunks:
            tag = batch_tag if source == "R" else chunk_tag(chunk_id)
            for e in evs:
                if e.message_id not in tag_of:
                    tag_of[e.message_id] = tag
                    events.append(e)
                elif not e.is_usage and e not in identity_copies:
                    # Another copy of an identify/group/alias (a retry the client re-timestamped): every
                    # copy is folded, as it would be in another batch (their joins are idempotent), so the
                    # view does not depend on which copies share a batch.
                    events.append(e)
                identity_copies.add(e) if not e.is_usage else None
        pw = PageWriter(tenant_id) if self.deferred else None
        fresh = self._claim(tenant_id, [e for e in events if e.is_usage], tag_of, source, now, batch_tag)
        stats.counted += len(fresh)
        stats.duplicates += sum(1 for e in events if e.is_usage) - len(fresh)
        identity = [e for e in events if not e.is_usage]
        folded = [*identity, *fresh]

        # Identities: anonymous ids merged into users. A stored ALIAS is the merge done (it is written last, once
        # the merge's effects are stored): it wins over this batch's links, and only a link without one merges.
        batch_links = identity_links(identity)
        anon = {e.anonymous_id for e in fresh if e.anonymous_id and not e.user_id}
        stored_links = self._stored_links(tenant_id, anon | set(batch_links))
        links = {**batch_links, **stored_links}

        def who_of(e: Event) -> str | None:
            return links.get(e.user_key, e.user_key) if e.user_key and not e.user_id else e.user_key

        # Users touched, and their stored state (memberships *before* this batch).
        user_batch = user.fold_all(folded)
        canon = {w for e in fresh if (w := who_of(e))} | set(user_batch) | set(links.values())
        heads = self.store.get_many([(keys.user_pk(tenant_id, u), keys.HEAD_SK) for u in canon])
        stored_users = {u: (user.UserState.from_dict(b.data) if b.data else user.empty(u))
                        for (pk, _), b in heads.items() for u in [pk[len(keys.user_pk(tenant_id, "")):]]}

        # (a) unattributed usage per user and day.
        user_days: Deltas = {}
        unattributed: dict[tuple[tuple[str, str], str], list[Event]] = {}
        for e in fresh:
            who = who_of(e)
            if who and not e.group_id:
                unattributed.setdefault(((keys.user_pk(tenant_id, who), keys.user_day_sk(e.day)),
                                         _norm(tag_of[e.message_id])), []).append(e)
                if pw is not None:
                    # An anonymous id not merged (yet): a settle after its merge drops what it still holds.
                    pw.user_event(who, e, _norm(tag_of[e.message_id]), anonymous=who == e.anonymous_id)
        for (key, tag), evs in unattributed.items():
            _add(user_days, key, tag, UserDay.of_many(evs))
        if pw is None:
            self._bump_all(user_days, also_seen, codec=UserDay)

        # (b) retro attribution: alias merges, then new memberships.
        account_days: Deltas = {}
        # What the retro attribution adds to account HEADs (first/last seen, spans) and timelines: the
        # user-days carry them, so a late group leaves the account as an early one would have.
        retro_heads: RetroHeads = {}
        retro_tl: RetroTimelines = {}
        retro_users: dict[str, set[str]] = {}
        direct_new: dict[str, set[str]] = {}
        # Merged now: the links without a stored ALIAS (not the user HEAD's ids: a track carrying both ids, folded
        # before the identify, puts the anonymous id there without merging anything).
        new_links = {a: u for a, u in batch_links.items() if a not in stored_links}
        self._merge_aliases(tenant_id, new_links, stored_users, account_days, also_seen,
                            (retro_heads, retro_tl), pw, user_days)
        for u, new in user_batch.items():
            stored = stored_users.get(u, user.empty(u))
            joined_now = user.merge(stored, new).joined - stored.joined
            if not joined_now:
                continue
            if heads[(keys.user_pk(tenant_id, u), keys.HEAD_SK)].ver == 0 and u not in new_links.values():
                # A new user has no stored days: its usage is this batch's, attributed directly in (c). (Unless
                # an alias merged an anonymous history into it in this batch: those days go through (b).)
                direct_new[u] = set(joined_now)
                continue
            retro_users[u] = set(joined_now)
            history = self._user_days(tenant_id, u, user_days, also_seen)
            for acct in joined_now:
                for day, (ud, ring) in history.items():
                    key = (keys.account_pk(tenant_id, acct), keys.day_sk(day))
                    if pw is not None:
                        pw.account_retro(acct, day, u, _norm("j:" + batch_tag), ud, _tags(ring))
                        continue
                    _add(account_days, key, "j:" + batch_tag, self.fold.of_user(ud.activity.counts, u))
                    _retro(retro_heads, retro_tl, ud, acct, day, u)
                    # The chunks folded into these days now count for the account: a re-delivery of one
                    # of them must not add it to the account again.
                    also_seen.setdefault(key, set()).update(_tags(ring))

        # (c) usage events, attributed: context.groupId, else the memberships known before (b).
        synth: list[Event] = [e for e in identity if e.type == "group"]
        counted_by_retro: set[tuple[str, str]] = set()
        for e in fresh:
            who = who_of(e)
            if e.group_id:
                targets: Iterable[str] = (e.group_id,)
            elif who:
                # Memberships new in this batch got these events through (b) already: they still go to
                # the account's head and timeline, but not to its counters again.
                targets = (stored_users.get(who, user.empty(who)).joined | retro_users.get(who, set())
                           | direct_new.get(who, set()))
                counted_by_retro |= {(e.message_id, a) for a in retro_users.get(who, set())}
            else:
                targets = ()
            for acct in sorted(targets):
                # Active users: the canonical user for membership attribution; the identity the
                # event names when it carries context.groupId.
                synth.append(replace(e, group_id=acct, user_id=e.user_key if e.group_id else who,
                                     anonymous_id=None))
        counted: dict[tuple[tuple[str, str], str], list[tuple[str, str | None]]] = {}
        for e in synth:
            counts = e.is_usage and (e.message_id, e.group_id) not in counted_by_retro
            if pw is not None:
                pw.account_event(e.group_id or "", e, _norm(tag_of[e.message_id]) if counts else "")
            elif counts:
                counted.setdefault(((keys.account_pk(tenant_id, e.group_id or ""), keys.day_sk(e.day)),
                                    tag_of[e.message_id]), []).append((e.catalog_name or "", e.user_id))
        for (key, tag), named in counted.items():
            _add(account_days, key, tag, _many(self.fold, named))

        users_written = self._users(tenant_id, folded, user_batch, pw, heads, stored_users)
        if pw is not None:
            at = int(now.timestamp())
            # One page id per attempt, not per batch: a retried batch can see other stored state than its first
            # attempt (a membership now stored) and must not overwrite what that attempt recorded; the two meet
            # pending, keyed by (item, chunk tag), and count once.
            page_id = f"{source}:{batch_tag}:{time.time_ns():x}"
            page_items = [{**it, "body": encode_body(it["body"])}
                          for it in pw.items(page_id, at, at + CLAIM_TTL_SECONDS)]
            bucket_of_pk = {keys.page_pk(tenant_id, b): b for b in pw.buckets}
            written: dict[int, tuple[int, int]] = {}  # bucket -> (page items, their stored bytes)
            for it in page_items:
                it["nb"] = len(it["body"])  # what a settle takes off the bucket's pending bytes
                n, nb = written.get(bucket_of_pk[it["pk"]], (0, 0))
                written[bucket_of_pk[it["pk"]]] = (n + 1, nb + it["nb"])
            self.store.put_many(page_items)
            # Accounts a group call names for the first time are settled soon (the listing shows them).
            grouped = {e.group_id for e in identity if e.type == "group" and e.group_id}
            known = self.store.get_plain([(keys.account_pk(tenant_id, a), keys.SUMMARY_SK) for a in grouped],
                                         projection="pk, sk") if grouped else {}
            fresh_buckets = {pages.bucket_of(a) for a in grouped
                             if (keys.account_pk(tenant_id, a), keys.SUMMARY_SK) not in known}
            due = sorted(self._due(tenant_id, written, at, now, fresh_buckets))[:self.settle_inline]
            accounts_written = self.settle(tenant_id, now, buckets=due, stats=stats) if due else {}
        else:
            accounts_written = self._accounts(tenant_id, synth, account_days, now, stats, also_seen,
                                              retro_heads, retro_tl)
        self._catalog(tenant_id, fresh, tag_of)
        self._finish_merges(tenant_id, new_links)
        return accounts_written, users_written

    # --- delta pages -----------------------------------------------------------------------------

    def _reset_meta(self, tenant_id: str, bucket: int, taken: list[Blob], oldest: int | None) -> float | None:
        """Before a settle's fold: the bucket's pending count and bytes less what it takes, its oldest page the
        oldest left.
        Returns the bucket's ``due_at`` (a new account's settle), which stays until the fold is done
        (:meth:`_settled_meta`): a bucket counts as due until its settle has written what it took."""
        key = {"pk": {"S": keys.page_pk(tenant_id, bucket)}, "sk": {"S": keys.PAGE_META_SK}}
        values: dict[str, Any] = {":k": {"N": str(-len(taken))},
                                  ":b": {"N": str(-sum(int(p.attrs.get("nb", 0)) for p in taken))}}
        expr = "ADD n :k, nb :b"
        if oldest is None:
            expr += " REMOVE oldest"
        else:
            expr += " SET oldest = :o"
            values[":o"] = {"N": str(oldest)}
        resp = self.store.client.update_item(TableName=self.store.table, Key=key, UpdateExpression=expr,
                                             ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                                             ReturnConsumedCapacity="TOTAL")
        self.store.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        due_at = resp.get("Attributes", {}).get("due_at")
        return float(due_at["N"]) if due_at else None

    def _settled_meta(self, tenant_id: str, bucket: int, rest: list[Blob]) -> None:
        """After a settle's fold, for a bucket that was due for a new account: no longer due, or, when pages too
        young to settle are left (they may name new accounts too), due once the oldest of them may be settled."""
        key = {"pk": {"S": keys.page_pk(tenant_id, bucket)}, "sk": {"S": keys.PAGE_META_SK}}
        if rest:
            ripe_at = min(int(p.attrs.get("at", 0)) for p in rest) + int(self.settle_min_age)
            kw: dict[str, Any] = {"UpdateExpression": "SET due_at = :d",
                                  "ExpressionAttributeValues": {":d": {"N": str(ripe_at)}}}
        else:
            kw = {"UpdateExpression": "REMOVE due_at"}
        resp = self.store.client.update_item(TableName=self.store.table, Key=key, ReturnConsumedCapacity="TOTAL", **kw)
        self.store.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))

    def _settle_links(self, tenant_id: str, links: dict[tuple[str, str], tuple[int, dict[str, Any]]]) -> None:
        """Write pending user links (the newest version of each), and count the ones created in MEMBERS."""
        if not links:
            return
        wanted = {(keys.account_pk(tenant_id, a), keys.user_link_sk(u)): (ver, link)
                  for (a, u), (ver, link) in links.items()}
        existing = set(self.store.get_plain(wanted, projection="pk, sk"))

        def one(key: tuple[str, str]) -> str | None:
            ver, link = wanted[key]
            return key[0] if self.store.put_link(key[0], key[1], link, ver, create=key not in existing) else None

        created: dict[str, int] = {}
        for pk in self.store.run(one, sorted(wanted)):
            if pk is not None:
                created[pk] = created.get(pk, 0) + 1
        self.store.add_members(created)

    def _settle_user_times(self, tenant_id: str, times: dict[str, tuple[datetime | None, datetime | None]]) -> None:
        """Move known users' first/last seen to what pending usage says (under the last-seen step), and rewrite
        the user's links where that moved what a link holds (its first seen), as the direct mode's ``_users``
        does: usage older than a link, folded after it, leaves the link as a replay would."""
        if not times:
            return
        blobs = self.store.get_many([(keys.user_pk(tenant_id, u), keys.HEAD_SK) for u in times])

        def one(user_key: str) -> list[str]:
            first, last = times[user_key]
            key = (keys.user_pk(tenant_id, user_key), keys.HEAD_SK)
            box: list[Any] = []

            def update(b: Blob) -> tuple[Any, dict[str, Any]] | None:
                stored = user.UserState.from_dict(b.data) if b.data else user.empty(user_key)
                merged = user.merge(stored, replace(user.empty(user_key), first_seen=first, last_seen=last))
                box[:] = [stored if b.data else None, merged]
                if b.data is not None and same_but_recency(stored.to_dict(), merged.to_dict()):
                    return None
                return merged.to_dict(), {"last_seen": format_ts(merged.last_seen) if merged.last_seen else None}

            written = self.store.upsert(key, update, current=blobs[key])
            if written is None:
                return []
            stored, merged = box
            link, targets = _link_targets(stored, merged)
            return self._put_links(tenant_id, user_key, link, written.ver, targets)

        created: dict[str, int] = {}
        for made in self.store.run(one, sorted(times)):
            for pk in made:
                created[pk] = created.get(pk, 0) + 1
        self.store.add_members(created)

    def _put_links(self, tenant_id: str, user_key: str, link: dict[str, Any], ver: int, accounts: list[str],
                   known: set[tuple[str, str]] | None = None,
                   checked: set[tuple[str, str]] | None = None) -> list[str]:
        """Write a user's link on these accounts, each conditional on the user's ``HEAD`` version ``ver`` (a newer
        link is never overwritten); returns the account keys where it created one (what ``MEMBERS`` counts).
        Which links exist: ``known`` for the keys in ``checked`` (read by the caller for a whole batch), one
        batched read for the rest."""
        wanted = [(keys.account_pk(tenant_id, a), keys.user_link_sk(user_key)) for a in accounts]
        unknown = [k for k in wanted if k not in (checked or set())]
        existing = (known or set()) | (set(self.store.get_plain(unknown, projection="pk, sk")) if unknown else set())
        return [pk for pk, sk in wanted if self.store.put_link(pk, sk, link, ver, create=(pk, sk) not in existing)]

    def _due(self, tenant_id: str, written: dict[int, tuple[int, int]], at: int, now: datetime,
             new: set[int]) -> set[int]:
        """Count this batch's pages in each bucket's ``META`` item (pending pages, their stored bytes, oldest); the
        buckets due for a settle (:meth:`_is_due`)."""

        def one(b: int) -> int | None:
            expr = "ADD n :k, nb :b SET oldest = if_not_exists(oldest, :at)"
            values = {":k": {"N": str(written[b][0])}, ":b": {"N": str(written[b][1])}, ":at": {"N": str(at)}}
            if b in new:
                # An account new to the listing: due as soon as its page may be settled.
                expr += ", due_at = if_not_exists(due_at, :due)"
                values[":due"] = {"N": str(at + int(self.settle_min_age))}
            resp = self.store.client.update_item(
                TableName=self.store.table,
                Key={"pk": {"S": keys.page_pk(tenant_id, b)}, "sk": {"S": keys.PAGE_META_SK}},
                UpdateExpression=expr, ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                ReturnConsumedCapacity="TOTAL")
            self.store.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
            return b if self._is_due(from_ddb(resp["Attributes"]), now) else None

        return {b for b in self.store.run(one, sorted(written)) if b is not None}

    def _is_due(self, meta: Mapping[str, Any], now: datetime) -> bool:
        """A bucket's ``META`` says it is due for a settle: its pending pages are too many
        (:data:`SETTLE_PAGES`), too big (:data:`SETTLE_BYTES`) or too old (``settle_after``), or one of them named
        an account new to the listing (``due_at``)."""
        n, oldest, due_at = int(meta.get("n", 0)), meta.get("oldest"), meta.get("due_at")
        return n > 0 and (n >= self.settle_pages or int(meta.get("nb", 0)) >= self.settle_bytes
                          or (oldest is not None and float(oldest) <= now.timestamp() - self.settle_after)
                          or (due_at is not None and float(due_at) <= now.timestamp()))

    def due_buckets(self, tenant_id: str, now: datetime) -> list[int]:
        """The tenant's buckets due for a settle, by their ``META`` counters (one BatchGetItem of 64 keys)."""
        return sorted(self._due_by_urgency(tenant_id, now))

    def _due_by_urgency(self, tenant_id: str, now: datetime) -> list[int]:
        """:meth:`due_buckets`, most urgent first: a new account's (``due_at``) by its due time, then by the oldest
        pending page."""
        metas = self.store.get_plain([(keys.page_pk(tenant_id, b), keys.PAGE_META_SK)
                                      for b in range(pages.PAGE_BUCKETS)])
        out: list[tuple[int, float, int]] = []
        for (pk, _), meta in metas.items():
            oldest, due_at = meta.get("oldest"), meta.get("due_at")
            if self._is_due(meta, now):
                new_account = due_at is not None and float(due_at) <= now.timestamp()
                when = float(due_at or 0) if new_account else float(oldest) if oldest is not None else 0.0
                out.append((0 if new_account else 1, when, int(pk.rsplit("#P#", 1)[1], 16)))
        return [b for *_, b in sorted(out)]

    def settle_due(self, tenant_id: str, now: datetime, *, limit: int | None = None,
                   budget_seconds: float | None = None, pause: float = 0.0,
                   stop: threading.Event | None = None) -> int:
        """Settle the tenant's due buckets, most urgent first, one bucket at a time; returns the buckets settled.
        The settler schedule (every minute on AWS, every 15 s locally) calls it for every tenant.

        ``limit``: buckets at most. ``budget_seconds``: no further bucket once this long has passed (a run never
        holds the table for long; what is left is due again on the next run). ``pause``: after each bucket, sleep
        this many times as long as its settle took (a duty cycle: on one shared DynamoDB, the projector's batches
        get the time between). ``stop``: end after the bucket in hand."""
        due = self._due_by_urgency(tenant_id, now)[:limit]
        started = time.monotonic()
        settled = 0
        for b in due:
            if settled and ((budget_seconds is not None and time.monotonic() - started >= budget_seconds)
                            or (stop is not None and stop.is_set())):
                break
            t = time.monotonic()
            self.settle(tenant_id, now, buckets=[b])
            settled += 1
            if pause > 0 and (stop is None or not stop.is_set()):
                (stop.wait if stop is not None else time.sleep)(pause * (time.monotonic() - t))
        return settled

    def settle(self, tenant_id: str, now: datetime, *, buckets: Iterable[int] | None = None, force: bool = False,
               stats: WriteReport | None = None) -> dict[str, dict[str, Any]]:
        """Fold the pending pages of ``buckets`` (all by default) older than the minimum age (``force``: all)
        into the per-account and user-day items, score the accounts they touch, then delete the pages.
        Returns the summaries written."""
        stats = stats or WriteReport()
        found = pages.pending_pages(self.store, tenant_id, range(pages.PAGE_BUCKETS) if buckets is None else buckets)
        horizon = now.timestamp() - (0 if force else self.settle_min_age)
        taken = []
        # Buckets due for a new account: what is left after this settle (pages too young), by bucket.
        was_due: dict[int, list[Blob]] = {}
        for b, bucket_pages in found.items():
            ripe = [p for p in bucket_pages if float(p.attrs.get("at", 0)) <= horizon]
            taken += ripe
            if ripe or not bucket_pages:
                rest = [p for p in bucket_pages if p not in ripe]
                if self._reset_meta(tenant_id, b, ripe,
                                    min((int(p.attrs.get("at", 0)) for p in rest), default=None)) is not None:
                    was_due[b] = rest
        if taken:
            d = pages.derive(tenant_id, taken, fold=self.fold)
            self._drop_merged(tenant_id, d)
            self._settle_links(tenant_id, d.links)
            self._settle_user_times(tenant_id, d.user_times)
            self._bump_all({k: v for k, v in d.user_days.items() if v}, d.user_seen, codec=UserDay)
            written = self._accounts(tenant_id, [], {k: v for k, v in d.account_days.items() if v}, now, stats,
                                     d.account_seen, d.heads, d.timelines)
            self.store.delete_many(d.pages)
        else:
            written = {}
        for b, rest in was_due.items():
            self._settled_meta(tenant_id, b, rest)
        return written

    # --- claims -------------------------------------------------------------------------------------

    def _claim(self, tenant_id: str, usage: list[Event], tag_of: dict[str, str], source: str,
               now: datetime, batch_tag: str) -> list[Event]:
        """The usage events this batch counts: unclaimed ones (claimed now) and its own earlier claims."""
        if not usage:
            return []
        window_of = {e.message_id: claim_window(e) for e in usage}
        windows = sorted(set(window_of.values()))
        # Minute windows hold pages of many batches (a Query each); a window of one message (no client
        # timestamp) holds one page under a known key (read in batches of 100).
        minutes = [w for w in windows if not w.startswith("m")]
        singles = self.store.get_many([(keys.claim_page_pk(tenant_id, w), keys.CLAIM_PAGE_PREFIX)
                                       for w in windows if w.startswith("m")])
        owner_of: dict[str, str] = {}
        found = self.store.query_many([(keys.claim_page_pk(tenant_id, w), keys.CLAIM_PAGE_PREFIX) for w in minutes])
        for page in [p for ps in found for p in ps] + list(singles.values()):
            for owner, digests in (page.data or {}).items():
                for i in range(0, len(digests), DIGEST_CHARS):
                    owner_of.setdefault(digests[i:i + DIGEST_CHARS], owner)
        fresh: list[Event] = []
        new: dict[str, dict[str, list[str]]] = {}  # window -> owner -> digests
        for e in usage:
            mine = f"{source}:{tag_of[e.message_id]}"
            held = owner_of.get(e.digest)
            if held is None:
                owner_of[e.digest] = mine
                new.setdefault(window_of[e.message_id], {}).setdefault(mine, []).append(e.digest)
                fresh.append(e)
            elif held == mine and source != "R":
                # A re-delivery of this chunk (live): the counters' rings say what is already applied.
                # A replay is never re-delivered, so its own earlier claims (a first rebuild, then the
                # promotion's catch-up over the same tables) mean "counted".
                fresh.append(e)
        expires = int(now.timestamp()) + CLAIM_TTL_SECONDS
        self.store.put_many([
            {"pk": keys.claim_page_pk(tenant_id, window),
             "sk": keys.CLAIM_PAGE_PREFIX if window.startswith("m")
             else keys.claim_page_sk(f"{source}:{batch_tag}", n),
             "body": encode_body(page), "ttl": expires}
            for window, owners in sorted(new.items()) for n, page in enumerate(_pages(owners))])
        return fresh

    def _stored_links(self, tenant_id: str, anon: set[str]) -> dict[str, str]:
        if not anon:
            return {}
        found = self.store.get_plain([(keys.user_pk(tenant_id, a), keys.ALIAS_SK) for a in anon])
        prefix = keys.user_pk(tenant_id, "")
        return {pk[len(prefix):]: str(item["user"]) for (pk, _), item in found.items()}

    def _merge_aliases(self, tenant_id: str, new_links: dict[str, str], stored_users: dict[str, user.UserState],
                       account_days: Deltas, also_seen: dict[tuple[str, str], set[str]],
                       retro: tuple[RetroHeads, RetroTimelines], pw: PageWriter | None = None,
                       batch_days: Deltas | None = None) -> None:
        """An anonymous id merged into a user: its days become the user's (all of them: the anonymous id's own are
        deleted by :meth:`_finish_merges`), and its retained days count for the user's accounts, their HEADs and
        timelines naming the user, as if every anonymous event had been folded after the merge.

        The contribution's tag is the merge's own (``a:<anon>`` and the user), not the batch's: the merge happens
        once (its ``ALIAS``), so a re-delivered or bisected batch that merges again adds nothing twice."""
        if not new_links:
            return
        user_days: Deltas = {}
        for anon_id, u in sorted(new_links.items()):
            tag = f"a:{anon_id}\n{u}"
            history = self._user_days(tenant_id, anon_id, batch_days, retained=False)
            cutoff = _retention_cutoff(history)
            for day, (ud, ring) in history.items():
                key = (keys.user_pk(tenant_id, u), keys.user_day_sk(day))
                attributed = stored_users.get(u, user.empty(u)).joined if day >= cutoff else frozenset()
                if pw is not None:
                    pw.user_retro(u, day, _norm(tag), ud, _tags(ring))
                    for acct in attributed:
                        pw.account_retro(acct, day, u, _norm(tag), ud, _tags(ring))
                    # A membership of u new in this batch reads u's days next: with this history in them.
                    if batch_days is not None:
                        _add(batch_days, key, _norm(tag), ud)
                        also_seen.setdefault(key, set()).update(_tags(ring))
                    continue
                _add(user_days, key, tag, ud)
                also_seen.setdefault(key, set()).update(_tags(ring))
                for acct in attributed:
                    akey = (keys.account_pk(tenant_id, acct), keys.day_sk(day))
                    _add(account_days, akey, tag, self.fold.of_user(ud.activity.counts, u))
                    also_seen.setdefault(akey, set()).update(_tags(ring))
                    _retro(*retro, ud, acct, day, u)
        if user_days:
            self._bump_all(user_days, also_seen, codec=UserDay)

    def _finish_merges(self, tenant_id: str, new_links: dict[str, str]) -> None:
        """Once the batch's merges are stored (user-days bumped or paged, accounts written): delete the merged
        anonymous ids' own user-days, then record each merge (``ALIAS``). A batch folded after the merge sends the
        anonymous id's events to the user and never writes those items, so neither does one folded before.

        Bound: one Query and at most one delete per stored day of each anonymous id merged (its days, nothing
        else: the accounts' items the merge touches are the user's accounts on those days). A batch that stops
        between the two is re-delivered and merges again under the same tags (counted once)."""
        if not new_links:
            return
        anon = sorted(new_links)
        found = self.store.query_many([(keys.user_pk(tenant_id, a), keys.USER_DAY_PREFIX) for a in anon])
        gone = [(b.pk, b.sk) for blobs in found for b in blobs]
        if gone:
            self.store.delete_many(gone)
        self.store.put_many([{"pk": keys.user_pk(tenant_id, a), "sk": keys.ALIAS_SK, "user": new_links[a]}
                             for a in anon])

    def _drop_merged(self, tenant_id: str, d: pages.Derived) -> None:
        """A settle: pending user-days of anonymous ids merged since their page was written (an ``ALIAS`` now
        stored) are not written: the merge took them into the user (it reads pending pages too)."""
        merged = self._stored_links(tenant_id, d.anonymous) if d.anonymous else {}
        if not merged:
            return
        pks = {keys.user_pk(tenant_id, a) for a in merged}
        for held in (d.user_days, d.user_seen):
            for key in [k for k in held if k[0] in pks]:
                del held[key]

    def _user_days(self, tenant_id: str, user_key: str, batch_days: Deltas | None = None,
                   batch_seen: dict[tuple[str, str], set[str]] | None = None, *,
                   retained: bool = True) -> dict[str, tuple[UserDay, str]]:
        """The user's retained days (``retained=False``: all its days): ``{day: (user-day, ring)}`` (the ring:
        chunks already in the day). Deferred: with the user's pending pages and this batch's own contributions
        (``batch_days``) merged in."""
        pk = keys.user_pk(tenant_id, user_key)
        blobs, _ = self.store.query_prefix(pk, keys.USER_DAY_PREFIX)
        days = {b.sk[len(keys.USER_DAY_PREFIX):]: (UserDay.from_dict(b.data), str(b.attrs.get("ring") or ""))
                for b in blobs}
        if self.deferred:
            bucket = pages.bucket_of(user_key)
            d = pages.derive(tenant_id, pages.pending_pages(self.store, tenant_id, [bucket])[bucket], users={user_key},
                             accounts=set(), fold=self.fold)  # the user's days only, no account's head
            pending: dict[str, tuple[dict[str, Any], set[str]]] = {}
            for (_pk, sk), per in d.user_days.items():
                pending.setdefault(sk[len(keys.USER_DAY_PREFIX):], ({}, set()))[0].update(per)
            for (_pk, sk), also in d.user_seen.items():
                pending.setdefault(sk[len(keys.USER_DAY_PREFIX):], ({}, set()))[1].update(also)
            for (kpk, sk), per in (batch_days or {}).items():
                if kpk == pk:
                    slot, also_slot = pending.setdefault(sk[len(keys.USER_DAY_PREFIX):], ({}, set()))
                    for tag, ud in per.items():
                        slot.setdefault(tag, ud)
                    also_slot.update((batch_seen or {}).get((kpk, sk), set()))
            for day, (per, also) in pending.items():
                stored, ring = days.get(day, (None, ""))
                total = pages.merge_counters(stored, ring, per, also, UserDay)
                days[day] = (total, ring + "".join(sorted(set(per) | also)))
        if not retained:
            return days
        cutoff = _retention_cutoff(days)
        return {d: a for d, a in days.items() if d >= cutoff}

    # --- counters -----------------------------------------------------------------------------------

    def _bump_all(self, deltas: Deltas, also_seen: dict[tuple[str, str], set[str]] | None = None, *,
                  codec: Any = DayActivity) -> None:
        if not deltas:
            return
        blobs = self.store.get_many(deltas)
        extra = also_seen or {}
        self.store.run(lambda k: self._bump(blobs[k], deltas[k], extra.get(k, set()), codec), list(deltas))

    def _bump(self, blob: Blob, per_tag: dict[str, Any], also_seen: set[str] = frozenset(),  # type: ignore[assignment]
              codec: Any = DayActivity) -> None:
        """Add each tagged contribution not in the item's ring; remember the tags (and ``also_seen``:
        chunk tags a retro contribution carries in)."""
        tags = {t: (t if len(t) == TAG_CHARS else chunk_tag(t)) for t in per_tag}

        def update(b: Blob) -> tuple[Any, dict[str, Any]] | None:
            ring = str(b.attrs.get("ring") or "")
            seen = _tags(ring)
            new = [t for t in sorted(per_tag) if tags[t] not in seen]
            if not new:
                return None
            total = codec.from_dict(b.data) if b.data else codec()
            for t in new:
                total = total.merge(per_tag[t])
            own = "".join(tags[t] for t in new)[-OWN_TAGS * TAG_CHARS:]
            # The tags of this write always stay (a re-delivery of this batch must find them); older
            # tags, and the tags a retro contribution carries in, within the last RING only.
            keep = (ring + "".join(sorted(also_seen - seen)) + own)[-(RING * TAG_CHARS + len(own)):]
            return total.to_dict(), {"ring": keep}

        self.store.upsert((blob.pk, blob.sk), update, current=blob)

    # --- accounts ----------------------------------------------------------------------------

    def _accounts(self, tenant_id: str, synth: list[Event], account_days: Deltas, now: datetime,
                  stats: WriteReport, also_seen: dict[tuple[str, str], set[str]], retro_heads: RetroHeads,
                  retro_tl: RetroTimelines) -> dict[str, dict[str, Any]]:
        batch = account.fold_all(synth, retro_heads)
        touched = set(batch) | {pk.split("#A#", 1)[1] for pk, _ in account_days}
        if not touched:
            return {}
        timelines = timeline.fold_all(synth, retro_tl)
        model = self.models.current(tenant_id, cached=True)
        pks = {a: keys.account_pk(tenant_id, a) for a in touched}
        heads = self.store.get_many([(pk, keys.HEAD_SK) for pk in pks.values()] +
                                    [(pk, keys.SUMMARY_SK) for pk in pks.values()])
        tl_blobs = self.store.get_many([(pks[a], keys.timeline_sk(d)) for a, d in timelines])
        timelines_of: dict[str, list[tuple[str, timeline.TimelineBucket]]] = {}
        for (a, d), tl in timelines.items():
            timelines_of.setdefault(a, []).append((d, tl))
        members = self.store.get_plain([(pk, keys.MEMBERS_SK) for pk in pks.values()])
        self._bump_all(account_days, also_seen)
        # Every touched account's days (as bumped now), read in parallel before scoring.
        order = sorted(touched)
        days_of = dict(zip(order, self.store.query_many([(pks[a], keys.DAY_PREFIX) for a in order]), strict=True))

        def one(account_id: str) -> tuple[str, dict[str, Any] | None, int]:
            pk = pks[account_id]
            head = heads[(pk, keys.HEAD_SK)]
            if account_id in batch:
                head = self._write_head(pk, head, batch[account_id])
            for d, tl in timelines_of.get(account_id, []):
                self._write_timeline(tl_blobs[(pk, keys.timeline_sk(d))], tl)
            state, _, _ = load_account(self.store, tenant_id, account_id, head, days_of[account_id])
            if state.account_id != account_id or (head.ver == 0 and not state.days):
                return account_id, None, 0
            summary, alerts = self._write_summary(tenant_id, state, model, now, heads[(pk, keys.SUMMARY_SK)],
                                                  members.get((pk, keys.MEMBERS_SK), {}))
            return account_id, summary, alerts

        written: dict[str, dict[str, Any]] = {}
        for account_id, summary, alerts in self.store.run(one, order):
            stats.alerts += alerts
            if summary is not None:
                written[account_id] = summary
        return written

    def _write_head(self, pk: str, blob: Blob, new: AccountState) -> Blob:
        """Merge the batch into the account's HEAD; returns the HEAD as stored now."""
        seen: list[Blob] = [blob]

        def update(b: Blob) -> tuple[Any, None] | None:
            seen[0] = b
            stored = assemble_account(b.data, new.account_id, {}) if b.data else account.empty(new.account_id)
            head_only = AccountState(new.account_id, new.traits, new.first_seen, new.last_seen, frozenset(),
                                     FrozenMap(), new.event_spans)
            merged = account.merge(stored, head_only)
            data = account_head_dict(merged)
            return None if b.data is not None and same_but_recency(b.data, data) else (data, None)

        written = self.store.upsert((pk, keys.HEAD_SK), update, current=blob)
        return seen[0] if written is None else written

    def _write_timeline(self, blob: Blob, tl: timeline.TimelineBucket) -> None:
        def update(b: Blob) -> tuple[Any, None] | None:
            stored = (timeline.TimelineBucket.from_dict(b.data) if b.data
                      else timeline.TimelineBucket(tl.account_id, tl.bucket))
            merged = timeline.merge(stored, tl)
            return None if merged == stored and b.data is not None else (merged.to_dict(), None)

        self.store.upsert((blob.pk, blob.sk), update, current=blob)

    def _write_summary(self, tenant_id: str, state: AccountState, model: ScoreModel, now: datetime,
                       blob: Blob | None, members: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, int]:
        """Score the account and write its SUMMARY (and an alert, atomically) if anything changed.
        ``members``: the account's ``MEMBERS`` item if already read (read here otherwise)."""
        hs = health.score(state, model, now, seats(state))
        pk = keys.account_pk(tenant_id, state.account_id)
        if members is None:
            members = self.store.get_plain([(pk, keys.MEMBERS_SK)]).get((pk, keys.MEMBERS_SK), {})
        # No MEMBERS item: a version 1 account (upcast on read during an upgrade) still lists its users.
        attrs = summary_attrs(tenant_id, state, hs, now,
                              users_count=int(members["n"]) if "n" in members else None)
        return self.write_summary(tenant_id, pk, attrs, hs, model, now, blob)

    def write_summary(self, tenant_id: str, pk: str, attrs: dict[str, Any], hs: HealthScore, model: ScoreModel,
                      now: datetime, blob: Blob | None) -> tuple[dict[str, Any] | None, int]:
        for _ in range(8):
            if blob is None:
                blob = self.store.get_many([(pk, keys.SUMMARY_SK)])[(pk, keys.SUMMARY_SK)]
            stored = {k: v for k, v in blob.attrs.items() if k not in _VOLATILE}
            if blob.ver and _summary_unchanged(stored, {k: v for k, v in attrs.items() if v is not None}):
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

    def _users(self, tenant_id: str, events: list[Event], batch: dict[str, user.UserState],
               pw: PageWriter | None = None, heads: dict[tuple[str, str], Blob] | None = None,
               stored_users: dict[str, user.UserState] | None = None) -> dict[str, dict[str, Any]]:
        """Merge the batch into each user's ``HEAD`` (and links). ``heads``: the users' ``HEAD``s as this batch read
        them already (the rest are read here) and ``stored_users`` those decoded; a write is conditional on the
        version read, so a ``HEAD`` changed since by another writer only costs a re-read."""
        if not batch:
            return {}
        wanted = [(keys.user_pk(tenant_id, u), keys.HEAD_SK) for u in batch]
        have = heads or {}
        missing = [k for k in wanted if k not in have]
        blobs = {**{k: have[k] for k in wanted if k in have}, **(self.store.get_many(missing) if missing else {})}
        # Which links of the accounts this batch names exist already (one batched read, not one per user); the
        # page mode writes links at the settle, which reads them then.
        candidates = {(keys.account_pk(tenant_id, a), keys.user_link_sk(u)) for u, st in batch.items()
                      for a in st.accounts} if pw is None else set()
        known = set(self.store.get_plain(candidates, projection="pk, sk")) if candidates else set()

        def writes_nothing(user_key: str, stored: user.UserState, merged: user.UserState) -> bool:
            """A known user's merge needs no write: nothing but recency moved, or (pages) only its first/last seen,
            which waits for the settle (recorded on the page here)."""
            if merged == stored or same_but_recency(stored.to_dict(), merged.to_dict()):
                return True
            if pw is not None and _same_but_times(stored, merged):
                pw.user_times(user_key, merged.first_seen, merged.last_seen)
                return True
            return False

        def one(user_key: str) -> tuple[str, dict[str, Any] | None]:
            new = batch[user_key]
            key = (keys.user_pk(tenant_id, user_key), keys.HEAD_SK)
            box: list[Any] = []

            def update(b: Blob) -> tuple[Any, dict[str, Any]] | None:
                stored = user.UserState.from_dict(b.data) if b.data else user.empty(user_key)
                merged = user.merge(stored, new)
                box[:] = [stored if b.data else None, merged]
                if b.data is not None and writes_nothing(user_key, stored, merged):
                    return None
                # last_seen as a plain attribute: the users list reads it with a projection.
                return merged.to_dict(), {"last_seen": format_ts(merged.last_seen) if merged.last_seen else None}

            result = self.store.upsert(key, update, current=blobs[key])
            if result is None:
                return user_key, None
            stored, merged = box
            link, targets = _link_targets(stored, merged)
            made: list[str] = []
            if pw is not None:
                for account_id in targets:  # the link (and the MEMBERS count it adds) is settled from the page
                    pw.account_link(account_id, user_key, link, result.ver)
            else:
                made = self._put_links(tenant_id, user_key, link, result.ver, targets, known, candidates)
            return user_key, {**link, "accounts": sorted(merged.accounts), "_created": made,
                              "last_seen": format_ts(merged.last_seen) if merged.last_seen else None}

        def quiet(user_key: str) -> bool:
            """The user's update writes nothing (decided here, without I/O: most users of a usage batch), so it
            need not go through the store's I/O pool: ``update``'s decision on the blob in hand."""
            b = blobs[(keys.user_pk(tenant_id, user_key), keys.HEAD_SK)]
            if b.data is None:
                return False
            # Decoded already when this batch read it (``stored_users`` holds exactly the users of ``heads``).
            stored = (stored_users or {}).get(user_key) or user.UserState.from_dict(b.data)
            if not writes_nothing(user_key, stored, user.merge(stored, batch[user_key])):
                return False
            self.store.stats.add(skipped=1)  # as ``upsert`` counts an update that returns None
            return True

        todo = [u for u in sorted(batch) if not quiet(u)]
        done = [(u, link) for u, link in self.store.run(one, todo) if link is not None]
        created: dict[str, int] = {}
        for _, link in done:
            for pk in link.pop("_created"):
                created[pk] = created.get(pk, 0) + 1
        # The links created in this batch, added to each account's MEMBERS counter (one write per account).
        self.store.add_members(created)
        return dict(done)

    # --- catalog -------------------------------------------------------------------------------

    def _catalog(self, tenant_id: str, fresh: list[Event], tag_of: dict[str, str]) -> None:
        """One small head item per event name (first/last seen, property types, capped), and one
        counter per (day, name) with the ring of applied chunks."""
        batch = catalog.fold_all(fresh)
        if not batch.entries:
            return
        pk = keys.catalog_pk(tenant_id)
        counters: Deltas = {}
        per_day: dict[tuple[tuple[str, str], str], list[tuple[str, str | None]]] = {}
        for e in fresh:
            name = e.catalog_name or ""
            per_day.setdefault(((pk, keys.catalog_day_sk(e.day, name[:MAX_CATALOG_KEY])), tag_of[e.message_id]),
                               []).append(("n", None))
        for (key, tag), named in per_day.items():
            _add(counters, key, tag, _many(self.fold, named))
        heads = {(pk, keys.catalog_name_sk(name[:MAX_CATALOG_KEY])): (name, entry)
                 for name, entry in batch.entries.items()}
        blobs = self.store.get_many(heads)

        def one(key: tuple[str, str]) -> None:
            name, entry = heads[key]
            new = catalog.CatalogEntry(entry.first_seen, entry.last_seen, FrozenMap(), entry.properties)

            def update(b: Blob) -> tuple[Any, None] | None:
                old = catalog.CatalogEntry.from_dict(b.data) if b.data else None
                merged_entry = new if old is None else catalog.merge(
                    catalog.CatalogState(FrozenMap({name: old})), catalog.CatalogState(FrozenMap({name: new}))
                ).entries[name]
                data = {"name": name, **merged_entry.to_dict()}
                return None if b.data is not None and same_but_recency(b.data, data) else (data, None)

            self.store.upsert(key, update, current=blobs[key])

        self.store.run(one, list(heads))
        self._bump_all(counters)


MAX_CATALOG_KEY = 128


def _same_but_times(a: user.UserState, b: user.UserState) -> bool:
    return replace(a, first_seen=None, last_seen=None) == replace(b, first_seen=None, last_seen=None)


def _norm(tag: str) -> str:
    """A ring tag: chunk tags are already :data:`TAG_CHARS` long; longer tags (retro sources) are hashed."""
    return tag if len(tag) == TAG_CHARS else chunk_tag(tag)


def _retention_cutoff(days: Mapping[str, Any]) -> str:
    """The oldest retained day of a user's days (:data:`projections.account.RETENTION_DAYS` back from the newest)."""
    if not days:
        return ""
    return account.window(datetime.fromisoformat(max(days) + "T00:00:00+00:00"), account.RETENTION_DAYS)[0]


def _retro(heads: RetroHeads, timelines: RetroTimelines, ud: UserDay, account_id: str, day: str,
           user_id: str) -> None:
    """Add what a user-day brings to an account (a late membership or alias) to the batch's HEAD and
    timeline contributions."""
    head, bucket = ud.for_account(account_id, day, user_id)
    heads[account_id] = head if account_id not in heads else account.merge(heads[account_id], head)
    key = (account_id, day)
    timelines[key] = bucket if key not in timelines else timeline.merge(timelines[key], bucket)


def claim_window(e: Event) -> str:
    """The claim-page window of an event: the minute of its client timestamp (stable across an SDK's
    retries), or the message digest when the client sent no timestamp."""
    if e.original_timestamp is not None:
        return "t" + e.original_timestamp.strftime("%Y%m%dT%H%M")
    return "m" + e.digest


def _pages(owners: dict[str, list[str]]) -> list[dict[str, str]]:
    """Split ``{owner: [digest]}`` into pages of at most :data:`PAGE_DIGESTS` digests."""
    pages: list[dict[str, str]] = [{}]
    room = PAGE_DIGESTS
    for owner, digests in sorted(owners.items()):
        while digests:
            if room == 0:
                pages.append({})
                room = PAGE_DIGESTS
            take, digests = digests[:room], digests[room:]
            pages[-1][owner] = pages[-1].get(owner, "") + "".join(take)
            room -= len(take)
    return pages


_RECENCY_KEYS = frozenset({"last", "last_seen"})


def same_but_recency(old: Any, new: Any) -> bool:
    """``new`` equals ``old`` but for "last seen" times (``last_seen``, a span's ``last``), each less than
    :data:`LAST_SEEN_STEP` later: not worth a write (an account HEAD, a catalog name)."""
    moved: list[tuple[str, str]] = []

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            for k in a:
                if k in _RECENCY_KEYS and isinstance(a[k], str) and isinstance(b[k], str):
                    moved.append((a[k], b[k]))
                elif not same(a[k], b[k]):
                    return False
            return True
        return bool(a == b)

    return same(old, new) and all(parse_ts(b) - parse_ts(a) < LAST_SEEN_STEP for a, b in moved)


def _link_targets(stored: user.UserState | None, merged: user.UserState) -> tuple[dict[str, Any], list[str]]:
    """A user's link (what its ``USER#`` items hold: traits, email, first seen) and the accounts to write it on:
    every account of the user when what a link holds changed (or the user is new), else only the accounts it
    joined. Links are not rewritten on every event of the user."""
    link = user_link(merged)
    if stored is None or user_link(stored) != link:
        return link, sorted(merged.accounts)
    return link, sorted(merged.accounts - stored.accounts)


def _summary_unchanged(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """Nothing to write: the SUMMARY is the same but for a ``last_seen`` less than :data:`LAST_SEEN_STEP`
    newer (and the listing key derived from it). Every SUMMARY write also rewrites the four listing
    indexes' copies: moving ``last_seen`` alone on every batch was the largest cost of a busy account."""
    def content(attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in attrs.items() if k != "seen_sk"}

    return stored == new or same_but_recency(content(stored), content(new))


def _tags(ring: str) -> set[str]:
    return {ring[i:i + TAG_CHARS] for i in range(0, len(ring), TAG_CHARS)}


def _never_active(score: HealthScore) -> bool:
    return any(f.name == "recency" and f.raw is None for f in score.factors)
