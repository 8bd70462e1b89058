"""Health score: bounds, exact point sums, monotonicity, hand-computed examples, model validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections import account, health
from projections.account import AccountState
from projections.events import Event
from projections.health import FactorContribution, HealthScore, ScoreModel, band_change, default_model, score
from tests.unit.test_projections_events import BASE, DAY_OFFSETS, SETTINGS, event_lists

AS_OF = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def usage(mid: str, at: datetime, user: str = "u1", name: str = "Export") -> Event:
    """A track event of account g1."""
    return Event.from_wire(
        {"messageId": mid, "type": "track", "userId": user, "groupId": "g1", "event": name, "timestamp": at.isoformat()}
    )


def state_of(events: list[Event], name_users: bool = False) -> AccountState:
    """The g1 account state folded from ``events`` (``name_users``: by fold version 3)."""
    return account.fold_all(events, name_users=name_users).get("g1", account.empty("g1"))


def factor(result: HealthScore, name: str) -> FactorContribution:
    """The contribution of one factor."""
    return next(f for f in result.factors if f.name == name)


as_ofs = st.builds(
    lambda d, h: BASE + timedelta(days=d, hours=h), st.sampled_from((*DAY_OFFSETS, 45, 150)), st.integers(0, 23)
)
models = st.builds(
    lambda weights, features, yellow: ScoreModel(
        factors=tuple(zip(health.FACTOR_NAMES, weights, strict=True)),
        key_features=features,
        yellow_from=yellow,
        green_from=yellow + 30,
    ),
    st.tuples(*[st.sampled_from([0, 1, 2.5, 15, 25])] * 4, st.sampled_from([1, 7, 15]), st.sampled_from([0, 1, 10])),
    st.sampled_from([(), ("Export",), ("Export", "Report Viewed", "page:Home")]),
    st.sampled_from([10, 40, 50]),
)


@SETTINGS
@given(events=event_lists, as_of=as_ofs, model=models, seats=st.sampled_from([None, 1, 3, 50]), v3=st.booleans())
def test_score_bounds_and_exact_point_sum(events: list[Event], as_of: datetime, model: ScoreModel, seats: Any,
                                          v3: bool) -> None:
    state = state_of(events, v3)
    result = score(state, model, as_of, seats=seats)
    assert 0 <= result.score <= 100
    assert sum(f.points for f in result.factors) == result.score
    assert result.band == model.band(result.score)
    assert result.trend == result.score - score(state, model, as_of - timedelta(days=7), seats).score
    for contribution in result.factors:
        assert 0.0 <= contribution.normalised <= 1.0
        assert contribution.points >= 0
        assert contribution.applicable or contribution.points == 0
    assert HealthScore.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    # Pure: the same inputs give the same score, and the state order of events does not matter.
    assert score(state_of(list(reversed(events)), v3), model, as_of, seats) == result


@SETTINGS
@given(events=event_lists, as_of=as_ofs, back=st.integers(0, 40))
def test_more_recent_activity_never_lowers_recency(events: list[Event], as_of: datetime, back: int) -> None:
    before = state_of(events)
    after = account.fold(before, usage("recent", as_of - timedelta(days=back)))
    model = default_model()
    assert (
        factor(score(after, model, as_of), "recency").normalised
        >= factor(score(before, model, as_of), "recency").normalised
    )


@SETTINGS
@given(events=event_lists, as_of=as_ofs)
def test_data_after_as_of_is_ignored(events: list[Event], as_of: datetime) -> None:
    model = default_model(("Export",))
    # Usage after as_of is ignored. Membership is not dated: a `group` call names a member from then on, and
    # the state keeps who the members are, not since when (the score of a past day uses today's members).
    later = [e for e in events if e.day > as_of.date().isoformat() and e.is_usage]
    cut = state_of([e for e in events if e not in later])
    # Retention counts back from the newest day, so compare only when nothing was pruned.
    full = state_of(events)
    if set(cut.days) <= set(full.days):
        assert score(full, model, as_of).score == score(cut, model, as_of).score


def test_known_value_healthy_account() -> None:
    # u1 exports once a day from Nov 11 to Nov 30 (20 days).
    events = [usage(f"d{d}", AS_OF - timedelta(days=d)) for d in range(20)]
    model = default_model(("Export", "Report Viewed"))
    result = score(state_of(events), model, AS_OF)
    got = {f.name: (f.raw, f.normalised, f.points) for f in result.factors}
    assert got == {
        "recency": (0.0, 1.0, 25),  # active today
        "active_days": (20.0, 1.0, 25),  # 20/20, saturated
        "adoption": (pytest.approx(20 / 30), 1.0, 20),  # DAU/MAU = (20/30)/1 >= 0.5
        "breadth": (0.5, 0.5, 8),  # 1 of 2 key features: 7.5, gets the rounding point
        "trend": (pytest.approx(14 / 6 - 1), 1.0, 15),  # 14 events vs 6 before
    }
    assert (result.score, result.band) == (93, "green")  # 92.5 rounds half up
    # Seven days earlier: 13 active days (16.25), DAU/MAU (13/30)/0.5 (17.33), no previous
    # usage -> trend 1.0: 25 + 16.25 + 17.33 + 7.5 + 15 = 81.08 -> 81.
    assert score(state_of(events), model, AS_OF - timedelta(days=7)).score == 81
    assert result.trend == 93 - 81


def test_known_value_empty_account() -> None:
    result = score(account.empty("g1"), default_model(), AS_OF)
    assert (result.score, result.band, result.trend) == (0, "red", 0)
    breadth = factor(result, "breadth")
    assert (breadth.applicable, breadth.points, breadth.raw) == (False, 0, None)
    assert factor(result, "recency").raw is None


def test_known_value_seats_recency_and_declining_trend() -> None:
    # Last activity 10 days ago; 10 events in days 14..27 before as_of, 8 in the last 14.
    events = [usage(f"p{i}", AS_OF - timedelta(days=14 + i), user=f"u{i % 2}") for i in range(10)]
    events += [usage(f"c{i}", AS_OF - timedelta(days=10, minutes=i), user="u0") for i in range(8)]
    model = ScoreModel(factors=(("recency", 1), ("adoption", 1), ("trend", 2)))
    result = score(state_of(events), model, AS_OF, seats=4)
    got = {f.name: (f.raw, f.normalised) for f in result.factors}
    assert got["recency"] == (10.0, pytest.approx(2 / 3))  # 1 - 10/30
    assert got["adoption"] == (0.5, 0.5)  # 2 active users / 4 seats
    assert got["trend"] == (pytest.approx(-0.2), pytest.approx(0.3))  # -20%: 0.5 - 0.2
    # Exact: 100 * (2/3 * 1 + 0.5 * 1 + 0.3 * 2) / 4 = 44.1666... -> 44.
    assert result.score == 44
    assert [f.points for f in result.factors] == [17, 12, 15]  # 16.67, 12.5, 15.0
    assert result.band == "yellow"


def test_seats_trait_used_when_no_argument() -> None:
    group = Event.from_wire(
        {"messageId": "g", "type": "group", "groupId": "g1", "traits": {"seats": 10}, "timestamp": AS_OF.isoformat()}
    )
    state = state_of([group, usage("a", AS_OF)])
    model = ScoreModel(factors=(("adoption", 1),))
    assert factor(score(state, model, AS_OF), "adoption").raw == pytest.approx(0.1)
    assert factor(score(state, model, AS_OF, seats=2), "adoption").raw == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [(12, 10, 1.0), (11, 10, 0.75), (10, 10, 0.5), (8, 10, 0.3), (5, 10, 0.0), (2, 10, 0.0), (3, 0, 1.0), (0, 0, 0.0)],
)
def test_trend_mapping(current: int, previous: int, expected: float) -> None:
    events = [usage(f"c{i}", AS_OF - timedelta(days=1)) for i in range(current)]
    events += [usage(f"p{i}", AS_OF - timedelta(days=20)) for i in range(previous)]
    result = score(state_of(events), ScoreModel(factors=(("trend", 1),)), AS_OF)
    assert factor(result, "trend").normalised == pytest.approx(expected)


def test_history_is_daily_oldest_first() -> None:
    events = [usage(f"d{d}", AS_OF - timedelta(days=d)) for d in range(0, 40, 3)]
    scores = health.history(state_of(events), default_model(), AS_OF, days=10)
    assert [s.as_of for s in scores] == [AS_OF - timedelta(days=9 - i) for i in range(10)]
    assert scores[-1] == score(state_of(events), default_model(), AS_OF)


def test_band_change() -> None:
    model = default_model()
    prev = score(state_of([usage("a", AS_OF)]), model, AS_OF)

    def at(value: int, band: str, hours: int = 48) -> HealthScore:
        return HealthScore(value, band, (), 0, prev.as_of + timedelta(hours=hours), 1)  # type: ignore[arg-type]

    base = at(75, "green", 0)
    assert band_change(None, base, model) is None
    assert band_change(base, at(65, "yellow"), model) == "band_changed"
    assert band_change(base, at(64, "green"), model) == "score_dropped"  # fell 11 > 10
    assert band_change(base, at(65, "green"), model) is None  # fell exactly 10
    assert band_change(base, at(80, "green"), model) is None
    last_alert = base.as_of + timedelta(hours=40)
    assert band_change(base, at(20, "red"), model, last_alert_at=last_alert) is None  # within 24 h
    assert band_change(base, at(20, "red", 70), model, last_alert_at=last_alert) == "band_changed"


def test_model_round_trip_and_defaults() -> None:
    model = default_model(("Export",))
    assert ScoreModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    assert dict(model.factors) == {"recency": 25, "active_days": 25, "adoption": 20, "breadth": 15, "trend": 15,
                                   "key_feature_wau": 10}
    assert (model.yellow_from, model.green_from) == (40, 70)
    assert [model.band(v) for v in (0, 39, 40, 69, 70, 100)] == ["red", "red", "yellow", "yellow", "green", "green"]
    assert ScoreModel.from_dict({"version": 3, "factors": [{"name": "recency", "weight": 1}]}).version == 3


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"version": 0}, "version"),
        ({"version": "1"}, "version"),
        ({"factors": [{"name": "recency", "weight": -1}]}, "factors"),
        ({"factors": [{"name": "recency", "weight": 0}]}, "factors"),
        ({"factors": [{"name": "vibes", "weight": 1}]}, "factors"),
        ({"factors": [{"name": "trend", "weight": 1}, {"name": "trend", "weight": 2}]}, "factors"),
        ({"factors": [{"name": "trend", "weight": "heavy"}]}, "factors"),
        ({"factors": "recency"}, "factors"),
        ({"factors": []}, "factors"),
        ({"yellow_from": 0}, "yellow_from"),
        ({"yellow_from": 70}, "green_from"),
        ({"green_from": 101}, "green_from"),
        ({"green_from": 30}, "green_from"),
        ({"key_features": "Export"}, "key_features"),
        ({"key_features": ["a", "a"]}, "key_features"),
        ({"alert_drop": -1}, "alert_drop"),
        ({"cooldown_hours": 1.5}, "cooldown_hours"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_model_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ScoreModel.from_dict({**default_model().to_dict(), **change})


def test_score_rejects_naive_as_of_and_bad_seats() -> None:
    with pytest.raises(ValueError, match="as_of"):
        score(account.empty("g1"), default_model(), datetime(2026, 11, 30))
    with pytest.raises(ValueError, match="seats"):
        score(account.empty("g1"), default_model(), AS_OF, seats=0)


# --- key_feature_wau (view version 3) ------------------------------------------------------------


def test_key_feature_wau_is_left_out_of_a_version_2_state() -> None:
    """A version 2 state keeps no per-name users: the factor is left out entirely, so the score and its
    explanation are the ones the five factors give (a version 2 SUMMARY is written exactly as before)."""
    events = [usage(f"d{d}", AS_OF - timedelta(days=d)) for d in range(20)]
    model = default_model(("Export", "Report Viewed"))
    five = ScoreModel(factors=tuple((n, w) for n, w in model.factors if n != "key_feature_wau"),
                      key_features=model.key_features)
    result = score(state_of(events), model, AS_OF)
    assert [f.name for f in result.factors] == ["recency", "active_days", "adoption", "breadth", "trend"]
    assert result == score(state_of(events), five, AS_OF)
    assert result.score == 93


def test_key_feature_wau_not_applicable_without_key_features_on_a_version_3_state() -> None:
    events = [usage(f"d{d}", AS_OF - timedelta(days=d)) for d in range(20)]
    v2, v3 = score(state_of(events), default_model(), AS_OF), score(state_of(events, True), default_model(), AS_OF)
    wau = factor(v3, "key_feature_wau")
    assert (wau.applicable, wau.points, wau.raw) == (False, 0, None)
    assert v3.score == v2.score and v3.trend == v2.trend  # without key features, v3 scores are v2 scores


def test_key_feature_wau_known_value_on_a_version_3_state() -> None:
    # In the last 7 days: u1..u4 active; Export used by u1 and u2 (2/4), Report Viewed by u1 (1/4); an Export by
    # u5 eight days ago is outside the week.
    events = [usage("a", AS_OF, "u1"), usage("b", AS_OF - timedelta(days=1), "u2"),
              usage("c", AS_OF - timedelta(days=2), "u1", "Report Viewed"),
              usage("d", AS_OF - timedelta(days=3), "u3", "Other"),
              usage("e", AS_OF - timedelta(days=6), "u4", "Other"),
              usage("f", AS_OF - timedelta(days=8), "u5")]
    model = default_model(("Export", "Report Viewed"))
    state = state_of(events, True)
    assert account.key_feature_users(state, model.key_features, AS_OF) == {"Export": 2, "Report Viewed": 1}
    assert account.key_feature_users(state_of(events), model.key_features, AS_OF) is None
    wau = factor(score(state, model, AS_OF), "key_feature_wau")
    assert (wau.applicable, wau.raw, wau.normalised) == (True, 0.375, 0.375)  # (2/4 + 1/4) / 2
    v2 = score(state_of(events), model, AS_OF)
    v3 = score(state, model, AS_OF)
    # Same other factors; v3 weighs the new one in (10 of 110 weight points).
    assert [f for f in v3.factors if f.name != "key_feature_wau"] != [] and v3.score != v2.score
    assert {f.name: f.raw for f in v3.factors if f.name != "key_feature_wau"} == {f.name: f.raw for f in v2.factors}
    # No weekly active user: raw None, 0 points.
    quiet = factor(score(state, model, AS_OF + timedelta(days=20)), "key_feature_wau")
    assert (quiet.applicable, quiet.raw, quiet.normalised) == (True, None, 0.0)


def test_key_feature_wau_is_a_known_factor_name() -> None:
    model = ScoreModel.from_dict({"factors": [{"name": "key_feature_wau", "weight": 1}], "key_features": ["Export"]})
    assert model.factors == (("key_feature_wau", 1),)
