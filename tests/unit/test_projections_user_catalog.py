"""User view and tenant event catalog: known-value examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from projections import catalog, user
from projections.events import Event

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(mid: str, kind: str = "track", at: datetime = T0, **fields: Any) -> Event:
    """A wire event with defaults (user u1, no group)."""
    wire = {"messageId": mid, "type": kind, "userId": "u1", "timestamp": at.isoformat()}
    if kind == "track":
        wire["event"] = "Export"
    wire.update(fields)
    return Event.from_wire(wire)


def test_user_traits_accounts_aliases() -> None:
    events = [
        ev("i1", "identify", T0, traits={"email": "a@x.io", "plan": "free"}),
        ev("i2", "identify", T0 + timedelta(days=1), traits={"plan": "pro"}, anonymousId="anon-7"),
        ev("g1", "group", T0, groupId="acme", traits={"name": "ignored here"}),
        ev("t1", at=T0, groupId="globex"),
        ev("al", "alias", T0, previousId="anon-1"),
    ]
    state = user.fold_all(reversed(events))["u1"]
    assert state.trait("plan") == "pro"
    assert state.trait("email") == "a@x.io"
    assert "name" not in state.traits  # group traits belong to the account
    assert state.accounts == {"acme", "globex"}
    assert state.aliases == {"anon-1"}
    assert state.anonymous_ids == {"anon-7"}
    assert (state.first_seen, state.last_seen) == (T0, T0 + timedelta(days=1))


def test_a_tracks_traits_are_its_users_last_writer_wins_in_any_order() -> None:
    """Ingest stores a track's ``context.traits`` as its traits (RudderStack's SDKs send the user's there)."""
    events = [
        ev("i1", "identify", T0, traits={"email": "a@x.io", "role": "member"}),
        ev("t1", at=T0 + timedelta(hours=1), traits={"role": "admin"}),
        ev("t2", at=T0 + timedelta(hours=2), groupId="acme"),
        ev("p1", "page", T0 + timedelta(hours=3), name="Home", traits={"role": "page traits are not read"}),
    ]
    for order in (events, list(reversed(events)), [events[1], events[3], events[0], events[2]]):
        state = user.fold_all(order)["u1"]
        assert (state.trait("email"), state.trait("role")) == ("a@x.io", "admin")
        assert state.accounts == {"acme"} and state.last_seen == T0 + timedelta(hours=3)
    older = user.fold_all([ev("t0", at=T0 - timedelta(hours=1), traits={"role": "owner"}), events[0]])["u1"]
    assert older.trait("role") == "member"  # the identify is newer


def test_anonymous_user_keyed_by_anonymous_id() -> None:
    event = ev("p", "page", userId=None, anonymousId="anon-1", name="Pricing")
    states = user.fold_all([event])
    assert list(states) == ["anon-1"]
    assert states["anon-1"].last_seen == T0


def test_usage_moves_only_first_and_last_seen_and_folds_in_any_order() -> None:
    events = [ev(f"m{i:03d}", at=T0 + timedelta(minutes=i), groupId="g") for i in range(70)]
    events.append(ev("i", "identify", T0 + timedelta(days=9)))
    state = user.fold_all(events)["u1"]
    # Usage: first/last seen and the accounts it names; a user's recent events are on account timelines.
    assert (state.first_seen, state.last_seen, state.accounts) == (T0, T0 + timedelta(days=9), {"g"})
    assert set(state.to_dict()) == {"user_key", "traits", "accounts", "joined", "first_seen", "last_seen",
                                    "aliases", "anonymous_ids"}
    one_by_one = user.empty("u1")
    for event in reversed(events):
        one_by_one = user.fold(one_by_one, event)
    assert one_by_one == state


def test_catalog_names_counts_and_property_types() -> None:
    events = [
        ev("1", properties={"plan": "pro", "n": 1, "tags": ["a"]}),
        ev("1", properties={"plan": "pro", "n": 1, "tags": ["a"]}),  # duplicate
        ev("2", at=T0 + timedelta(days=1), properties={"plan": None, "n": 2.5, "opts": {"a": True}, "ok": False}),
        ev("3", "page", name="Home"),
        ev("4", "screen", name=None),
        ev("5", "identify", traits={"x": 1}),
    ]
    state = catalog.fold_all(events)
    assert sorted(state.entries) == ["Export", "page:Home", "screen:"]
    export = state.entries["Export"]
    assert export.daily_counts() == {"2026-11-01": 1, "2026-11-02": 1}
    assert export.count() == 2
    assert export.count(start="2026-11-02") == 1
    assert (export.first_seen, export.last_seen) == (T0, T0 + timedelta(days=1))
    assert dict(export.properties) == {
        "plan": {"string", "null"},
        "n": {"number"},
        "tags": {"array"},
        "opts": {"object"},
        "ok": {"boolean"},
    }
    assert state.to_dict()["entries"]["Export"]["properties"]["plan"] == ["null", "string"]
    assert catalog.CatalogState.from_dict(state.to_dict()) == state


def test_catalog_retention_is_catalog_wide() -> None:
    old = ev("old", event="Legacy")
    new = ev("new", at=T0 + timedelta(days=100))
    state = catalog.fold_all([new, old])
    assert dict(state.entries["Legacy"].days) == {}
    assert state.entries["Legacy"].first_seen == T0  # still listed, with its first/last seen
    assert catalog.fold(catalog.fold(catalog.empty(), old), new) == state
