"""Event wire format, frozen values, and the shared hypothesis strategies for the fold tests.

The strategies draw from small pools of ids, names and timestamps so that collisions happen:
the same messageId with the same or with different content, same timestamps, the same
account/user across events, days far enough apart to exercise the 90-day retention.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.events import (
    Event,
    FrozenMap,
    format_ts,
    freeze,
    json_type,
    message_digest,
    parse_ts,
    thaw,
)

SETTINGS = settings(max_examples=100, deadline=None)
BASE = datetime(2026, 8, 1, tzinfo=UTC)
DAY_OFFSETS = (0, 1, 2, 5, 13, 14, 29, 30, 60, 88, 89, 90, 91, 120)

JSON_VALUES = (
    None, True, False, 0, 1, -2, 0.5, 1e3, "", "a", "pro", "ü", [], [1, "a"], {"k": None}, {"k": [1, {"v": True}]},
)  # fmt: skip
KINDS = ("track", "track", "page", "screen", "identify", "group", "alias")


def make_event(rng: random.Random) -> Event:
    """One event from small pools (types weighted towards usage), chosen by ``rng``."""
    kind = rng.choice(KINDS)
    user_id = rng.choice(["u1", "u2", "u3", None])
    anonymous_id = rng.choice(["a1", "a2", None])
    if user_id is None and anonymous_id is None:
        anonymous_id = "a1"
    group_id = rng.choice(["g1", "g2", None]) if kind != "alias" else None
    if kind == "group" and group_id is None:
        group_id = "g1"
    if kind == "alias":
        user_id = user_id or "u1"

    def some_json(keys: list[str]) -> FrozenMap:
        return freeze({k: rng.choice(JSON_VALUES) for k in rng.sample(keys, rng.randint(0, 3))})

    usage = kind in ("track", "page", "screen")
    # Trait-carrying calls share fewer ids, so that last-write-wins ties are frequent.
    number = rng.randrange(4 if kind in ("identify", "group") else 14)
    if rng.random() < 0.5:
        # Same message id, same timestamp, maybe other content: exercises the last tie-breaks.
        timestamp = BASE + timedelta(days=DAY_OFFSETS[number])
    else:
        timestamp = BASE + timedelta(days=rng.choice(DAY_OFFSETS), seconds=rng.choice([0, 3600, 86399, 86399.123]))
    return Event(
        message_id=f"m{number}",
        type=kind,
        timestamp=timestamp,
        user_id=user_id,
        anonymous_id=anonymous_id,
        group_id=group_id,
        event=rng.choice(["Signed Up", "Report Viewed", "Export"]) if kind == "track" else None,
        name=rng.choice(["Home", "Pricing", None]) if kind in ("page", "screen") else None,
        properties=some_json(["plan", "amount", "tags", "flag"]) if usage else FrozenMap(),
        traits=some_json(["name", "plan", "seats"]) if kind in ("identify", "group") else FrozenMap(),
        previous_id=rng.choice(["a1", "a2", "old"]) if kind == "alias" else None,
    )


def events() -> st.SearchStrategy[Event]:
    """Events from small pools; one hypothesis draw (a seed) per event keeps the tests fast."""
    return st.integers(0, 2**32 - 1).map(lambda seed: make_event(random.Random(seed)))


event_lists = st.lists(events(), max_size=20)
short_event_lists = st.lists(events(), max_size=10)


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """``(original, permutation of original plus re-deliveries of some of its events)``."""
    original = draw(event_lists)
    duplicates = draw(st.lists(st.sampled_from(original), max_size=10)) if original else []
    return original, draw(st.permutations(original + duplicates))


# --- tests -----------------------------------------------------------------------------------

WIRE = {
    "v": 2,
    "messageId": "msg-1",
    "type": "track",
    "userId": "u1",
    "anonymousId": None,
    "groupId": "g1",
    "event": "Report Viewed",
    "name": None,
    "properties": {"plan": "pro", "n": 3, "tags": ["a", "b"], "nested": {"x": None}},
    "traits": {},
    "context": {"ip": "1.2.3.4"},
    "previousId": None,
    "timestamp": "2026-11-22T04:40:00.123Z",
    "receivedAt": "2026-11-22T04:40:01.000Z",
    "sentAt": None,
    "originalTimestamp": "2026-11-22T04:39:59.500Z",
}


def test_from_wire_reads_segment_fields() -> None:
    event = Event.from_wire(WIRE)
    assert event.message_id == "msg-1"
    assert event.timestamp == datetime(2026, 11, 22, 4, 40, 0, 123000, tzinfo=UTC)
    assert event.properties["tags"] == ("a", "b")
    assert isinstance(event.properties["nested"], FrozenMap)
    assert event.day == "2026-11-22"
    assert event.catalog_name == "Report Viewed"
    assert event.user_key == "u1"
    assert hash(event) == hash(Event.from_wire(WIRE))


def test_wire_round_trip() -> None:
    assert Event.from_wire(WIRE).to_wire() == WIRE
    assert json.loads(json.dumps(Event.from_wire(WIRE).to_wire())) == WIRE
    # A format-1 dict (no "v": what ingest stored before versioning) reads the same and writes format 2.
    v1 = {k: v for k, v in WIRE.items() if k != "v"}
    assert Event.from_wire(v1) == Event.from_wire(WIRE) and Event.from_wire(v1).to_wire() == WIRE


@SETTINGS
@given(events())
def test_event_round_trips_through_wire(event: Event) -> None:
    assert Event.from_wire(json.loads(json.dumps(event.to_wire()))) == event


def test_timestamps_normalised_to_utc_milliseconds() -> None:
    assert parse_ts("2026-11-22T05:40:00.123456+01:00") == datetime(2026, 11, 22, 4, 40, 0, 123000, tzinfo=UTC)
    assert parse_ts("2026-11-22T04:40:00") == datetime(2026, 11, 22, 4, 40, tzinfo=UTC)
    assert format_ts(datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=-2)))) == (
        "2026-01-02T05:04:05.006Z"
    )


def test_catalog_names() -> None:
    page = Event.from_wire({**WIRE, "type": "page", "event": None, "name": "Home"})
    screen = Event.from_wire({**WIRE, "type": "screen", "event": None, "name": None})
    identify = Event.from_wire({**WIRE, "type": "identify", "event": None})
    assert (page.catalog_name, screen.catalog_name, identify.catalog_name) == ("page:Home", "screen:", None)
    assert page.display_name == "Home"


def test_digest_is_first_8_bytes_of_blake2b() -> None:
    assert message_digest("msg-1") == hashlib.blake2b(b"msg-1").digest()[:8].hex()
    assert len(message_digest("x")) == 16


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messageId": ""}, "messageId"),
        ({"messageId": None}, "messageId"),
        ({"type": "bogus"}, "type"),
        ({"timestamp": None}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"properties": [1]}, "properties"),
        ({"userId": {"a": 1}}, "userId"),
        ({"receivedAt": "nope"}, "receivedAt"),
        ({"v": 99}, "event format 99 is newer"),
    ],
)
def test_from_wire_rejects_bad_input(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Event.from_wire({**WIRE, **change})


def test_numeric_user_id_is_a_string() -> None:
    assert Event.from_wire({**WIRE, "userId": 42}).user_id == "42"


def test_freeze_and_thaw() -> None:
    value = {"a": [1, {"b": None}], "c": True}
    frozen = freeze(value)
    assert thaw(frozen) == value
    assert hash(frozen) == hash(freeze(value))
    with pytest.raises(ValueError, match="non-finite"):
        freeze({"x": float("nan")})
    with pytest.raises(ValueError, match="not a string"):
        freeze({1: "x"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s", "string"),
        (1, "number"),
        (1.5, "number"),
        (True, "boolean"),
        (None, "null"),
        (freeze({}), "object"),
        ((), "array"),
        ({}, "object"),
        ([], "array"),
    ],
)
def test_json_type(value: object, expected: str) -> None:
    assert json_type(value) == expected
