"""User view: one state per user (``userId``, or ``anonymousId`` when there is no ``userId``).

Every call type touches the user it names: identify (traits), group (links an account),
track (traits too, when it carries them: ``context.traits``),
track/page/screen (first/last seen, accounts from ``groupId``; a user's recent activity is on
the account timelines, so the user state keeps no timeline of its own), alias (records
``previousId`` on the new ``userId``; identities are not merged). Like the account view,
the state is a join-semilattice, so folds ignore order and duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from projections.events import Event, FrozenMap
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

__all__ = [
    "NAME",
    "VERSION",
    "UserState",
    "empty",
    "fold",
    "fold_all",
    "key",
    "merge",
]

NAME: Final = "user"
VERSION: Final = 2
MAX_ACCOUNTS: Final = 50
"""Accounts kept per user (the smallest ids, so the cap is order-free)."""
MAX_IDS: Final = 20
"""Aliases and anonymous ids kept per user (the smallest, order-free)."""


@dataclass(frozen=True, slots=True)
class UserState:
    """Everything the read model keeps about one user.

    Attributes:
        user_key: ``userId``, or ``anonymousId`` for users never identified.
        traits: last-write-wins identify traits, by ``(timestamp, messageId)``.
        accounts: group ids from group calls and from usage events (at most :data:`MAX_ACCOUNTS`).
        joined: group ids from group calls only: the memberships usage without a
            ``context.groupId`` is attributed through (at most :data:`MAX_ACCOUNTS`).
        first_seen / last_seen: min/max timestamp of any event of the user.
        aliases: ``previousId`` values aliased to this user.
        anonymous_ids: anonymous ids seen together with this ``userId``.
    """

    user_key: str
    traits: FrozenMap[Stamped] = field(default_factory=FrozenMap)
    accounts: frozenset[str] = frozenset()
    joined: frozenset[str] = frozenset()
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    aliases: frozenset[str] = frozenset()
    anonymous_ids: frozenset[str] = frozenset()

    def trait(self, trait_name: str, default: Any = None) -> Any:
        """Current value of one trait (frozen JSON), or ``default``."""
        stamped = self.traits.get(trait_name)
        return default if stamped is None else stamped.value

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-compatible dict; ``UserState.from_dict(s.to_dict()) == s``.

        Shape::

            {"user_key": str,
             "traits": {key: {"at": iso, "messageId": str, "value": json}},
             "accounts": [sorted], "joined": [sorted], "first_seen": iso | None, "last_seen": iso | None,
             "aliases": [sorted], "anonymous_ids": [sorted]}
        """
        return {
            "user_key": self.user_key,
            "traits": traits_to_dict(self.traits),
            "accounts": sorted(self.accounts),
            "joined": sorted(self.joined),
            "first_seen": opt_ts_str(self.first_seen),
            "last_seen": opt_ts_str(self.last_seen),
            "aliases": sorted(self.aliases),
            "anonymous_ids": sorted(self.anonymous_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserState:
        """Inverse of :meth:`to_dict`. Missing collections read as empty."""
        return cls(
            user_key=str(data["user_key"]),
            traits=traits_from_dict(data.get("traits")),
            accounts=frozenset(str(a) for a in data.get("accounts") or ()),
            joined=frozenset(str(a) for a in data.get("joined") or ()),
            first_seen=opt_ts(data.get("first_seen")),
            last_seen=opt_ts(data.get("last_seen")),
            aliases=frozenset(str(a) for a in data.get("aliases") or ()),
            anonymous_ids=frozenset(str(a) for a in data.get("anonymous_ids") or ()),
        )


def key(event: Event) -> str | None:
    """The user an event touches: ``userId`` (for alias: the new id), else ``anonymousId``."""
    if event.type == "alias":
        return event.user_id
    return event.user_key


def empty(user_key: str) -> UserState:
    """The state of a user before any event."""
    return UserState(user_key=user_key)


class _Builder:
    """Mutable accumulator: absorbs events and states, then builds one frozen state."""

    def __init__(self, user_key: str) -> None:
        self.user_key = user_key
        self.traits: dict[str, Stamped] = {}
        self.accounts: set[str] = set()
        self.joined: set[str] = set()
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None
        self.aliases: set[str] = set()
        self.anonymous_ids: set[str] = set()

    def add_state(self, state: UserState) -> None:
        if state.user_key != self.user_key:
            raise ValueError(f"user_key mismatch: {state.user_key!r} != {self.user_key!r}")
        for trait_key, stamped in state.traits.items():
            lww_put(self.traits, trait_key, stamped)
        self.accounts |= state.accounts
        self.joined |= state.joined
        self.first_seen = min_opt(self.first_seen, state.first_seen)
        self.last_seen = max_opt(self.last_seen, state.last_seen)
        self.aliases |= state.aliases
        self.anonymous_ids |= state.anonymous_ids

    def add_event(self, event: Event) -> None:
        if key(event) != self.user_key:
            return
        self.first_seen = min_opt(self.first_seen, event.timestamp)
        self.last_seen = max_opt(self.last_seen, event.timestamp)
        if event.user_id and event.anonymous_id:
            self.anonymous_ids.add(event.anonymous_id)
        if event.type == "alias":
            if event.previous_id:
                self.aliases.add(event.previous_id)
            return
        if event.type in ("identify", "track"):
            # A track's traits are the user's too (ingest reads them from `context.traits`, as RudderStack's
            # SDKs send them); last writer wins, so the order of identify and track does not matter.
            for trait_key, value in event.traits.items():
                lww_put(self.traits, trait_key, Stamped(event.timestamp, event.message_id, value))
        if event.type == "identify":
            return
        if event.group_id and (event.type == "group" or event.is_usage):
            self.accounts.add(event.group_id)
        if event.group_id and event.type == "group":
            self.joined.add(event.group_id)

    def build(self) -> UserState:
        return UserState(
            user_key=self.user_key,
            traits=FrozenMap(dict(sorted(cap_traits(self.traits).items()))),
            accounts=frozenset(sorted(self.accounts)[:MAX_ACCOUNTS]),
            joined=frozenset(sorted(self.joined)[:MAX_ACCOUNTS]),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            aliases=frozenset(sorted(self.aliases)[:MAX_IDS]),
            anonymous_ids=frozenset(sorted(self.anonymous_ids)[:MAX_IDS]),
        )


def fold(state: UserState, event: Event) -> UserState:
    """Apply one event. Events that do not touch ``state.user_key`` leave it unchanged."""
    if key(event) != state.user_key:
        return state
    builder = _Builder(state.user_key)
    builder.add_state(state)
    builder.add_event(event)
    return builder.build()


def fold_all(events: Iterable[Event], states: Mapping[str, UserState] | None = None) -> dict[str, UserState]:
    """Fold a batch of events of any users into ``states`` (by user key); returns a new dict."""
    builders: dict[str, _Builder] = {}
    for user_key, state in (states or {}).items():
        builders[user_key] = _Builder(user_key)
        builders[user_key].add_state(state)
    for event in events:
        event_key = key(event)
        if event_key is None:
            continue
        if event_key not in builders:
            builders[event_key] = _Builder(event_key)
        builders[event_key].add_event(event)
    return {user_key: builder.build() for user_key, builder in builders.items()}


def merge(a: UserState, b: UserState) -> UserState:
    """Join two states of the same user (commutative, associative, idempotent).

    Raises:
        ValueError: if the user keys differ.
    """
    builder = _Builder(a.user_key)
    builder.add_state(a)
    builder.add_state(b)
    return builder.build()
