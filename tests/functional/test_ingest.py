"""The public ingest API against the real DynamoDB Local, driven by the real Segment SDK."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from segment.analytics import Client

from chalicelib import keys, services, tables
from chalicelib.ingest import MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, Ingestor, parse_request
from tests.helpers.events import scan_chunks, stored_events


def post(url: str, path: str, body: Any, key: str | None = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> requests.Response:
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(f"{url}{path}", data=data, auth=(key, "") if key else None,
                         headers={"Content-Type": "application/json", **(headers or {})}, timeout=30)


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": f"m-{i}", "userId": f"u{i % 3}", "event": "Report Created",
            "properties": {"n": i}, "timestamp": "2026-11-01T10:00:00.000Z", **extra}


def test_segment_sdk_events_land_in_todays_table(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    errors: list[Any] = []
    client = Client(write_key=tenant["write_key"], host=server, sync_mode=True, gzip=True,
                    on_error=lambda e, b: errors.append(e))
    past = datetime.now(UTC) - timedelta(days=3)
    client.identify("u1", {"name": "Ada", "email": "ada@example.com"}, timestamp=past)
    client.group("u1", "acct-1", {"name": "Example Inc", "plan": "pro", "seats": 12}, timestamp=past)
    client.track("u1", "Report Created", {"rows": 10}, context={"groupId": "acct-1"}, timestamp=past)
    client.page("u1", name="Home", properties={"path": "/"}, timestamp=past)
    client.flush()
    assert errors == []
    events = stored_events(ddb, prefix)
    assert sorted(e["type"] for e in events) == ["group", "identify", "page", "track"]
    assert {e["_tenant"] for e in events} == {tenant["tenant_id"]}
    tr = next(e for e in events if e["type"] == "track")
    assert tr["groupId"] == "acct-1" and tr["event"] == "Report Created" and tr["properties"] == {"rows": 10}
    # Back-dated events keep their (skew-corrected) event time; they land in the *arrival* day's table.
    ts = datetime.fromisoformat(tr["timestamp"].replace("Z", "+00:00"))
    assert abs((ts - past).total_seconds()) < 5
    assert tr["receivedAt"][:10] == datetime.now(UTC).strftime("%Y-%m-%d")
    grp = next(e for e in events if e["type"] == "group")
    assert grp["groupId"] == "acct-1" and grp["traits"]["plan"] == "pro"


def test_clock_skew_is_corrected(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    # The client clock is one hour fast: sentAt and timestamp both an hour ahead.
    now = datetime.now(UTC)
    fast = now + timedelta(hours=1)
    body = {"batch": [track(1, timestamp=(fast - timedelta(minutes=5)).isoformat())], "sentAt": fast.isoformat()}
    assert post(server, "/v1/batch", body, tenant["write_key"]).status_code == 200
    (ev,) = stored_events(ddb, prefix)
    ts = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00"))
    received = datetime.fromisoformat(ev["receivedAt"].replace("Z", "+00:00"))
    assert abs((received - ts) - timedelta(minutes=5)) < timedelta(seconds=1)
    assert ev["originalTimestamp"].startswith((fast - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))


def test_single_message_endpoints_and_body_write_key(server: str, tenant: dict[str, str], ddb: Any,
                                                     prefix: str) -> None:
    cases = {
        "track": {"userId": "u1", "event": "Signed Up"},
        "identify": {"userId": "u1", "traits": {"name": "A"}},
        "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "G"}},
        "page": {"anonymousId": "anon-1", "name": "Pricing"},
        "screen": {"userId": "u1", "name": "Home"},
        "alias": {"userId": "u1", "previousId": "anon-1"},
    }
    for kind, body in cases.items():
        r = post(server, f"/v1/{kind}", {**body, "writeKey": tenant["write_key"]})
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True}
    events = stored_events(ddb, prefix)
    assert sorted(e["type"] for e in events) == sorted(cases)
    assert all(e["messageId"] for e in events)  # generated when the client sent none


def test_retried_request_is_stored_once(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    body = {"batch": [track(i) for i in range(20)], "sentAt": datetime.now(UTC).isoformat()}
    for _ in range(3):
        assert post(server, "/v1/batch", body, tenant["write_key"]).status_code == 200
    # A retry with a later sentAt (the SDK re-stamps it) is the same request.
    body["sentAt"] = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    assert post(server, "/v1/batch", body, tenant["write_key"]).status_code == 200
    assert len(scan_chunks(ddb, prefix)) == 1
    assert sorted(e["messageId"] for e in stored_events(ddb, prefix)) == sorted(f"m-{i}" for i in range(20))


def test_retry_without_message_ids_is_stored_once(server: str, tenant: dict[str, str], ddb: Any,
                                                  prefix: str) -> None:
    body = {"batch": [{k: v for k, v in track(i).items() if k != "messageId"} for i in range(5)]}
    for _ in range(2):
        assert post(server, "/v1/batch", body, tenant["write_key"]).status_code == 200
    assert len(stored_events(ddb, prefix)) == 5


def test_duplicate_message_ids_inside_one_batch_count_once(server: str, tenant: dict[str, str], ddb: Any,
                                                           prefix: str) -> None:
    body = {"batch": [track(1), track(1), track(2)]}
    assert post(server, "/v1/batch", body, tenant["write_key"]).status_code == 200
    assert sorted(e["messageId"] for e in stored_events(ddb, prefix)) == ["m-1", "m-2"]


def test_retry_after_utc_midnight_is_not_stored_again(prefix: str, tenant: dict[str, str], ddb: Any) -> None:
    day = datetime(2031, 3, 1, tzinfo=UTC)
    tables.ensure_event_tables(ddb, prefix, day.date() - timedelta(days=1))
    clock = [day - timedelta(seconds=2)]
    ing = Ingestor(ddb, prefix, clock=lambda: clock[0])
    parsed = parse_request({"batch": [track(i) for i in range(4)]}, "batch")
    first = ing.ingest(tenant["tenant_id"], parsed)
    assert first.stored == 4 and first.table == keys.events_table_name(prefix, day - timedelta(days=1))
    clock[0] = day + timedelta(seconds=30)  # the client's retry lands after midnight
    second = ing.ingest(tenant["tenant_id"], parsed)
    assert second.stored == 0 and second.duplicates == 4
    assert scan_chunks(ddb, prefix, day) == []
    assert len(stored_events(ddb, prefix, day - timedelta(days=1))) == 4


def test_yesterday_is_read_only_for_requests_an_earlier_attempt_could_have_stored_there(
        prefix: str, tenant: dict[str, str], ddb: Any) -> None:
    """The cross-midnight read costs a request: events whose client timestamps say they happened today
    (after the margin) cannot be a retry of yesterday's request; events timestamped before midnight, or
    without a client timestamp, still are looked up — and a retry of them is caught."""
    day = datetime(2031, 3, 1, tzinfo=UTC)
    tables.ensure_event_tables(ddb, prefix, day.date() - timedelta(days=1))
    clock = [day - timedelta(seconds=5)]
    ing = Ingestor(ddb, prefix, clock=lambda: clock[0])
    reads: list[str] = []
    ddb.meta.events.register("provide-client-params.dynamodb.BatchGetItem",
                             lambda params, **_: reads.extend(params["RequestItems"]))

    def batch(ids: range, at: datetime, sent: datetime) -> Any:  # as an SDK sends: sentAt is the send time
        return parse_request({"batch": [{**track(i), "timestamp": at.isoformat()} for i in ids],
                              "sentAt": sent.isoformat()}, "batch")

    at = day - timedelta(seconds=8)  # the events happened before midnight
    assert ing.ingest(tenant["tenant_id"], batch(range(3), at, clock[0])).stored == 3
    clock[0] = day + timedelta(hours=3)
    yesterday = keys.events_table_name(prefix, day - timedelta(days=1))
    reads.clear()
    retried = batch(range(3), at, clock[0])  # the SDK's retry, three hours later
    assert ing.ingest(tenant["tenant_id"], retried).duplicates == 3 and reads == [yesterday]
    reads.clear()
    today = batch(range(10, 13), day + timedelta(hours=2, minutes=59), clock[0])
    assert ing.ingest(tenant["tenant_id"], today).stored == 3 and reads == []
    no_client_time = parse_request({"batch": [{k: v for k, v in track(20).items() if k != "timestamp"}]}, "batch")
    assert ing.ingest(tenant["tenant_id"], no_client_time).stored == 1 and reads == [yesterday]


def test_gzip_body(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    raw = gzip.compress(json.dumps({"batch": [track(i) for i in range(10)]}).encode())
    r = post(server, "/v1/batch", None, tenant["write_key"], raw=raw, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert len(stored_events(ddb, prefix)) == 10


def test_write_key_of_tenant_a_cannot_write_into_tenant_b(server: str, prefix: str, ddb: Any) -> None:
    a = services.tenants().create("A")
    b = services.tenants().create("B")
    body = {"batch": [track(1)], "writeKey": b["write_key"], "tenant_id": b["tenant_id"]}
    # The Basic-auth key wins over the body; the tenant comes from the key only.
    assert post(server, "/v1/batch", body, a["write_key"]).status_code == 200
    events = stored_events(ddb, prefix)
    assert [e["_tenant"] for e in events] == [a["tenant_id"]]
    # An API token (read-only) is not a write key.
    r = post(server, "/v1/batch", {"batch": [track(2)]}, b["api_token"])
    assert r.status_code == 401
    assert len(stored_events(ddb, prefix)) == 1


# --- bad input: one test per class; every one writes nothing ------------------------------------


def _assert_rejected(r: requests.Response, status: int, field: str | None = None, *, index: int | None = None,
                     limit: Any = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["code"] and body["message"]
    if field is not None:
        assert body["field"] == field, body
    if index is not None:
        assert body["index"] == index, body
    if limit is not None:
        assert body["limit"] == limit, body
    return body


@pytest.fixture
def nothing_written(ddb: Any, prefix: str):  # type: ignore[no-untyped-def]
    yield
    assert scan_chunks(ddb, prefix) == []


def test_missing_write_key(server: str, nothing_written: None) -> None:
    _assert_rejected(post(server, "/v1/batch", {"batch": [track(1)]}), 401, "Authorization")


def test_wrong_write_key(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    _assert_rejected(post(server, "/v1/batch", {"batch": [track(1)]}, "wk_nope"), 401, "Authorization")


def test_malformed_json(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    r = post(server, "/v1/batch", None, tenant["write_key"], raw=b'{"batch": [')
    assert _assert_rejected(r, 400, "body")["code"] == "invalid_json"


def test_wrong_types(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    r = post(server, "/v1/batch", {"batch": [track(0), track(1, properties="not-an-object")]}, tenant["write_key"])
    _assert_rejected(r, 400, "batch[1].properties", index=1)
    r = post(server, "/v1/batch", {"batch": "nope"}, tenant["write_key"])
    _assert_rejected(r, 400, "batch")


def test_missing_required_fields(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    msg = track(3)
    del msg["event"]
    r = post(server, "/v1/batch", {"batch": [track(1), track(2), msg]}, tenant["write_key"])
    _assert_rejected(r, 400, "batch[2].event", index=2)
    r = post(server, "/v1/group", {"userId": "u"}, tenant["write_key"])
    _assert_rejected(r, 400, "groupId")
    r = post(server, "/v1/track", {"event": "x"}, tenant["write_key"])
    body = _assert_rejected(r, 400)
    assert "userId or anonymousId" in body["message"]


def test_unknown_type(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    r = post(server, "/v1/batch", {"batch": [track(1, type="purchase")]}, tenant["write_key"])
    _assert_rejected(r, 400, "batch[0].type", index=0, limit="track|identify|group|page|screen|alias")


def test_oversize_message(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    big = track(1, properties={"blob": "x" * (MAX_MESSAGE_BYTES + 10)})
    r = post(server, "/v1/batch", {"batch": [track(0), big]}, tenant["write_key"])
    assert _assert_rejected(r, 400, "batch[1]", index=1, limit=MAX_MESSAGE_BYTES)["code"] == "message_too_large"


def test_oversize_request(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    msgs = [track(i, properties={"blob": "y" * 20_000}) for i in range(30)]  # each < 32 KB, total > 500 KB
    r = post(server, "/v1/batch", {"batch": msgs}, tenant["write_key"])
    assert _assert_rejected(r, 400, "body", limit=MAX_REQUEST_BYTES)["code"] == "request_too_large"
    # ...and a gzip bomb is cut off at the same limit after decompression.
    raw = gzip.compress(json.dumps({"batch": msgs}).encode())
    r = post(server, "/v1/batch", None, tenant["write_key"], raw=raw, headers={"Content-Encoding": "gzip"})
    _assert_rejected(r, 400, "body", limit=MAX_REQUEST_BYTES)


def test_too_many_messages(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    msgs = [{"type": "track", "userId": "u", "event": "e"} for _ in range(MAX_BATCH_MESSAGES + 1)]
    r = post(server, "/v1/batch", {"batch": msgs}, tenant["write_key"])
    assert _assert_rejected(r, 400, "batch", limit=MAX_BATCH_MESSAGES)["code"] == "too_many_messages"


def test_bad_gzip(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    r = post(server, "/v1/batch", None, tenant["write_key"], raw=b"\x1f\x8b\x08not-gzip",
             headers={"Content-Encoding": "gzip"})
    assert _assert_rejected(r, 400, "Content-Encoding")["code"] == "invalid_gzip"


def test_far_future_timestamp(server: str, tenant: dict[str, str], nothing_written: None) -> None:
    future = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    body = {"batch": [track(0), track(1, timestamp=future, sentAt=datetime.now(UTC).isoformat())]}
    r = post(server, "/v1/batch", body, tenant["write_key"])
    _assert_rejected(r, 400, "batch[1].timestamp", index=1, limit="receivedAt + 24h")
