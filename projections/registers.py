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
    "MAX_TRAITS",
    "MAX_TRAIT_KEY",
    "MAX_TRAIT_VALUE",
    "Stamped",
    "cap_traits",
    "cap_value",
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


MAX_TRAITS = 50
"""Traits kept per user or account: the first this-many trait names in sorted order (order-free)."""
MAX_TRAIT_KEY = 128
"""Trait names longer than this many characters are not kept."""
MAX_TRAIT_VALUE = 256
"""A trait value whose canonical JSON is longer than this is kept as that JSON cut to this length."""


def cap_value(value: Any) -> Any:
    """A trait value bounded to :data:`MAX_TRAIT_VALUE` characters of JSON (a pure function)."""
    if isinstance(value, str):
        return value[:MAX_TRAIT_VALUE]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = canonical_json(value)
    return value if len(text) <= MAX_TRAIT_VALUE else text[:MAX_TRAIT_VALUE]


def cap_traits(registers: Mapping[str, Stamped]) -> dict[str, Stamped]:
    """The bounded view of a register map: at most :data:`MAX_TRAITS` names, the smallest ones.

    Keeping the smallest names (not the first seen) keeps the cap a function of the set of
    writes, so folds stay order-insensitive. Largest result: 50 x (128 + 256 characters + ~80 bytes).
    """
    names = sorted(k for k in registers if len(k) <= MAX_TRAIT_KEY)[:MAX_TRAITS]
    return {k: registers[k] for k in names}


def lww_put(registers: dict[str, Stamped], key: str, candidate: Stamped) -> None:
    """Store ``candidate`` under ``key`` in a mutable builder dict if it wins (values capped)."""
    if len(key) > MAX_TRAIT_KEY:
        return
    candidate = Stamped(candidate.at, candidate.message_id, freeze(cap_value(thaw(candidate.value))))
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
