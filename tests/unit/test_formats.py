"""Stored chunk and event formats: a format-1 chunk written by the code before versioning reads with today's
code, field by field; format 2 round-trips; a format newer than the code is refused, never misread.

``tests/fixtures/chunk_format1.json`` is a ``Scan`` response (DynamoDB JSON, binary as base64) holding one chunk
that the code of ``main`` before format 2 wrote: ``parse_request`` -> ``normalise`` -> ``pack_chunks`` of one
batch (a ``sentAt`` two seconds and a quarter behind the server's clock, a batch ``context``), received at
2026-12-06T09:30:00.250Z. It is never regenerated: it is what the day tables of a running stack hold.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from chalicelib.chunks import decode_chunk_body, pack_chunks, unpack_chunk
from projections.events import Event
from projections.formats import (
    CHUNK_FORMAT,
    EVENT_FORMAT,
    FormatError,
    chunk_format,
    event_format,
    upcast_chunk,
    upcast_chunk_v1,
    upcast_event,
    upcast_event_v1,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chunk_format1.json"
RECEIVED = "2026-12-06T09:30:00.250Z"
SENT = "2026-12-06T09:29:58.000Z"
LIBRARY = {"name": "analytics-python", "version": "2.3.3"}


def format1_item() -> dict[str, Any]:
    """The fixture's item as boto3's ``scan`` returns it (binary attributes as bytes)."""
    (item,) = json.loads(FIXTURE.read_text())["Items"]
    return {name: {"B": base64.b64decode(value["B"])} if "B" in value else value for name, value in item.items()}


def stored_body(item: dict[str, Any]) -> list[dict[str, Any]]:
    """A chunk's events exactly as stored (no upcast)."""
    return json.loads(zlib.decompress(item["body"]["B"]))  # type: ignore[no-any-return]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def expected(message_id: str, kind: str, timestamp: str, original: str | None, **fields: Any) -> Event:
    return Event(message_id=message_id, type=kind, timestamp=ts(timestamp), received_at=ts(RECEIVED),
                 sent_at=ts(SENT), original_timestamp=None if original is None else ts(original), **fields)


# Every message of the fixture's batch, as today's folds must see it (clock skew: +2.250 s).
EXPECTED = [
    expected("m-identify", "identify", "2026-12-06T09:00:02.250Z", "2026-12-06T09:00:00.000Z", user_id="user-1",
             traits={"name": "Ada Lovelace", "email": "ada@example.com", "plan": "pro", "seats": 5},
             context={"library": LIBRARY, "ip": "203.0.113.7"}),
    expected("m-group", "group", "2026-12-06T09:01:02.250Z", "2026-12-06T09:01:00.000Z", user_id="user-1",
             group_id="acct-1", traits={"name": "Acme Inc", "plan": "enterprise", "employees": 250},
             context={"library": LIBRARY}),
    expected("m-track", "track", "2026-12-06T09:02:32.375Z", "2026-12-06T09:02:30.125Z", user_id="user-1",
             group_id="acct-1", event="Report Created",
             properties={"rows": 10, "format": "csv", "tags": ["q4", "finance"], "nested": {"ok": True, "ratio": 0.25}},
             context={"library": LIBRARY, "groupId": "acct-1"}),
    expected("m-page", "page", "2026-12-06T09:03:02.250Z", "2026-12-06T09:03:00.000Z", user_id="user-1",
             name="Dashboard", properties={"category": "Reports", "path": "/dashboard", "title": "Dashboard"},
             context={"library": LIBRARY}),
    expected("m-screen", "screen", "2026-12-06T09:04:02.250Z", "2026-12-06T09:04:00.000Z", user_id="user-1",
             name="Settings", properties={"tab": "billing"}, context={"library": LIBRARY}),
    expected("m-anonymous", "track", "2026-12-06T08:55:02.250Z", "2026-12-06T08:55:00.000Z", anonymous_id="anon-7",
             event="Pricing Viewed", properties={"currency": "EUR", "annual": False}, context={"library": LIBRARY}),
    expected("m-alias", "alias", "2026-12-06T09:05:02.250Z", "2026-12-06T09:05:00.000Z", user_id="user-1",
             previous_id="anon-7", context={"library": LIBRARY}),
    expected("m-rudder-identify", "identify", "2026-12-06T09:06:02.250Z", "2026-12-06T09:06:00.000Z", user_id="42",
             traits={"name": "Grace Hopper", "role": "admin"}, context={"library": LIBRARY, "locale": "en-GB"}),
    # No messageId (a stable one derived from the message: a retry is recognised) and no client timestamp.
    expected("266f6a5e-c82c-4e83-acb1-75ddd284ccc2", "track", RECEIVED, None, user_id="user-1", event="Export Finished",
             properties={"seconds": 1.5}, context={"library": LIBRARY}),
]


def test_the_fixture_is_format_1() -> None:
    """What the fixture holds is what the code before versioning wrote: ``fmt`` 1 and events without ``"v"``."""
    item = format1_item()
    assert item["fmt"] == {"N": "1"} and item["n"] == {"N": str(len(EXPECTED))}
    assert item["tenant"] == {"S": "tenant-fixture"} and item["received_at"] == {"S": RECEIVED}
    assert all("v" not in e for e in stored_body(item))
    assert sorted(e["type"] for e in stored_body(item)) == ["alias", "group", "identify", "identify", "page",
                                                            "screen", "track", "track", "track"]


def test_a_format_1_chunk_reads_with_every_field() -> None:
    tenant, wire = unpack_chunk(format1_item())
    assert tenant == "tenant-fixture"
    assert [w["v"] for w in wire] == [EVENT_FORMAT] * len(EXPECTED)  # upcast on read
    events = [Event.from_wire(w) for w in wire]
    assert events == EXPECTED
    track = events[2]
    assert (track.group_id, track.catalog_name, track.properties["tags"], track.is_usage) == (
        "acct-1", "Report Created", ("q4", "finance"), True)
    assert events[5].user_key == "anon-7" and events[5].user_id is None
    assert events[3].catalog_name == "page:Dashboard" and events[4].catalog_name == "screen:Settings"


def test_the_stream_handler_path_reads_format_1_too() -> None:
    """The handler decodes a stream image's body (base64 text) with its ``fmt`` as a Decimal."""
    item = format1_item()
    wire = decode_chunk_body(base64.b64encode(item["body"]["B"]).decode(), "pk", Decimal(item["fmt"]["N"]))
    assert [Event.from_wire(w) for w in wire] == EXPECTED
    # An item from before the attribute existed (no ``fmt``) is format 1 as well.
    assert decode_chunk_body(item["body"]["B"]) == wire


def test_a_format_2_chunk_round_trips() -> None:
    """Re-packing what a format-1 chunk holds writes format 2 (item and every event) and reads back the same."""
    _, old = unpack_chunk(format1_item())
    (item,) = pack_chunks("tenant-fixture", old, ts(RECEIVED))
    assert item["fmt"] == {"N": str(CHUNK_FORMAT)} == {"N": "2"}
    assert [e["v"] for e in stored_body(item)] == [2] * len(EXPECTED)
    tenant, wire = unpack_chunk(item)
    assert tenant == "tenant-fixture" and wire == old
    assert [Event.from_wire(w) for w in wire] == EXPECTED
    assert [Event.from_wire(e.to_wire()) for e in EXPECTED] == EXPECTED  # to_wire writes format 2
    assert all(e.to_wire()["v"] == 2 for e in EXPECTED)


def test_pack_chunks_writes_format_2_events_whatever_it_is_given() -> None:
    """An event handed over in format 1 is stamped; the chunk key (a digest of the ids) does not change."""
    old = stored_body(format1_item())
    (item,) = pack_chunks("tenant-fixture", old, ts(RECEIVED))
    assert item["pk"] == format1_item()["pk"]
    assert stored_body(item) == [{**e, "v": 2} for e in old]
    with pytest.raises(FormatError, match="event format 99 is newer"):
        pack_chunks("tenant-fixture", [{**old[0], "v": 99}], ts(RECEIVED))


@pytest.mark.parametrize("fmt", [3, 99, "99", Decimal(99)])
def test_a_chunk_of_a_newer_format_is_refused(fmt: Any) -> None:
    item = {**format1_item(), "fmt": {"N": str(fmt)}}
    with pytest.raises(ValueError, match=re.escape(f"chunk {item['pk']['S']}: chunk format {fmt} is newer than this")):
        unpack_chunk(item)
    # Refused before the body is opened: a newer format may encode it otherwise.
    with pytest.raises(FormatError, match="newer"):
        decode_chunk_body(b"\x00 not zlib", "pk", fmt)


@pytest.mark.parametrize("fmt", [{"S": "two"}, {"N": "0"}, {"N": "1.5"}, {"NULL": True}])
def test_a_chunk_format_that_is_not_a_number_is_refused(fmt: dict[str, Any]) -> None:
    with pytest.raises(FormatError, match="is not a format number"):
        unpack_chunk({**format1_item(), "fmt": fmt})


@pytest.mark.parametrize("v", [3, 99, "x", True, 0, None])
def test_an_event_of_a_newer_or_unknown_format_is_refused(v: Any) -> None:
    wire = EXPECTED[2].to_wire()
    if v is None:  # format 1: read
        del wire["v"]
        assert Event.from_wire(wire) == EXPECTED[2]
        return
    with pytest.raises(ValueError, match="event format"):
        Event.from_wire({**wire, "v": v})


def test_the_upcasters_are_pure_steps() -> None:
    old = stored_body(format1_item())
    snapshot = json.dumps(old)
    assert upcast_event_v1(old[0]) == {**old[0], "v": 2}
    assert upcast_chunk_v1(old) == [{**e, "v": 2} for e in old]
    assert json.dumps(old) == snapshot  # the input is not changed
    current = {**old[0], "v": 2}
    assert upcast_event(current) is current  # the current format costs nothing
    assert upcast_event(old[0]) == current and upcast_chunk(None, old) == upcast_chunk(1, old) == [
        {**e, "v": 2} for e in old]
    assert upcast_chunk(2, [current]) == [current]
    # A non-object element stays as it is: Event.from_wire rejects that one event, not the whole chunk.
    assert upcast_chunk_v1([old[0], 7]) == [current, 7]
    assert (chunk_format(None), chunk_format(Decimal(2)), chunk_format("1"), event_format({}), event_format(current)) \
        == (1, 2, 1, 1, 2)
