"""Account health score: a pure function of an account state, a tenant's model and an as-of time.

The default model follows the usual customer-success health scores (Gainsight, Totango,
Vitally): a weighted sum of normalised factors, each in 0..1:

``recency``
    days since the last usage day: 0 days -> 1.0, linearly down to 0 at 30 days or more.
``active_days``
    days with usage among the last 30, saturating at 20 days -> 1.0.
``adoption``
    seat utilisation (monthly active users / seats) when the seat count is known (argument,
    else the ``seats`` account trait if written at or before ``as_of``); otherwise stickiness
    DAU/MAU (mean daily active users over 30 days / monthly active users), saturating at
    0.5 -> 1.0.
``breadth``
    share of the tenant's key features used in the last 30 days. Not applicable (its weight
    is left out) when the model names no key features.
``trend``
    events in the last 14 days vs the 14 before: +20% or more -> 1.0, flat -> 0.5, -50% or
    worse -> 0.0, linear in between; growth from nothing -> 1.0, no usage at all -> 0.0.
``key_feature_wau``
    depth of key-feature use (view version 3): over the last 7 days, for each key feature the share
    of the account's weekly active users who used it (at most 1), averaged over the key features;
    normalised = that mean. No weekly active user: raw None, 0. Not applicable (weight left out)
    when the model names no key features; a state that keeps no per-name users (view version 2,
    :func:`projections.account.has_name_users`) cannot compute it and its score leaves it out entirely
    (no contribution listed), so version 2 scores and explanations are what they were.

Usage data is bucketed by UTC day, and windows are whole days ending on ``as_of``'s day;
days after it are ignored, which is how the score "at an earlier time" (trend, history) only
counts data from before that time. Arithmetic is exact (fractions), so scores are the same on
every machine and band thresholds are never missed by a rounding error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any, Final, Literal

from projections import account as acc
from projections.account import AccountState
from projections.events import day_of, format_ts, parse_ts

__all__ = [
    "ALERT_KINDS",
    "BANDS",
    "DEFAULT_FACTORS",
    "FACTOR_NAMES",
    "FactorContribution",
    "MAX_COOLDOWN_HOURS",
    "NAME_USERS_FACTORS",
    "HealthScore",
    "ScoreModel",
    "band_change",
    "default_model",
    "history",
    "score",
]

FACTOR_NAMES: Final = ("recency", "active_days", "adoption", "breadth", "trend", "key_feature_wau")
DEFAULT_FACTORS: Final = (
    ("recency", 25),
    ("active_days", 25),
    ("adoption", 20),
    ("breadth", 15),
    ("trend", 15),
    ("key_feature_wau", 10),
)
NAME_USERS_FACTORS: Final = frozenset({"key_feature_wau"})
"""Factors a state without per-name users (view version 2) cannot compute: left out of its score."""
BANDS: Final = ("red", "yellow", "green")
ALERT_KINDS: Final = ("band_changed", "score_dropped")

Band = Literal["red", "yellow", "green"]
AlertKind = Literal["band_changed", "score_dropped"]

WINDOW_DAYS: Final = 30
RECENCY_ZERO_DAYS: Final = 30
ACTIVE_DAYS_SATURATION: Final = 20
DAU_MAU_SATURATION: Final = Fraction(1, 2)
TREND_WINDOW_DAYS: Final = 14
TREND_GROWTH: Final = Fraction(1, 5)
TREND_DECLINE: Final = Fraction(-1, 2)
TREND_LOOKBACK: Final = timedelta(days=7)
KEY_FEATURE_WAU_DAYS: Final = 7
MAX_COOLDOWN_HOURS: Final = 24 * 366  # a year: longer means "never alert again"; larger values are clamped

_MODEL_FIELDS: Final = frozenset(
    {"version", "factors", "yellow_from", "green_from", "key_features", "alert_drop", "cooldown_hours"}
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class ScoreModel:
    """A tenant's health-score model, versioned. Validated on construction.

    Bands: ``score < yellow_from`` is red, ``yellow_from <= score < green_from`` is yellow,
    ``score >= green_from`` is green.

    Raises:
        ValueError: naming the offending field, if the model is invalid.
    """

    version: int = 1
    factors: tuple[tuple[str, int | float], ...] = DEFAULT_FACTORS
    yellow_from: int = 40
    green_from: int = 70
    key_features: tuple[str, ...] = ()
    alert_drop: int = 10
    cooldown_hours: int = 24

    def __post_init__(self) -> None:
        if not _is_int(self.version) or self.version < 1:
            raise ValueError("version must be an integer >= 1")
        if isinstance(self.factors, str | bytes) or not hasattr(self.factors, "__iter__"):
            raise ValueError("factors must be a list of (name, weight) pairs")
        factors: list[tuple[str, int | float]] = []
        for entry in self.factors:
            pair = (entry.get("name"), entry.get("weight")) if isinstance(entry, Mapping) else entry
            if isinstance(pair, str) or not isinstance(pair, tuple | list) or len(pair) != 2:
                raise ValueError("factors must be a list of (name, weight) pairs")
            name, weight = pair
            if name not in FACTOR_NAMES:
                raise ValueError(f"factors: unknown factor {name!r}; known: {', '.join(FACTOR_NAMES)}")
            if any(name == seen for seen, _ in factors):
                raise ValueError(f"factors: duplicate factor {name!r}")
            if not _is_number(weight) or weight < 0:
                raise ValueError(f"factors: weight of {name!r} must be a non-negative number")
            factors.append((name, weight))
        if not factors or sum(weight for _, weight in factors) <= 0:
            raise ValueError("factors: weights must sum to more than 0")
        object.__setattr__(self, "factors", tuple(factors))
        if not _is_int(self.yellow_from) or not 0 < self.yellow_from < 100:
            raise ValueError("yellow_from must be an integer with 0 < yellow_from < green_from")
        if not _is_int(self.green_from) or not self.yellow_from < self.green_from <= 100:
            raise ValueError("green_from must be an integer with yellow_from < green_from <= 100")
        if isinstance(self.key_features, str) or not all(isinstance(f, str) and f for f in self.key_features):
            raise ValueError("key_features must be a list of non-empty strings")
        if len(set(self.key_features)) != len(tuple(self.key_features)):
            raise ValueError("key_features must not repeat a name")
        object.__setattr__(self, "key_features", tuple(self.key_features))
        if not _is_int(self.alert_drop) or self.alert_drop < 0:
            raise ValueError("alert_drop must be an integer >= 0")
        if not _is_int(self.cooldown_hours) or self.cooldown_hours < 0:
            raise ValueError("cooldown_hours must be an integer >= 0")

    def band(self, value: int) -> Band:
        """The band of a score under this model."""
        if value < self.yellow_from:
            return "red"
        if value < self.green_from:
            return "yellow"
        return "green"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, the shape ``GET|PUT /api/score-model`` uses.

        ``{"version", "factors": [{"name", "weight"}], "yellow_from", "green_from",
        "key_features": [...], "alert_drop", "cooldown_hours"}``.
        """
        return {
            "version": self.version,
            "factors": [{"name": name, "weight": weight} for name, weight in self.factors],
            "yellow_from": self.yellow_from,
            "green_from": self.green_from,
            "key_features": list(self.key_features),
            "alert_drop": self.alert_drop,
            "cooldown_hours": self.cooldown_hours,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreModel:
        """Validate and build a model; omitted fields take their defaults.

        Raises:
            ValueError: naming the field, for unknown fields and invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError("score model must be an object")
        unknown = sorted(set(data) - _MODEL_FIELDS)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field")
        kwargs = dict(data)
        if "factors" in kwargs:
            raw = kwargs["factors"]
            if not isinstance(raw, list | tuple):
                raise ValueError("factors must be a list of {name, weight} objects")
            kwargs["factors"] = tuple(raw)
        if "key_features" in kwargs:
            raw = kwargs["key_features"]
            if not isinstance(raw, list | tuple):
                raise ValueError("key_features must be a list of non-empty strings")
            kwargs["key_features"] = tuple(raw)
        return cls(**kwargs)


def default_model(key_features: tuple[str, ...] = ()) -> ScoreModel:
    """The default model (weights 25/25/20/15/15/10, red < 40 <= yellow < 70 <= green)."""
    return ScoreModel(key_features=tuple(key_features))


@dataclass(frozen=True, slots=True)
class FactorContribution:
    """Why a score is what it is: one factor's raw value, normalised value and points.

    ``raw`` is None when there is no data (e.g. never active, nothing to compare with);
    ``applicable`` is False when the factor does not apply (breadth or key_feature_wau without
    key features), in which case its weight is left out and it contributes 0 points.
    """

    name: str
    weight: int | float
    raw: float | None
    normalised: float
    points: int
    applicable: bool = True

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "weight", "raw", "normalised", "points", "applicable"}``."""
        return {
            "name": self.name,
            "weight": self.weight,
            "raw": self.raw,
            "normalised": self.normalised,
            "points": self.points,
            "applicable": self.applicable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FactorContribution:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            weight=data["weight"],
            raw=None if data.get("raw") is None else float(data["raw"]),
            normalised=float(data["normalised"]),
            points=int(data["points"]),
            applicable=bool(data.get("applicable", True)),
        )


@dataclass(frozen=True, slots=True)
class HealthScore:
    """A score 0..100, its band, trend over 7 days, and the factor contributions summing to it."""

    score: int
    band: Band
    factors: tuple[FactorContribution, ...]
    trend: int
    as_of: datetime
    model_version: int

    def to_dict(self) -> dict[str, Any]:
        """``{"score", "band", "trend", "as_of": iso, "model_version", "factors": [...]}``."""
        return {
            "score": self.score,
            "band": self.band,
            "trend": self.trend,
            "as_of": format_ts(self.as_of),
            "model_version": self.model_version,
            "factors": [factor.to_dict() for factor in self.factors],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthScore:
        """Inverse of :meth:`to_dict`."""
        band = data["band"]
        if band not in BANDS:
            raise ValueError(f"band must be one of {BANDS}")
        return cls(
            score=int(data["score"]),
            band=band,
            factors=tuple(FactorContribution.from_dict(f) for f in data.get("factors") or ()),
            trend=int(data["trend"]),
            as_of=parse_ts(data["as_of"]),
            model_version=int(data["model_version"]),
        )


# --- factors ---------------------------------------------------------------------------------

_Value = tuple[Fraction | None, Fraction | None]  # (raw, normalised); normalised None = n/a


def _clamp(value: Fraction) -> Fraction:
    return max(Fraction(0), min(Fraction(1), value))


def _recency(state: AccountState, as_of: datetime) -> _Value:
    today = day_of(as_of)
    active = [day for day in state.days if day <= today and state.days[day].count() > 0]
    if not active:
        return None, Fraction(0)
    since = (date.fromisoformat(today) - date.fromisoformat(max(active))).days
    return Fraction(since), _clamp(1 - Fraction(since, RECENCY_ZERO_DAYS))


def _active_days(state: AccountState, as_of: datetime) -> _Value:
    days = acc.active_days(state, as_of, WINDOW_DAYS)
    return Fraction(days), _clamp(Fraction(days, ACTIVE_DAYS_SATURATION))


def _seats(state: AccountState, as_of: datetime, seats: int | None) -> Fraction | None:
    if seats is not None:
        return Fraction(seats)
    stamped = state.traits.get("seats")
    # A seats value written after as_of is not known at as_of (and the older one is gone).
    if stamped is None or stamped.at > as_of:
        return None
    trait = stamped.value
    if (_is_int(trait) or isinstance(trait, float)) and math.isfinite(trait) and trait > 0:
        return Fraction(trait)
    return None


def _adoption(state: AccountState, as_of: datetime, seats: int | None) -> _Value:
    mau = len(acc.active_users(state, as_of, WINDOW_DAYS))
    known_seats = _seats(state, as_of, seats)
    if known_seats is not None:
        utilisation = Fraction(mau) / known_seats
        return utilisation, _clamp(utilisation)
    if mau == 0:
        return Fraction(0), Fraction(0)
    first, last = acc.window(as_of, WINDOW_DAYS)
    daily_sum = sum(len(a.users) for d, a in state.days.items() if first <= d <= last)
    stickiness = Fraction(daily_sum, WINDOW_DAYS * mau)
    return stickiness, _clamp(stickiness / DAU_MAU_SATURATION)


def _breadth(state: AccountState, as_of: datetime, key_features: tuple[str, ...]) -> _Value:
    if not key_features:
        return None, None
    used = sum(1 for usage in acc.feature_usage(state, key_features, as_of, WINDOW_DAYS) if usage.used)
    share = Fraction(used, len(key_features))
    return share, share


def _key_feature_wau(state: AccountState, as_of: datetime, key_features: tuple[str, ...]) -> _Value:
    if not key_features:
        return None, None
    wau = len(acc.active_users(state, as_of, KEY_FEATURE_WAU_DAYS))
    users = acc.key_feature_users(state, key_features, as_of, KEY_FEATURE_WAU_DAYS) or {}
    if wau == 0:
        return None, Fraction(0)
    # Both counts are sketches (exact while small): a feature's estimate may exceed the week's, never its share 1.
    shares = [min(Fraction(1), Fraction(users.get(f, 0), wau)) for f in key_features]
    mean = sum(shares, Fraction(0)) / len(shares)
    return mean, mean


def _trend(state: AccountState, as_of: datetime) -> _Value:
    current = acc.event_count(state, as_of, TREND_WINDOW_DAYS)
    previous = acc.event_count(state, as_of - timedelta(days=TREND_WINDOW_DAYS), TREND_WINDOW_DAYS)
    if previous == 0:
        return None, Fraction(1 if current > 0 else 0)
    change = Fraction(current, previous) - 1
    if change >= 0:
        return change, _clamp(Fraction(1, 2) + Fraction(1, 2) * change / TREND_GROWTH)
    return change, _clamp(Fraction(1, 2) - Fraction(1, 2) * change / TREND_DECLINE)


def _compute(
    state: AccountState, model: ScoreModel, as_of: datetime, seats: int | None
) -> tuple[int, tuple[FactorContribution, ...]]:
    values: dict[str, _Value] = {}
    factors = model.factors if acc.has_name_users(state) else tuple(
        (name, weight) for name, weight in model.factors if name not in NAME_USERS_FACTORS)
    for name, _weight in factors:
        if name == "recency":
            values[name] = _recency(state, as_of)
        elif name == "active_days":
            values[name] = _active_days(state, as_of)
        elif name == "adoption":
            values[name] = _adoption(state, as_of, seats)
        elif name == "breadth":
            values[name] = _breadth(state, as_of, model.key_features)
        elif name == "key_feature_wau":
            values[name] = _key_feature_wau(state, as_of, model.key_features)
        else:
            values[name] = _trend(state, as_of)
    total_weight = sum((Fraction(weight) for name, weight in factors if values[name][1] is not None), Fraction(0))
    exact: list[Fraction] = []
    for name, weight in factors:
        normalised = values[name][1]
        if normalised is None or total_weight == 0:
            exact.append(Fraction(0))
        else:
            exact.append(Fraction(weight) * normalised * 100 / total_weight)
    total = sum(exact, Fraction(0))
    result = math.floor(total + Fraction(1, 2))  # round half up, exactly
    # Largest-remainder allocation, so the integer points add up to the score exactly.
    points = [math.floor(p) for p in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - points[i]), i))
    for i in order[: result - sum(points)]:
        points[i] += 1
    contributions = tuple(
        FactorContribution(
            name=name,
            weight=weight,
            raw=None if values[name][0] is None else float(values[name][0]),  # type: ignore[arg-type]
            normalised=float(values[name][1] or 0),
            points=points[i],
            applicable=values[name][1] is not None,
        )
        for i, (name, weight) in enumerate(factors)
    )
    return result, contributions


def _check_inputs(as_of: datetime, seats: int | None) -> None:
    if not isinstance(as_of, datetime) or as_of.tzinfo is None:
        raise ValueError("as_of must be a timezone-aware datetime")
    if seats is not None and (not _is_int(seats) or seats < 1):
        raise ValueError("seats must be a positive integer or None")


def score(account_state: AccountState, model: ScoreModel, as_of: datetime, seats: int | None = None) -> HealthScore:
    """Score an account at ``as_of`` (aware datetime); pure and deterministic.

    Args:
        account_state: the account view state.
        model: the tenant's score model.
        as_of: the time to score at; usage on later UTC days is ignored.
        seats: licensed seats, if known; else the ``seats`` trait is used, if any.

    Returns:
        The score, with ``trend`` = this score minus the score at ``as_of - 7 days``.
    """
    _check_inputs(as_of, seats)
    value, contributions = _compute(account_state, model, as_of, seats)
    earlier, _ = _compute(account_state, model, as_of - TREND_LOOKBACK, seats)
    return HealthScore(
        score=value,
        band=model.band(value),
        factors=contributions,
        trend=value - earlier,
        as_of=as_of,
        model_version=model.version,
    )


def history(
    account_state: AccountState,
    model: ScoreModel,
    as_of: datetime,
    days: int = 30,
    seats: int | None = None,
) -> tuple[HealthScore, ...]:
    """Daily scores for the ``days`` days ending at ``as_of`` (same time of day), oldest first."""
    _check_inputs(as_of, seats)
    if days < 1:
        raise ValueError("days must be >= 1")
    return tuple(
        score(account_state, model, as_of - timedelta(days=offset), seats) for offset in range(days - 1, -1, -1)
    )


def band_change(
    prev: HealthScore | None,
    new: HealthScore,
    model: ScoreModel,
    last_alert_at: datetime | None = None,
) -> AlertKind | None:
    """The alert a new score raises against the previous one, or None.

    ``"band_changed"`` when the band differs, else ``"score_dropped"`` when the score fell by
    more than ``model.alert_drop`` points. No alert without a previous score, nor within
    ``model.cooldown_hours`` of ``last_alert_at`` (the time of the last alert sent, if any).
    """
    if prev is None:
        return None
    # Clamped: a model stored before the bound existed must not overflow timedelta and fail every batch.
    cooldown = timedelta(hours=min(model.cooldown_hours, MAX_COOLDOWN_HOURS))
    if last_alert_at is not None and new.as_of - last_alert_at < cooldown:
        return None
    if prev.band != new.band:
        return "band_changed"
    if prev.score - new.score > model.alert_drop:
        return "score_dropped"
    return None
