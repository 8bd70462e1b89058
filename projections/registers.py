"""Order-insensitive building blocks shared by the folds.

Every piece of projection state is a join-semilattice: sets (union), min/max, and
last-write-wins registers whose order is total, so that folding any permutation or
duplication of the same events, or merging partial states in any grouping, gives the
same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from projections.events import FrozenMap, canonical_json, format_ts, freeze, parse_ts, thaw

__all__ = [
    "Stamped",
    "frozen_sets_from_dict",
    "frozen_sets_to_dict",
    "lww_put",
    "max_opt",
    "min_opt",
    "opt_ts",
    "opt_ts_str",
    "traits_from_dict",
    "traits_to_dict",
]


@dataclass(frozen=True, slots=True)
class Stamped:
    """A last-write-wins register value: ``value`` written by message ``message_id`` at ``at``.

    Newer means a larger ``(at, message_id)``; equal stamps (a message id re-sent with other
    content) fall back to the canonical JSON of the value, so the order is total.
    """

    at: datetime
    message_id: str
    value: Any

    def newer_than(self, other: Stamped) -> bool:
        """True if this write wins over ``other``."""
        mine, theirs = (self.at, self.message_id), (other.at, other.message_id)
        if mine != theirs:
            return mine > theirs
        return canonical_json(self.value) > canonical_json(other.value)

    def to_dict(self) -> dict[str, Any]:
        """``{"at": iso, "messageId": str, "value": json}``."""
        return {"at": format_ts(self.at), "messageId": self.message_id, "value": thaw(self.value)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stamped:
        """Inverse of :meth:`to_dict`."""
        return cls(parse_ts(data["at"]), str(data["messageId"]), freeze(data.get("value")))


def lww_put(registers: dict[str, Stamped], key: str, candidate: Stamped) -> None:
    """Store ``candidate`` under ``key`` in a mutable builder dict if it wins."""
    current = registers.get(key)
    if current is None or candidate.newer_than(current):
        registers[key] = candidate


def min_opt(a: datetime | None, b: datetime | None) -> datetime | None:
    """Minimum where None means "nothing seen"."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def max_opt(a: datetime | None, b: datetime | None) -> datetime | None:
    """Maximum where None means "nothing seen"."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def traits_to_dict(traits: Mapping[str, Stamped]) -> dict[str, Any]:
    """Serialise a map of registers: ``{key: Stamped.to_dict()}``."""
    return {key: traits[key].to_dict() for key in sorted(traits)}


def traits_from_dict(data: Mapping[str, Any] | None) -> FrozenMap[Stamped]:
    """Inverse of :func:`traits_to_dict`."""
    return FrozenMap({str(k): Stamped.from_dict(v) for k, v in (data or {}).items()})


def frozen_sets_to_dict(sets: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
    """``{key: sorted list}`` for a map of string sets."""
    return {key: sorted(sets[key]) for key in sorted(sets)}


def frozen_sets_from_dict(data: Mapping[str, Iterable[str]] | None) -> FrozenMap[frozenset[str]]:
    """Inverse of :func:`frozen_sets_to_dict`."""
    return FrozenMap({str(k): frozenset(str(x) for x in v) for k, v in (data or {}).items()})


def opt_ts(text: str | None) -> datetime | None:
    """Parse an optional ISO timestamp."""
    return None if text is None else parse_ts(text)


def opt_ts_str(value: datetime | None) -> str | None:
    """Format an optional timestamp."""
    return None if value is None else format_ts(value)
