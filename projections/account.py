"""Account view: one state per account (Segment ``groupId``), folded from group and usage calls.

Events that touch an account: ``group`` calls (traits, and the ``userId`` they link) and
``track``/``page``/``screen`` calls whose ``groupId`` is set. Everything in the state is a
join-semilattice (see :mod:`projections.registers`) except the per-day counters (version 2):
:func:`fold_all` counts a message id once within the events it is given, and :func:`merge` *adds*
day counters (two states hold disjoint events; the view's message claims make them so). The
usage a user brings to an account by ``group`` membership is attributed by the view writer (see
:mod:`projections.usage` for the reference semantics).

Version 3 of the fold (:mod:`projections.folds`) also keeps, per account-day, the distinct users of each event
name (:attr:`DayActivity.names`): the per-key-feature weekly active users of the health score's
``key_feature_wau`` factor. Version 2 days hold none and are stored as before.

Per-day data is bounded: only the newest :data:`RETENTION_DAYS` UTC days, counted back from
the newest usage day in the state, are kept. That bound depends only on the set of events,
so pruning inside the fold keeps it order-insensitive (a day that is out of the window for
some intermediate state is out of the window for the final state too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from projections.events import Event, FrozenMap, day_of, format_ts, parse_ts
from projections.registers import (
    Stamped,
    cap_traits,
    lww_put,
    max_opt,
    min_opt,
    opt_ts,
    opt_ts_str,
    traits_from_dict,
    traits_to_dict,
)
from projections.usage import OTHER, NameSketch, Sketch, add_count, storage_name

__all__ = [
    "NAME",
    "RETENTION_DAYS",
    "VERSION",
    "AccountState",
    "DayActivity",
    "upcast_day_v1",
    "FeatureUsage",
    "Span",
    "active_days",
    "active_user_counts",
    "active_users",
    "daily_usage",
    "empty",
    "event_count",
    "feature_usage",
    "fold",
    "fold_all",
    "has_name_users",
    "key",
    "key_feature_users",
    "merge",
    "window",
]

NAME: Final = "account"
VERSION: Final = 2
MAX_SPANS: Final = 100
"""Event names whose first/last use the account HEAD keeps (the 100 smallest names)."""
RETENTION_DAYS: Final = 90
"""Per-day data older than this many days before the newest usage day is dropped."""


@dataclass(frozen=True, slots=True)
class DayActivity:
    """Usage on one UTC day: event counts by name, a sketch of active users and (view version 3) a sketch of
    each name's users.

    Counts are plain counters (a message id is counted once *before* it reaches a day: in a
    batch by :func:`fold_all`, across batches by the view's message claims), so :meth:`merge`
    adds them: two states are two disjoint sets of events. Names are capped
    (:data:`projections.usage.MAX_NAMES`, the rest under :data:`projections.usage.OTHER`).

    ``names`` (version 3 only; empty in version 2, and then not stored) holds a
    :class:`projections.usage.NameSketch` per name the day counts by name, plus one under ``OTHER`` for the
    users of the names counted there: its keys are always among the keys of ``counts``.

    Size of the stored ``DAY#`` body, worst case (101 counter keys of 128 characters; JSON before zlib):
    ``counts`` about 14 KB, ``users`` at most 2.4 KB (128 hashes) or 0.5 KB (512 registers), ``names`` at
    most 101 x (128-character key + 311 bytes: 16 hashes) = 45 KB: **under 62 KB of JSON**, stored compressed
    (``chalicelib.views.encode_body``; the hashes are incompressible hex, so about 33 KB). Version 2's worst case
    is under 17 KB. ``tests/unit/test_projections_account.py`` measures it at 200,000 events.
    """

    counts: FrozenMap[int] = field(default_factory=FrozenMap)
    users: Sketch = field(default_factory=Sketch)
    names: FrozenMap[NameSketch] = field(default_factory=FrozenMap)

    def count(self, name: str | None = None) -> int:
        """Events on this day, of one name or (None) of all names."""
        if name is not None:
            return int(self.counts.get(storage_name(name), 0))
        return sum(self.counts.values())

    def name_users(self, name: str) -> NameSketch:
        """The users of one name on this day (empty in version 2, or for a name counted under ``OTHER``)."""
        return self.names.get(storage_name(name)) or NameSketch()

    def merge(self, other: DayActivity) -> DayActivity:
        """Sum of two disjoint days' counts; union of their users, and of each name's users."""
        counts = dict(self.counts)
        for name, n in other.counts.items():
            if name == OTHER:
                counts[OTHER] = counts.get(OTHER, 0) + n
            else:
                add_count(counts, name, n)
        names = self.names
        if other.names:
            joined = dict(self.names)
            for name, users in other.names.items():
                # A name the merged counters count under OTHER has its users there too.
                into = name if name in counts else OTHER
                joined[into] = users if into not in joined else joined[into].merge(users)
            names = FrozenMap(dict(sorted(joined.items())))
        return DayActivity(FrozenMap(dict(sorted(counts.items()))), self.users.merge(other.users), names)

    def to_dict(self) -> dict[str, Any]:
        """``{"counts": {name: n}, "users": sketch}``, and ``"names": {name: sketch}`` when there are any
        (version 3): a version 2 day is stored exactly as before."""
        out = {"counts": dict(sorted(self.counts.items())), "users": self.users.to_dict()}
        if self.names:
            out["names"] = {name: self.names[name].to_dict() for name in sorted(self.names)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DayActivity:
        """Inverse of :meth:`to_dict`; a version 1 day (``{"users": [ids], "events": {name: [digests]}}``)
        is upcast on read (:func:`upcast_day_v1`)."""
        if "events" in data or isinstance(data.get("users"), list):
            return upcast_day_v1(data)
        return cls(FrozenMap({str(k): int(v) for k, v in (data.get("counts") or {}).items()}),
                   Sketch.from_dict(data.get("users")),
                   FrozenMap({str(k): NameSketch.from_dict(v) for k, v in sorted((data.get("names") or {}).items())}))

    @classmethod
    def of_named(cls, named: Iterable[tuple[str, str | None]], *, name_users: bool) -> DayActivity:
        """Events ``(name, user or None)``, one each, on a day: the counters, the users and (``name_users``,
        version 3) each name's users."""
        counts: dict[str, int] = {}
        users: set[str] = set()
        by_name: dict[str, set[str]] = {}
        for name, who in named:
            add_count(counts, name, 1)
            if who:
                users.add(who)
                if name_users:
                    by_name.setdefault(storage_name(name), set()).add(who)
        return cls(FrozenMap(dict(sorted(counts.items()))), Sketch.of(users), _names(counts, by_name))

    @classmethod
    def of_user(cls, counts: FrozenMap[int], who: str, *, name_users: bool) -> DayActivity:
        """One user's counted usage (a user-day's counters) on a day: what a late ``group`` or an ``alias``
        brings to an account."""
        names = FrozenMap({name: NameSketch.of([who]) for name in sorted(counts)}) if name_users else FrozenMap()
        return cls(counts, Sketch.of([who]), names)


def _names(counts: Mapping[str, int], by_name: Mapping[str, set[str]]) -> FrozenMap[NameSketch]:
    """Per-name sketches keyed as ``counts`` keys the names (a name not counted by name: under ``OTHER``)."""
    if not by_name:
        return FrozenMap()
    grouped: dict[str, set[str]] = {}
    for name, users in by_name.items():
        grouped.setdefault(name if name in counts else OTHER, set()).update(users)
    return FrozenMap({name: NameSketch.of(grouped[name]) for name in sorted(grouped)})


def upcast_day_v1(data: Mapping[str, Any]) -> DayActivity:
    """A version 1 day item (digest sets) as a version 2 day: counts = digests per name, users sketched."""
    counts: dict[str, int] = {}
    for name, digests in sorted((data.get("events") or {}).items()):
        add_count(counts, str(name), len(set(digests)))
    return DayActivity(FrozenMap(dict(sorted(counts.items()))), Sketch.of(str(u) for u in data.get("users") or ()))


@dataclass(frozen=True, slots=True)
class Span:
    """First and last timestamp something was seen (all time, never pruned)."""

    first: datetime
    last: datetime

    def merge(self, other: Span) -> Span:
        """The span covering both."""
        return Span(min(self.first, other.first), max(self.last, other.last))

    def to_dict(self) -> dict[str, str]:
        """``{"first": iso, "last": iso}``."""
        return {"first": format_ts(self.first), "last": format_ts(self.last)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Span:
        """Inverse of :meth:`to_dict`."""
        return cls(parse_ts(data["first"]), parse_ts(data["last"]))


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything the read model and the health score need about one account.

    Attributes:
        account_id: the Segment ``groupId``.
        traits: last-write-wins group traits, by ``(timestamp, messageId)``.
        first_seen / last_seen: min/max timestamp of any event touching the account.
        users: user ids linked by group calls or seen on usage events of the account.
        days: per UTC day (``YYYY-MM-DD``) activity, newest :data:`RETENTION_DAYS` days.
        event_spans: per event (catalog) name, first/last time used, all time.
    """

    account_id: str
    traits: FrozenMap[Stamped] = field(default_factory=FrozenMap)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    users: frozenset[str] = frozenset()
    days: FrozenMap[DayActivity] = field(default_factory=FrozenMap)
    event_spans: FrozenMap[Span] = field(default_factory=FrozenMap)

    @property
    def name(self) -> str | None:
        """The ``name`` trait, if it is a string."""
        stamped = self.traits.get("name")
        return stamped.value if stamped is not None and isinstance(stamped.value, str) else None

    def trait(self, trait_name: str, default: Any = None) -> Any:
        """Current value of one trait (frozen JSON), or ``default``."""
        stamped = self.traits.get(trait_name)
        return default if stamped is None else stamped.value

    @property
    def last_active_day(self) -> str | None:
        """Newest UTC day with usage, if any."""
        return max(self.days) if self.days else None

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-compatible dict; ``AccountState.from_dict(s.to_dict()) == s``.

        Shape::

            {"account_id": str,
             "traits": {key: {"at": iso, "messageId": str, "value": json}},
             "first_seen": iso | None, "last_seen": iso | None,
             "users": [sorted ids],
             "days": {"YYYY-MM-DD": {"counts": {name: n}, "users": sketch, "names": {name: sketch}?}},
             "event_spans": {name: {"first": iso, "last": iso}}}
        """
        return {
            "account_id": self.account_id,
            "traits": traits_to_dict(self.traits),
            "first_seen": opt_ts_str(self.first_seen),
            "last_seen": opt_ts_str(self.last_seen),
            "users": sorted(self.users),
            "days": {day: self.days[day].to_dict() for day in sorted(self.days)},
            "event_spans": {name: self.event_spans[name].to_dict() for name in sorted(self.event_spans)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccountState:
        """Inverse of :meth:`to_dict`. Missing collections read as empty."""
        return cls(
            account_id=str(data["account_id"]),
            traits=traits_from_dict(data.get("traits")),
            first_seen=opt_ts(data.get("first_seen")),
            last_seen=opt_ts(data.get("last_seen")),
            users=frozenset(str(u) for u in data.get("users") or ()),
            days=FrozenMap({str(d): DayActivity.from_dict(v) for d, v in (data.get("days") or {}).items()}),
            event_spans=FrozenMap({str(n): Span.from_dict(v) for n, v in (data.get("event_spans") or {}).items()}),
        )


@dataclass(frozen=True, slots=True)
class FeatureUsage:
    """Use of one key feature: in the window (``count``, ``active_days``) and all time."""

    name: str
    used: bool
    count: int
    active_days: int
    first_used: datetime | None
    last_used: datetime | None


def key(event: Event) -> str | None:
    """The account an event touches, or None (identify, alias, or no ``groupId``)."""
    if event.group_id and (event.type == "group" or event.is_usage):
        return event.group_id
    return None


def empty(account_id: str) -> AccountState:
    """The state of an account before any event."""
    return AccountState(account_id=account_id)


class _Builder:
    """Mutable accumulator: absorbs events and states, then builds one frozen state."""

    def __init__(self, account_id: str, name_users: bool = False) -> None:
        self.account_id = account_id
        self.name_users = name_users
        self.traits: dict[str, Stamped] = {}
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None
        self.users: set[str] = set()
        self.day_users: dict[str, set[str]] = {}
        self.day_events: dict[str, dict[str, set[str]]] = {}
        self.day_name_users: dict[str, dict[str, set[str]]] = {}
        self.day_stored: dict[str, DayActivity] = {}
        self.spans: dict[str, Span] = {}

    def add_state(self, state: AccountState) -> None:
        if state.account_id != self.account_id:
            raise ValueError(f"account_id mismatch: {state.account_id!r} != {self.account_id!r}")
        for trait_key, stamped in state.traits.items():
            lww_put(self.traits, trait_key, stamped)
        self.first_seen = min_opt(self.first_seen, state.first_seen)
        self.last_seen = max_opt(self.last_seen, state.last_seen)
        self.users |= state.users
        for day, activity in state.days.items():
            self.day_users.setdefault(day, set())
            current = self.day_stored.get(day)
            self.day_stored[day] = activity if current is None else current.merge(activity)
        for name, span in state.event_spans.items():
            self._span(name, span)

    def add_event(self, event: Event) -> None:
        if key(event) != self.account_id:
            return
        self.first_seen = min_opt(self.first_seen, event.timestamp)
        self.last_seen = max_opt(self.last_seen, event.timestamp)
        if event.user_id:
            self.users.add(event.user_id)
        if event.type == "group":
            for trait_key, value in event.traits.items():
                lww_put(self.traits, trait_key, Stamped(event.timestamp, event.message_id, value))
            return
        name = event.catalog_name or ""
        day = event.day
        users = self.day_users.setdefault(day, set())
        if event.user_id:
            users.add(event.user_id)
            if self.name_users:
                self.day_name_users.setdefault(day, {}).setdefault(storage_name(name), set()).add(event.user_id)
        self.day_events.setdefault(day, {}).setdefault(name, set()).add(event.digest)
        self._span(name, Span(event.timestamp, event.timestamp))

    def _span(self, name: str, span: Span) -> None:
        current = self.spans.get(name)
        self.spans[name] = span if current is None else current.merge(span)

    def build(self) -> AccountState:
        days: dict[str, DayActivity] = {}
        if self.day_users:
            cutoff = _days_before(max(self.day_users), RETENTION_DAYS - 1)
            for day in sorted(self.day_users):
                if day < cutoff:
                    continue
                counts: dict[str, int] = {}
                for name, digests in sorted(self.day_events.get(day, {}).items()):
                    add_count(counts, name, len(digests))
                fresh = DayActivity(FrozenMap(dict(sorted(counts.items()))), Sketch.of(self.day_users[day]),
                                    _names(counts, self.day_name_users.get(day, {})))
                stored = self.day_stored.get(day)
                days[day] = fresh if stored is None else stored.merge(fresh)
        return AccountState(
            account_id=self.account_id,
            traits=FrozenMap(dict(sorted(cap_traits(self.traits).items()))),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            users=frozenset(self.users),
            days=FrozenMap(days),
            # Spans of at most MAX_SPANS names (the smallest: order-free) keep HEAD bounded.
            event_spans=FrozenMap(dict(sorted(self.spans.items())[:MAX_SPANS])),
        )


def fold(state: AccountState, event: Event, *, name_users: bool = False) -> AccountState:
    """Apply one event. Events that do not touch ``state.account_id`` leave it unchanged. ``name_users``: keep
    each name's users per day (fold version 3, :mod:`projections.folds`)."""
    if key(event) != state.account_id:
        return state
    builder = _Builder(state.account_id, name_users)
    builder.add_state(state)
    builder.add_event(event)
    return builder.build()


def fold_all(events: Iterable[Event], states: Mapping[str, AccountState] | None = None, *,
             name_users: bool = False) -> dict[str, AccountState]:
    """Fold a batch of events of any accounts into ``states`` (by account id).

    Returns a new dict holding every given state plus every account touched by ``events``.
    Equivalent to folding event by event, but linear in the batch size. ``name_users``: as :func:`fold`.
    """
    builders: dict[str, _Builder] = {}
    for account_id, state in (states or {}).items():
        builders[account_id] = _Builder(account_id, name_users)
        builders[account_id].add_state(state)
    for event in events:
        event_account = key(event)
        if event_account is None:
            continue
        if event_account not in builders:
            builders[event_account] = _Builder(event_account, name_users)
        builders[event_account].add_event(event)
    return {account_id: builder.build() for account_id, builder in builders.items()}


def merge(a: AccountState, b: AccountState) -> AccountState:
    """Join two states of the same account (commutative, associative, idempotent).

    ``merge(fold_all(xs)[k], fold_all(ys)[k]) == fold_all(xs + ys)[k]``, so the projector may
    fold a batch on its own and merge the result into the stored state.

    Raises:
        ValueError: if the account ids differ.
    """
    builder = _Builder(a.account_id)
    builder.add_state(a)
    builder.add_state(b)
    return builder.build()


# --- queries: pure functions of a state and an as-of time -------------------------------------


def _days_before(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def window(as_of: datetime, days: int) -> tuple[str, str]:
    """Inclusive UTC day range ``(first, last)`` of the ``days`` days ending on ``as_of``'s day.

    Data is bucketed by UTC day: the whole of ``as_of``'s day counts as inside the window.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    last = day_of(as_of)
    return _days_before(last, days - 1), last


def _in_window(state: AccountState, as_of: datetime, days: int) -> list[DayActivity]:
    first, last = window(as_of, days)
    return [activity for day, activity in state.days.items() if first <= day <= last]


def active_users(state: AccountState, as_of: datetime, days: int = 1) -> Sketch:
    """Distinct users active in the ``days`` UTC days ending on ``as_of``'s day (``len`` counts them)."""
    users = Sketch()
    for activity in _in_window(state, as_of, days):
        users = users.merge(activity.users)
    return users


def active_user_counts(state: AccountState, as_of: datetime, windows: Iterable[int] = (1, 7, 30)) -> dict[int, int]:
    """Active user counts per window length, e.g. ``{1: dau, 7: wau, 30: mau}``."""
    return {days: len(active_users(state, as_of, days)) for days in windows}


def active_days(state: AccountState, as_of: datetime, days: int = 30) -> int:
    """Number of UTC days with any usage among the ``days`` days ending on ``as_of``'s day."""
    return sum(1 for activity in _in_window(state, as_of, days) if activity.count() > 0)


def event_count(state: AccountState, as_of: datetime, days: int, names: Iterable[str] | None = None) -> int:
    """Events (distinct message ids per day) in the window, of the given names or all."""
    activities = _in_window(state, as_of, days)
    if names is None:
        return sum(activity.count() for activity in activities)
    wanted = set(names)
    return sum(activity.count(name) for activity in activities for name in wanted)


def daily_usage(state: AccountState, start: str | None = None, end: str | None = None) -> dict[str, dict[str, int]]:
    """Events by day and name: ``{"YYYY-MM-DD": {name: count}}`` for ``start <= day <= end``."""
    return {
        day: dict(sorted(state.days[day].counts.items()))
        for day in sorted(state.days)
        if (start is None or day >= start) and (end is None or day <= end)
    }


def feature_usage(
    state: AccountState, key_features: Iterable[str], as_of: datetime, days: int = 30
) -> tuple[FeatureUsage, ...]:
    """Use of each key feature (a tenant setting) in the window ending on ``as_of``'s day.

    ``first_used``/``last_used`` are all time (not cut at ``as_of``).
    """
    activities = _in_window(state, as_of, days)
    result = []
    for name in key_features:
        count = sum(activity.count(name) for activity in activities)
        days_used = sum(1 for activity in activities if activity.count(name) > 0)
        span = state.event_spans.get(name)
        result.append(
            FeatureUsage(
                name=name,
                used=count > 0,
                count=count,
                active_days=days_used,
                first_used=None if span is None else span.first,
                last_used=None if span is None else span.last,
            )
        )
    return tuple(result)


def has_name_users(state: AccountState) -> bool:
    """Whether the state keeps each name's users (fold version 3): some retained day holds them. A version 2
    state (or one without any usage by a known user) does not."""
    return any(activity.names for activity in state.days.values())


def key_feature_users(state: AccountState, key_features: Iterable[str], as_of: datetime,
                      days: int = 7) -> dict[str, int] | None:
    """Distinct users of each key feature in the ``days`` UTC days ending on ``as_of``'s day (weekly by
    default), or None for a state that keeps no per-name users (version 2). A feature counted under
    :data:`projections.usage.OTHER` on a day (past the day's :data:`projections.usage.MAX_NAMES`) has no users
    of its own there."""
    if not has_name_users(state):
        return None
    activities = _in_window(state, as_of, days)
    out: dict[str, int] = {}
    for name in key_features:
        users = NameSketch()
        for activity in activities:
            users = users.merge(activity.name_users(name))
        out[name] = len(users)
    return out
