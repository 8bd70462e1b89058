"""Usage with Segment attribution (view version 2): bounded counters, distinct-user sketches, and
the reference fold the stored view must agree with.

Attribution (Segment semantics): a ``track``/``page``/``screen`` counts towards account *A* when it
carries ``context.groupId`` = *A* (ingest stores it as ``groupId``); otherwise towards every account
its user joined through ``group``, whatever order the calls arrive in. ``alias`` (``previousId`` ->
``userId``) and ``identify`` carrying both ``userId`` and ``anonymousId`` merge the anonymous
identity's history into the user. A message id counts once; of copies with different content the
view counts the first to arrive (:func:`attribute` models identical copies, which is what a retry is).

Everything here is bounded: per-day counters keep at most :data:`MAX_NAMES` event names (the rest
add up in :data:`OTHER`), names are cut to :data:`MAX_NAME_CHARS`, and a :class:`Sketch` of distinct
users is exact up to :data:`SKETCH_EXACT` users and a fixed-size HyperLogLog above.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final, Self

from projections.events import Event

__all__ = [
    "MAX_NAMES",
    "MAX_NAME_CHARS",
    "NAME_SKETCH_EXACT",
    "NAME_SKETCH_REGISTERS",
    "NameSketch",
    "OTHER",
    "SKETCH_EXACT",
    "SKETCH_REGISTERS",
    "Sketch",
    "add_count",
    "attribute",
    "attributed_events",
    "identity_links",
    "memberships",
    "resolve",
    "storage_name",
]

MAX_NAMES: Final = 100
"""Event names counted by name per day item; further names add up under :data:`OTHER`."""
MAX_NAME_CHARS: Final = 128
"""Stored event names are cut to this many characters."""
OTHER: Final = "(other)"
SKETCH_EXACT: Final = 128
"""A sketch lists user hashes exactly up to this many users."""
SKETCH_P: Final = 9
SKETCH_REGISTERS: Final = 1 << SKETCH_P
"""HyperLogLog registers (512: standard error 1.04/sqrt(512) = 4.6%)."""
NAME_SKETCH_EXACT: Final = 16
"""A per-name sketch (:class:`NameSketch`, view version 3) lists user hashes exactly up to this many users."""
NAME_SKETCH_P: Final = 6
NAME_SKETCH_REGISTERS: Final = 1 << NAME_SKETCH_P
"""Registers of a per-name sketch (64: standard error 1.04/sqrt(64) = 13%)."""


def storage_name(name: str) -> str:
    """The name a counter is stored under (cut to :data:`MAX_NAME_CHARS`)."""
    return name[:MAX_NAME_CHARS]


def add_count(counts: dict[str, int], name: str, n: int) -> None:
    """Add ``n`` to ``counts[name]`` keeping at most :data:`MAX_NAMES` names (+ :data:`OTHER`).

    The cap is order-sensitive only in *which* names keep their own counter once a day has more
    than :data:`MAX_NAMES` names; totals are always exact.
    """
    name = storage_name(name)
    if name in counts or len([k for k in counts if k != OTHER]) < MAX_NAMES:
        counts[name] = counts.get(name, 0) + n
    else:
        counts[OTHER] = counts.get(OTHER, 0) + n


def _hash64(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Sketch:
    """Distinct users: a join-semilattice (union), exact while small, HyperLogLog when large.

    ``hashes`` holds 64-bit user hashes while there are at most :data:`SKETCH_EXACT`; above that
    ``registers`` (a string of :data:`SKETCH_REGISTERS` characters ``chr(48 + rank)``) replaces them.
    Largest stored form: 512 characters, or 128 hashes of 16 hex characters.
    """

    EXACT: ClassVar[int] = SKETCH_EXACT
    P: ClassVar[int] = SKETCH_P

    hashes: frozenset[int] = frozenset()
    registers: str | None = None

    @classmethod
    def of(cls, users: Iterable[str]) -> Self:
        return cls._from_hashes({_hash64(u) for u in users})

    @classmethod
    def _from_hashes(cls, hashes: set[int]) -> Self:
        if len(hashes) <= cls.EXACT:
            return cls(frozenset(hashes))
        return cls(frozenset(), _registers(hashes, cls.P))

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(self).__name__} with a {type(other).__name__}")
        if self.registers is None and other.registers is None:
            return self._from_hashes(set(self.hashes | other.hashes))
        regs = _registers(set(self.hashes | other.hashes), self.P)
        for source in (self.registers, other.registers):
            if source is not None:
                regs = "".join(max(a, b) for a, b in zip(regs, source, strict=True))
        return type(self)(frozenset(), regs)

    def __len__(self) -> int:
        if self.registers is None:
            return len(self.hashes)
        m = 1 << self.P
        ranks = [ord(c) - 48 for c in self.registers]
        estimate = 0.7213 / (1 + 1.079 / m) * m * m / sum(2.0 ** -r for r in ranks)
        zeros = ranks.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return max(self.EXACT + 1, round(estimate))

    def to_dict(self) -> dict[str, Any]:
        if self.registers is not None:
            return {"r": self.registers}
        return {"h": sorted(f"{h:016x}" for h in self.hashes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Self:
        if not data:
            return cls()
        if data.get("r"):
            return cls(frozenset(), str(data["r"]))
        return cls(frozenset(int(h, 16) for h in data.get("h") or ()))


@dataclass(frozen=True, slots=True)
class NameSketch(Sketch):
    """The distinct users of one event name on one day (view version 3): a smaller :class:`Sketch`, exact up to
    :data:`NAME_SKETCH_EXACT` users, then a HyperLogLog of :data:`NAME_SKETCH_REGISTERS` registers. Largest
    stored form: 16 hashes of 16 hex characters (``{"h": [...]}``, 311 bytes of JSON) or 64 characters."""

    EXACT: ClassVar[int] = NAME_SKETCH_EXACT
    P: ClassVar[int] = NAME_SKETCH_P


def _registers(hashes: set[int], p: int) -> str:
    regs = [0] * (1 << p)
    for h in hashes:
        index = h >> (64 - p)
        rest = (h << p) & ((1 << 64) - 1)
        rank = 1 if rest == 0 else min(64 - p + 1, (64 - rest.bit_length()) + 1)
        regs[index] = max(regs[index], rank)
    return "".join(chr(48 + r) for r in regs)


# --- the reference fold ------------------------------------------------------------------------


def identity_links(events: Iterable[Event]) -> dict[str, str]:
    """Anonymous id -> user id, from ``alias`` and from calls carrying both ids."""
    links: dict[str, str] = {}
    for e in events:
        if e.type == "alias" and e.user_id and e.previous_id and e.previous_id != e.user_id:
            links.setdefault(e.previous_id, e.user_id)
        elif e.user_id and e.anonymous_id and e.anonymous_id != e.user_id:
            links.setdefault(e.anonymous_id, e.user_id)
    return links


def resolve(links: Mapping[str, str], who: str) -> str:
    """The canonical user of an identity (one hop: anonymous ids point at user ids)."""
    return links.get(who, who)


def memberships(events: Iterable[Event], links: Mapping[str, str]) -> dict[str, set[str]]:
    """Canonical user -> accounts joined through ``group``."""
    out: dict[str, set[str]] = {}
    for e in events:
        if e.type == "group" and e.group_id and e.user_key:
            out.setdefault(resolve(links, e.user_key), set()).add(e.group_id)
    return out


def attribute(events: Iterable[Event]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{account: {day: {"counts": {name: n}, "users": n_distinct}}}`` with Segment attribution.

    The order-free reference the stored view is tested against: message ids count once, links
    and memberships apply to every event of the user whenever they arrived.
    """
    counts: dict[str, dict[str, dict[str, int]]] = {}
    users: dict[str, dict[str, set[str]]] = {}
    for e in attributed_events(events):
        if not e.is_usage:
            continue
        acct = e.group_id or ""
        add_count(counts.setdefault(acct, {}).setdefault(e.day, {}), e.catalog_name or "", 1)
        # Active users: the canonical user for membership attribution; the identity the event names when it
        # carries context.groupId (an alias does not rewrite those): attributed_events puts it in user_id.
        if e.user_id:
            users.setdefault(acct, {}).setdefault(e.day, set()).add(e.user_id)
    return {
        acct: {d: {"counts": c, "users": len(users.get(acct, {}).get(d, set()))} for d, c in days.items()}
        for acct, days in counts.items()
    }


def attributed_events(events: Iterable[Event]) -> list[Event]:
    """The events every account's HEAD and timeline are folded from, with Segment attribution: each
    ``group`` call, and each usage event once per account it counts towards (``groupId`` set to that
    account, the user to the one :func:`attribute` counts as active). Order-free, like :func:`attribute`:
    ``projections.account.fold_all`` and ``projections.timeline.fold_all`` of this list are what the
    view's HEAD (first/last seen, event spans) and ``TL#`` items must show, whatever the arrival order.
    """
    unique: dict[str, Event] = {}
    for e in events:
        unique.setdefault(e.message_id, e)
    evs = list(unique.values())
    links = identity_links(evs)
    members = memberships(evs, links)
    out: list[Event] = [e for e in evs if e.type == "group" and e.group_id]
    for e in sorted(evs, key=lambda x: (x.timestamp, x.message_id)):
        if not e.is_usage:
            continue
        who = resolve(links, e.user_key) if e.user_key else None
        targets = {e.group_id} if e.group_id else (members.get(who, set()) if who else set())
        for acct in sorted(targets):
            out.append(replace(e, group_id=acct, user_id=e.user_key if e.group_id else who, anonymous_id=None))
    return out
