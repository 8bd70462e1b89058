"""Account view: known-value examples for traits, users, daily rollups, retention and queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from projections import account
from projections.events import Event
from projections.usage import Sketch

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(mid: str, kind: str = "track", at: datetime = T0, **fields: Any) -> Event:
    """A wire event with defaults (group g1, user u1)."""
    wire = {"messageId": mid, "type": kind, "userId": "u1", "groupId": "g1", "timestamp": at.isoformat()}
    if kind == "track":
        wire["event"] = "Export"
    wire.update(fields)
    return Event.from_wire(wire)


def test_group_traits_last_write_wins_by_event_time() -> None:
    newer = ev("b", "group", T0 + timedelta(hours=1), traits={"name": "Acme Inc", "plan": "pro"})
    older = ev("a", "group", T0, traits={"name": "Acme", "seats": 10})
    for order in ([older, newer], [newer, older]):
        state = account.fold_all(order)["g1"]
        assert state.name == "Acme Inc"
        assert state.trait("plan") == "pro"
        assert state.trait("seats") == 10  # untouched by the newer call
        assert state.traits["name"].message_id == "b"


def test_equal_timestamps_tie_break_on_message_id_then_value() -> None:
    a = ev("a", "group", traits={"plan": "basic"})
    b = ev("b", "group", traits={"plan": "pro"})
    assert account.fold_all([b, a])["g1"].trait("plan") == "pro"
    # The same message id re-sent with other content (a retry after the dedup window).
    x1 = ev("x", "group", traits={"plan": "basic"})
    x2 = ev("x", "group", traits={"plan": "pro"})
    assert account.fold_all([x1, x2]) == account.fold_all([x2, x1])


def test_users_first_last_seen_and_daily_rollup() -> None:
    events = [
        ev("g", "group", T0 - timedelta(days=3), userId="admin", traits={}),
        ev("1", at=T0),
        ev("1", at=T0),  # duplicate delivery
        ev("2", at=T0 + timedelta(minutes=5), userId="u2"),
        ev("3", "page", T0 + timedelta(days=1), name="Home"),
        ev("4", at=T0, groupId=None),  # no account: not this view's business
    ]
    state = account.fold_all(events)["g1"]
    assert state.users == {"admin", "u1", "u2"}
    assert state.first_seen == T0 - timedelta(days=3)
    assert state.last_seen == T0 + timedelta(days=1)
    assert account.daily_usage(state) == {"2026-11-01": {"Export": 2}, "2026-11-02": {"page:Home": 1}}
    assert state.days["2026-11-01"].users == Sketch.of(["u1", "u2"])
    assert "2026-10-29" not in state.days  # group calls are not usage


def test_active_users_windows() -> None:
    events = [
        ev("a", at=T0, userId="u1"),
        ev("b", at=T0 - timedelta(days=6), userId="u2"),
        ev("c", at=T0 - timedelta(days=29), userId="u3"),
        ev("d", at=T0 - timedelta(days=30), userId="u4"),
        ev("e", at=T0 + timedelta(days=1), userId="u5"),  # after as_of: not counted
    ]
    state = account.fold_all(events)["g1"]
    assert account.active_user_counts(state, T0) == {1: 1, 7: 2, 30: 3}
    assert account.active_users(state, T0, 30) == Sketch.of(["u1", "u2", "u3"])
    assert account.active_days(state, T0, 30) == 3
    assert account.event_count(state, T0, 7) == 2
    assert account.event_count(state, T0, 7, names=["Nope"]) == 0


def test_feature_usage_from_per_name_data() -> None:
    events = [
        ev("a", at=T0 - timedelta(days=40), event="Report Viewed"),
        ev("b", at=T0 - timedelta(days=2)),
        ev("c", at=T0 - timedelta(days=1)),
    ]
    state = account.fold_all(events)["g1"]
    usage = {u.name: u for u in account.feature_usage(state, ["Export", "Report Viewed", "Invite"], T0)}
    assert (usage["Export"].used, usage["Export"].count, usage["Export"].active_days) == (True, 2, 2)
    assert usage["Export"].last_used == T0 - timedelta(days=1)
    assert usage["Report Viewed"].used is False
    assert usage["Report Viewed"].last_used == T0 - timedelta(days=40)
    assert usage["Invite"] == account.FeatureUsage("Invite", False, 0, 0, None, None)


def test_retention_keeps_newest_90_days_in_any_order() -> None:
    old = ev("old", at=T0)
    edge = ev("edge", at=T0 + timedelta(days=10))
    new = ev("new", at=T0 + timedelta(days=99))
    for order in ([old, edge, new], [new, old, edge], [edge, new, old]):
        state = account.empty("g1")
        for event in order:
            state = account.fold(state, event)
        assert sorted(state.days) == ["2026-11-11", "2027-02-08"]
        assert state.first_seen == T0  # first/last seen and spans are never pruned
        assert state.event_spans["Export"].first == T0
    assert account.RETENTION_DAYS == 90


def test_to_dict_shape() -> None:
    state = account.fold_all([ev("g", "group", traits={"name": "Acme"}), ev("1")])["g1"]
    data = state.to_dict()
    assert data["account_id"] == "g1"
    assert data["traits"]["name"] == {"at": "2026-11-01T12:00:00.000Z", "messageId": "g", "value": "Acme"}
    assert data["days"]["2026-11-01"]["users"] == Sketch.of(["u1"]).to_dict()
    assert data["days"]["2026-11-01"]["counts"] == {"Export": 1}
    assert data["event_spans"]["Export"] == {"first": "2026-11-01T12:00:00.000Z", "last": "2026-11-01T12:00:00.000Z"}
    assert account.AccountState.from_dict(data) == state


def test_version_1_day_items_are_upcast_on_read() -> None:
    v1 = {"users": ["u1", "u2"], "events": {"Export": ["0123456789abcdef", "fedcba9876543210"], "page:Home": ["aa"]}}
    day = account.DayActivity.from_dict(v1)
    assert dict(day.counts) == {"Export": 2, "page:Home": 1}
    assert day.users == Sketch.of(["u1", "u2"]) and len(day.users) == 2
    assert account.DayActivity.from_dict(day.to_dict()) == day


def test_sketch_is_exact_while_small_and_bounded_and_close_when_large() -> None:
    small = Sketch.of(f"u{i}" for i in range(100))
    assert len(small) == 100 and len(small.merge(small)) == 100
    halves = Sketch.of(f"u{i}" for i in range(0, 30000, 2)).merge(Sketch.of(f"u{i}" for i in range(1, 30000, 2)))
    assert halves == Sketch.of(f"u{i}" for i in range(30000))  # union is order- and grouping-free
    assert abs(len(halves) - 30000) / 30000 < 0.1
    assert len(str(halves.to_dict())) < 600  # 512 registers, whatever the number of users
