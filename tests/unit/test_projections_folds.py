"""Order- and duplicate-insensitivity, merge laws and persistence round-trips of every view."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import account, catalog, user
from projections.events import Event
from projections.folds import FOLDS
from tests.unit.test_projections_events import SETTINGS, event_lists, short_event_lists, shuffled_with_duplicates


def _account_by_fold(version: int) -> ModuleType:
    """The account view as fold ``version`` keeps it (3: each name's users per day), shaped as a view module."""
    name_users = FOLDS[version].name_users
    view = ModuleType(f"projections.account[v{version}]")
    view.NAME = f"account-v{version}"  # type: ignore[attr-defined]
    view.key, view.empty, view.merge = account.key, account.empty, account.merge  # type: ignore[attr-defined]
    view.fold = functools.partial(account.fold, name_users=name_users)  # type: ignore[attr-defined]
    view.fold_all = functools.partial(account.fold_all, name_users=name_users)  # type: ignore[attr-defined]
    return view


ACCOUNT_V3 = _account_by_fold(3)
KEYED = [account, ACCOUNT_V3, user]
COUNTED = (account, ACCOUNT_V3, catalog)
"""Views with counters (a message reaches them once; merge adds)."""


def _once(view: ModuleType, events: Iterable[Event]) -> list[Event]:
    """The account and catalog views (version 2) keep counters: a message id reaches them once (the
    view writer's message claims ensure it; of copies with different content the first to arrive
    counts), so their sequential and merge laws are stated over distinct messages: identical copies
    (a retry) once, and no message id with two different contents."""
    events = list(events)
    if view not in COUNTED:
        return events
    contents: dict[str, set[Event]] = {}
    for event in events:
        contents.setdefault(event.message_id, set()).add(event)
    return list(dict.fromkeys(e for e in events if len(contents[e.message_id]) == 1))


def _sequential(view: ModuleType, events: Iterable[Event]) -> dict[str, Any]:
    """Fold event by event with the single-event ``fold`` (the path with pruning per step)."""
    events = list(events)
    states = {}
    for key in {view.key(e) for e in events} - {None}:
        state = view.empty(key)
        for event in events:
            state = view.fold(state, event)
        states[key] = state
    return states


def _catalog_sequential(events: Iterable[Event]) -> catalog.CatalogState:
    state = catalog.empty()
    for event in events:
        state = catalog.fold(state, event)
    return state


@pytest.mark.parametrize("view", KEYED, ids=lambda v: v.NAME)
@SETTINGS
@given(data=shuffled_with_duplicates())
def test_keyed_views_ignore_order_and_duplicates(view: ModuleType, data: tuple[list[Event], list[Event]]) -> None:
    original, shuffled = data
    assert view.fold_all(shuffled) == view.fold_all(original)  # in one fold, copies count once
    original, shuffled = _once(view, original), [e for e in shuffled if e in set(_once(view, shuffled))]
    expected = view.fold_all(original)
    assert view.fold_all(shuffled) == expected
    assert _sequential(view, _once(view, shuffled)) == expected
    assert _sequential(view, original) == expected


@SETTINGS
@given(data=shuffled_with_duplicates())
def test_catalog_ignores_order_and_duplicates(data: tuple[list[Event], list[Event]]) -> None:
    original, shuffled = data
    assert catalog.fold_all(shuffled) == catalog.fold_all(original)  # in one fold, copies count once
    original, shuffled = _once(catalog, original), [e for e in shuffled if e in set(_once(catalog, shuffled))]
    expected = catalog.fold_all(original)
    assert catalog.fold_all(shuffled) == expected
    assert _catalog_sequential(_once(catalog, shuffled)) == expected
    assert _catalog_sequential(original) == expected


@pytest.mark.parametrize("view", KEYED, ids=lambda v: v.NAME)
@SETTINGS
@given(events=event_lists, split=st.integers(0, 20))
def test_keyed_merge_of_halves_equals_fold_of_union(view: ModuleType, events: list[Event], split: int) -> None:
    events = _once(view, events)
    left, right = view.fold_all(events[:split]), view.fold_all(events[split:])
    whole = view.fold_all(events)
    assert set(whole) == set(left) | set(right)
    for key, state in whole.items():
        a, b = left.get(key, view.empty(key)), right.get(key, view.empty(key))
        assert view.merge(a, b) == state
    # Folding a batch into the stored states is the same thing.
    assert view.fold_all(events[split:], left) == whole


@SETTINGS
@given(events=event_lists, split=st.integers(0, 20))
def test_catalog_merge_of_halves_equals_fold_of_union(events: list[Event], split: int) -> None:
    events = _once(catalog, events)
    left, right = catalog.fold_all(events[:split]), catalog.fold_all(events[split:])
    assert catalog.merge(left, right) == catalog.fold_all(events)
    assert catalog.fold_all(events[split:], left) == catalog.fold_all(events)


def _three_states(view: ModuleType, lists: list[list[Event]]) -> list[Any]:
    if view is catalog:
        return [catalog.fold_all(events) for events in lists]
    folded = [view.fold_all(events) for events in lists]
    key = "g1" if view in (account, ACCOUNT_V3) else "u1"
    return [states.get(key, view.empty(key)) for states in folded]


@pytest.mark.parametrize("view", [account, ACCOUNT_V3, user, catalog], ids=lambda v: v.NAME)
@SETTINGS
@given(lists=st.lists(short_event_lists, min_size=3, max_size=3))
def test_merge_is_a_semilattice_join(view: ModuleType, lists: list[list[Event]]) -> None:
    if view in COUNTED:  # counters: disjoint messages per state, and merge adds (not idempotent)
        seen: set[str] = set()
        disjoint = []
        for events in lists:
            disjoint.append([e for e in _once(view, events) if e.message_id not in seen])
            disjoint[-1] = list({e.message_id: e for e in reversed(disjoint[-1])}.values())
            seen |= {e.message_id for e in events}
        lists = disjoint
    a, b, c = _three_states(view, lists)
    merge: Callable[[Any, Any], Any] = view.merge
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    if view not in COUNTED:
        assert merge(a, a) == a


@pytest.mark.parametrize("view", [account, ACCOUNT_V3, user, catalog], ids=lambda v: v.NAME)
@SETTINGS
@given(events=event_lists)
def test_state_round_trips_through_plain_json(view: ModuleType, events: list[Event]) -> None:
    states = [catalog.fold_all(events)] if view is catalog else list(view.fold_all(events).values())
    state_type = type(states[0]) if states else None
    for state in states:
        data = state.to_dict()
        assert state_type.from_dict(data) == state
        assert state_type.from_dict(json.loads(json.dumps(data))) == state
        assert json.dumps(data, sort_keys=True) == json.dumps(state_type.from_dict(data).to_dict(), sort_keys=True)


def test_merge_rejects_different_keys() -> None:
    with pytest.raises(ValueError, match="account_id"):
        account.merge(account.empty("g1"), account.empty("g2"))
    with pytest.raises(ValueError, match="user_key"):
        user.merge(user.empty("u1"), user.empty("u2"))


def test_events_of_other_keys_leave_state_unchanged() -> None:
    event = Event.from_wire(
        {
            "messageId": "m",
            "type": "track",
            "userId": "u9",
            "groupId": "g9",
            "event": "X",
            "timestamp": "2026-11-01T00:00:00Z",
        }
    )
    assert account.fold(account.empty("g1"), event) == account.empty("g1")
    assert user.fold(user.empty("u1"), event) == user.empty("u1")


trait_writes = st.lists(
    st.tuples(
        st.sampled_from(["group", "identify"]),
        st.sampled_from(["m1", "m2"]),
        st.sampled_from(["2026-11-01T00:00:00.000Z", "2026-11-02T00:00:00.000Z"]),
        st.sampled_from([None, 1, 1.5, "a", "b", [1], {"k": "v"}]),
    ),
    max_size=8,
)


@SETTINGS
@given(writes=trait_writes, data=st.data())
def test_last_write_wins_ties_are_order_free(writes: list[tuple[str, str, str, Any]], data: st.DataObject) -> None:
    """Equal (timestamp, messageId) with other values: the canonical value breaks the tie."""
    events = [
        Event.from_wire(
            {
                "messageId": mid,
                "type": kind,
                "userId": "u1",
                "groupId": "g1",
                "timestamp": ts,
                "traits": {"plan": value},
            }
        )
        for kind, mid, ts, value in writes
    ]
    shuffled = data.draw(st.permutations(events))
    for view in KEYED:
        assert view.fold_all(shuffled) == view.fold_all(events)
        assert _sequential(view, shuffled) == view.fold_all(events)
