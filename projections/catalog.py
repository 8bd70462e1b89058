"""Tenant event catalog: one state per tenant, one entry per event name.

Names: ``track`` -> the event name, ``page`` -> ``page:<name>``, ``screen`` -> ``screen:<name>``
(see :attr:`projections.events.Event.catalog_name`). Per name the catalog keeps counts per UTC
day (version 2: a message id counts once within a fold; across batches the view's message claims
keep it once, and :func:`merge` adds counts), first/last seen, and the JSON types observed
for each top-level property. Per-day digests older than :data:`RETENTION_DAYS` before the
newest day in the whole catalog are dropped (order-insensitive, as in the account view).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from projections.events import Event, FrozenMap, format_ts, json_type, parse_ts
from projections.registers import frozen_sets_from_dict, frozen_sets_to_dict

__all__ = [
    "JSON_TYPES",
    "NAME",
    "RETENTION_DAYS",
    "VERSION",
    "CatalogEntry",
    "CatalogState",
    "empty",
    "fold",
    "fold_all",
    "merge",
]

NAME: Final = "catalog"
VERSION: Final = 2
MAX_PROPERTIES: Final = 100
"""Property names kept per event name (the smallest 100 names of at most 128 characters: order-free)."""
RETENTION_DAYS: Final = 90
JSON_TYPES: Final = frozenset({"string", "number", "boolean", "object", "array", "null"})


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One event name: per-day counts (version 2: counters, added by :func:`merge`), first/last
    seen, property types (capped at :data:`MAX_PROPERTIES`)."""

    first_seen: datetime
    last_seen: datetime
    days: FrozenMap[int] = field(default_factory=FrozenMap)
    properties: FrozenMap[frozenset[str]] = field(default_factory=FrozenMap)

    def count(self, start: str | None = None, end: str | None = None) -> int:
        """Distinct events on the retained days with ``start <= day <= end``."""
        return sum(
            n for day, n in self.days.items() if (start is None or day >= start) and (end is None or day <= end)
        )

    def daily_counts(self) -> dict[str, int]:
        """``{"YYYY-MM-DD": count}`` over the retained days, sorted by day."""
        return {day: self.days[day] for day in sorted(self.days)}

    def to_dict(self) -> dict[str, Any]:
        """``{"first_seen", "last_seen", "days": {day: count}, "properties": {prop: [types]}}``."""
        return {
            "first_seen": format_ts(self.first_seen),
            "last_seen": format_ts(self.last_seen),
            "days": dict(sorted(self.days.items())),
            "properties": frozen_sets_to_dict(self.properties),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogEntry:
        """Inverse of :meth:`to_dict`."""
        return cls(
            first_seen=parse_ts(data["first_seen"]),
            last_seen=parse_ts(data["last_seen"]),
            # version 1 stored digest lists per day: upcast to their count.
            days=FrozenMap({str(d): len(set(n)) if isinstance(n, list) else int(n)
                            for d, n in (data.get("days") or {}).items()}),
            properties=frozen_sets_from_dict(data.get("properties")),
        )


@dataclass(frozen=True, slots=True)
class CatalogState:
    """The tenant's event catalog: ``entries`` by catalog name."""

    entries: FrozenMap[CatalogEntry] = field(default_factory=FrozenMap)

    def to_dict(self) -> dict[str, Any]:
        """``{"entries": {name: CatalogEntry.to_dict()}}``; round-trips via :meth:`from_dict`."""
        return {"entries": {name: self.entries[name].to_dict() for name in sorted(self.entries)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogState:
        """Inverse of :meth:`to_dict`."""
        return cls(FrozenMap({str(n): CatalogEntry.from_dict(v) for n, v in (data.get("entries") or {}).items()}))


def empty() -> CatalogState:
    """The catalog before any event."""
    return CatalogState()


class _EntryBuilder:
    def __init__(self, first_seen: datetime, last_seen: datetime) -> None:
        self.first_seen = first_seen
        self.last_seen = last_seen
        self.days: dict[str, set[str]] = {}
        self.stored: dict[str, int] = {}
        self.properties: dict[str, set[str]] = {}

    def seen(self, first: datetime, last: datetime) -> None:
        self.first_seen = min(self.first_seen, first)
        self.last_seen = max(self.last_seen, last)


class _Builder:
    """Mutable accumulator: absorbs events and states, then builds one frozen state."""

    def __init__(self) -> None:
        self.entries: dict[str, _EntryBuilder] = {}

    def _entry(self, name: str, first: datetime, last: datetime) -> _EntryBuilder:
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = _EntryBuilder(first, last)
        else:
            entry.seen(first, last)
        return entry

    def add_state(self, state: CatalogState) -> None:
        for name, source in state.entries.items():
            entry = self._entry(name, source.first_seen, source.last_seen)
            for day, n in source.days.items():
                entry.stored[day] = entry.stored.get(day, 0) + n
            for prop, types in source.properties.items():
                entry.properties.setdefault(prop, set()).update(types)

    def add_event(self, event: Event) -> None:
        name = event.catalog_name
        if name is None:
            return
        entry = self._entry(name, event.timestamp, event.timestamp)
        entry.days.setdefault(event.day, set()).add(event.digest)
        for prop, value in event.properties.items():
            entry.properties.setdefault(prop, set()).add(json_type(value))

    def build(self) -> CatalogState:
        all_days = [day for entry in self.entries.values() for day in (*entry.days, *entry.stored)]
        cutoff = (
            (date.fromisoformat(max(all_days)) - timedelta(days=RETENTION_DAYS - 1)).isoformat() if all_days else ""
        )
        entries = {}
        for name in sorted(self.entries):
            entry = self.entries[name]
            entries[name] = CatalogEntry(
                first_seen=entry.first_seen,
                last_seen=entry.last_seen,
                days=FrozenMap({day: entry.stored.get(day, 0) + len(entry.days.get(day, ()))
                                for day in sorted({*entry.days, *entry.stored}) if day >= cutoff}),
                properties=FrozenMap({p: frozenset(entry.properties[p])
                                      for p in sorted(k for k in entry.properties if len(k) <= 128)[:MAX_PROPERTIES]}),
            )
        return CatalogState(FrozenMap(entries))


def fold(state: CatalogState, event: Event) -> CatalogState:
    """Apply one event (identify, group and alias calls leave the catalog unchanged)."""
    if event.catalog_name is None:
        return state
    builder = _Builder()
    builder.add_state(state)
    builder.add_event(event)
    return builder.build()


def fold_all(events: Iterable[Event], state: CatalogState | None = None) -> CatalogState:
    """Fold a batch of events into ``state`` (default: empty); linear in the batch size."""
    builder = _Builder()
    if state is not None:
        builder.add_state(state)
    for event in events:
        builder.add_event(event)
    return builder.build()


def merge(a: CatalogState, b: CatalogState) -> CatalogState:
    """Join two catalogs (commutative, associative, idempotent)."""
    builder = _Builder()
    builder.add_state(a)
    builder.add_state(b)
    return builder.build()
