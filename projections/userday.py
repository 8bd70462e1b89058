"""A user's usage on one UTC day that no ``context.groupId`` attributed: what a later ``group`` (or an
``alias`` into a user that has accounts) brings to an account, whatever order the calls arrive in.

Segment attribution counts a ``track`` without ``context.groupId`` towards every account its user
joined, *whenever* the ``group`` arrives. So the user-day keeps, besides the counters, every figure
the account's own items show for that usage: first/last time (the account's first/last seen), the
per-name first/last use (event spans) and the day's newest timeline entries. A late ``group`` adds
all of them to the account, and the account ends where it would have been had the ``group`` come
first (``tests/unit/test_projections_userday.py`` and the Hypothesis interleavings of
``tests/functional/test_projection_v2.py``).

Everything here is a join except the counters (added, as :class:`projections.account.DayActivity`:
the view's claims make two contributions disjoint), and every part is bounded: at most
:data:`projections.account.MAX_SPANS` spans (the smallest names, as the account HEAD keeps) and
:data:`projections.timeline.MAX_PER_BUCKET` entries (the newest, as the account timeline keeps).
Keeping the newest *n* of a subset loses nothing the account needs: an entry among the newest *n* of
the account's day is among the newest *n* of any subset holding it.

Entries are stored without a user: they belong to the user-day's owner, and take the canonical user
when they are applied (an anonymous history merged by ``alias`` shows the user it was merged into).

Format versions: ``1`` is view version 2's user-day (``{"counts", "users"}`` only), upcast on read
by :func:`upcast_v1` (no spans, no entries: a late ``group`` brings its counts only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from projections.account import MAX_SPANS, AccountState, DayActivity, Span
from projections.events import Event, FrozenMap, format_ts, parse_ts
from projections.registers import max_opt, min_opt, opt_ts, opt_ts_str
from projections.timeline import MAX_PER_BUCKET, Entry, TimelineBucket, entry
from projections.usage import Sketch, add_count, storage_name

__all__ = ["FORMAT", "UserDay", "upcast_v1"]

FORMAT: Final = 2
"""Stored format of a user-day (``"v"`` in its body); older formats are upcast on read."""


@dataclass(frozen=True, slots=True)
class UserDay:
    """Unattributed usage of one user on one day: counters, first/last, spans, newest entries."""

    activity: DayActivity = field(default_factory=DayActivity)
    first: datetime | None = None
    last: datetime | None = None
    spans: FrozenMap[Span] = field(default_factory=FrozenMap)
    entries: frozenset[Entry] = frozenset()

    @classmethod
    def of(cls, event: Event) -> UserDay:
        """The user-day contribution of one usage event."""
        name = event.catalog_name or ""
        counts: dict[str, int] = {}
        add_count(counts, name, 1)
        return cls(DayActivity(FrozenMap(counts), Sketch()), event.timestamp, event.timestamp,
                   FrozenMap({storage_name(name): Span(event.timestamp, event.timestamp)}),
                   frozenset({replace(entry(event), user_id=None)}))

    @classmethod
    def of_many(cls, events: Sequence[Event]) -> UserDay:
        """The user-day contribution of usage events: equal to merging :meth:`of` of each in order, in one
        pass (a batch of a busy user's events is not merged one event at a time)."""
        if len(events) == 1:
            return cls.of(events[0])
        counts: dict[str, int] = {}
        spans: dict[str, tuple[datetime, datetime]] = {}
        entries: set[Entry] = set()
        first: datetime | None = None
        last: datetime | None = None
        for e in events:
            name = e.catalog_name or ""
            add_count(counts, name, 1)
            ts = e.timestamp
            key = storage_name(name)
            span = spans.get(key)
            spans[key] = (ts, ts) if span is None else (min(span[0], ts), max(span[1], ts))
            first = ts if first is None or ts < first else first
            last = ts if last is None or ts > last else last
            entries.add(replace(entry(e), user_id=None))
        return cls(DayActivity(FrozenMap(dict(sorted(counts.items()))), Sketch()), first, last,
                   FrozenMap({n: Span(a, b) for n, (a, b) in sorted(spans.items())[:MAX_SPANS]}),
                   frozenset(sorted(entries, reverse=True)[:MAX_PER_BUCKET]))

    def merge(self, other: UserDay) -> UserDay:
        """Counters added (disjoint contributions), everything else joined."""
        spans = dict(self.spans)
        for name, span in other.spans.items():
            spans[name] = span if name not in spans else spans[name].merge(span)
        return UserDay(self.activity.merge(other.activity), min_opt(self.first, other.first),
                       max_opt(self.last, other.last), FrozenMap(dict(sorted(spans.items())[:MAX_SPANS])),
                       frozenset(sorted(self.entries | other.entries, reverse=True)[:MAX_PER_BUCKET]))

    def for_account(self, account_id: str, day: str, user_id: str) -> tuple[AccountState, TimelineBucket]:
        """What this usage adds to ``account_id``'s HEAD (first/last seen, spans) and to its timeline of
        ``day`` when the user ``user_id`` is a member (the counters go through the day item)."""
        head = AccountState(account_id, first_seen=self.first, last_seen=self.last, event_spans=self.spans)
        bucket = TimelineBucket(account_id, day, frozenset(replace(e, user_id=user_id) for e in self.entries))
        return head, bucket

    def to_dict(self) -> dict[str, Any]:
        """``{"v": 2, "counts", "users", "first", "last", "spans": {name: {first, last}}, "entries": [...]}``."""
        return {"v": FORMAT, **self.activity.to_dict(), "first": opt_ts_str(self.first), "last": opt_ts_str(self.last),
                "spans": {n: s.to_dict() for n, s in sorted(self.spans.items())},
                "entries": [[e.timestamp, e.message_id, e.type, e.name] for e in sorted(self.entries)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserDay:
        """Inverse of :meth:`to_dict`; older formats are upcast (:func:`upcast_v1`)."""
        if int(data.get("v", 1)) < FORMAT:
            return upcast_v1(data)
        return cls(DayActivity.from_dict(data), opt_ts(data.get("first")), opt_ts(data.get("last")),
                   FrozenMap({str(n): Span.from_dict(s) for n, s in (data.get("spans") or {}).items()}),
                   frozenset(Entry(format_ts(parse_ts(t)), str(m), str(k), n, None)
                             for t, m, k, n in data.get("entries") or ()))


def upcast_v1(data: Mapping[str, Any]) -> UserDay:
    """A format-1 user-day (view version 2 before order-free attribution: counters only)."""
    return UserDay(DayActivity.from_dict(data))
