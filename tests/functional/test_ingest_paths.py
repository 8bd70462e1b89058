"""Every path and body shape Segment's clients use, on the wire (the SDKs themselves: test_sdk_clients.py and
tests/e2e/test_browser_sdk.py): short paths with their long forms' semantics, write keys in the body, text/plain
and beacon bodies, CORS for browsers, traits from ``context.traits``, the SDK settings, and the 404 of every
other path."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from chalicelib.ingest import MAX_MESSAGE_BYTES
from chalicelib.paths import INGEST_PATHS, METRICS_PATH, SHORT_PATHS
from tests.helpers.events import stored_events

pytestmark = pytest.mark.timeout(120)

ORIGIN = "https://shop.example"


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def send(url: str, path: str, body: Any, *, key: str | None = None, content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> requests.Response:
    extra = {"Content-Type": content_type, "Origin": ORIGIN, **(headers or {})}
    if key:
        extra["Authorization"] = _basic(key)
    return requests.post(f"{url}{path}", data=json.dumps(body).encode(), headers=extra, timeout=30)


MESSAGES: dict[str, dict[str, Any]] = {
    "track": {"type": "track", "userId": "u1", "event": "Report Created", "properties": {"rows": 3}},
    "identify": {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}},
    "group": {"type": "group", "userId": "u1", "groupId": "acct-1", "traits": {"name": "Example Inc"}},
    "page": {"type": "page", "anonymousId": "anon-1", "name": "Pricing", "properties": {"path": "/pricing"}},
    "screen": {"type": "screen", "userId": "u1", "name": "Home"},
    "alias": {"type": "alias", "userId": "u1", "previousId": "anon-1"},
}
WIRE_FIELDS = ("type", "userId", "anonymousId", "groupId", "event", "name", "properties", "traits", "previousId")


def test_every_short_path_is_its_long_form(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    sent: dict[str, str] = {}
    for path, kind in INGEST_PATHS.items():
        n = len(sent)
        if kind == "batch":
            body: dict[str, Any] = {"batch": [{**MESSAGES["track"], "messageId": f"m{n}"}]}
        else:
            body = {**MESSAGES[kind], "messageId": f"m{n}"}
        r = send(server, path, body, key=tenant["write_key"])
        assert r.status_code == 200 and r.json() == {"success": True}, (path, r.text)
        sent[f"m{n}"] = path
    stored = {e["messageId"]: e for e in stored_events(ddb, prefix)}
    assert set(stored) == set(sent)
    by_path = {sent[m]: {f: e[f] for f in WIRE_FIELDS} for m, e in stored.items()}
    for short, kind in SHORT_PATHS.items():
        assert by_path[short] == by_path[f"/v1/{kind}"], short
    assert by_path["/v1/import"] == by_path["/v1/batch"]


def test_a_short_path_keeps_its_long_forms_errors(server: str, tenant: dict[str, str]) -> None:
    r = send(server, "/v1/t", MESSAGES["identify"], key=tenant["write_key"])
    assert r.status_code == 400
    assert (r.json()["field"], r.json()["message"]) == ("type", "type: type must be 'track' on /v1/t")
    big = {**MESSAGES["track"], "properties": {"blob": "x" * MAX_MESSAGE_BYTES}}
    r = send(server, "/v1/b", {"batch": [big]}, key=tenant["write_key"])
    assert r.status_code == 400 and r.json()["field"] == "batch[0]" and r.json()["limit"] == MAX_MESSAGE_BYTES
    r = send(server, "/v1/i", {"type": "identify"}, key=tenant["write_key"])
    assert r.status_code == 400 and r.json()["code"] == "invalid_request" and "userId" in r.json()["message"]
    r = send(server, "/v1/g", {**MESSAGES["group"], "writeKey": "wk_wrong"})
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert r.headers["Access-Control-Allow-Origin"] == "*"  # the page's SDK can read the 4xx


CONTENT_TYPES = ["text/plain", "text/plain;charset=UTF-8", "text/plain; charset=utf-8", "application/json",
                 "application/octet-stream"]


def test_bodies_are_json_whatever_their_type_and_the_write_key_may_be_in_them(
        server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    """What analytics.js (text/plain) and navigator.sendBeacon (text/plain;charset=UTF-8) send, without Basic."""
    for n, content_type in enumerate(CONTENT_TYPES):
        one = {**MESSAGES["track"], "messageId": f"single-{n}", "writeKey": tenant["write_key"],
               "sentAt": "2026-01-01T00:00:10.000Z", "timestamp": "2026-01-01T00:00:00.000Z",
               "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}}
        assert send(server, "/v1/t", one, content_type=content_type).status_code == 200, content_type
        # A batch's write key may be in its messages only (analytics.js puts it in both).
        batch = {"batch": [{**MESSAGES["track"], "messageId": f"batched-{n}", "writeKey": tenant["write_key"],
                            "_metadata": {"retryCount": 1}}], "sentAt": "2026-01-01T00:00:10.000Z"}
        r = send(server, "/v1/b", batch, content_type=content_type)
        assert r.status_code == 200, (content_type, r.text)
    stored = {e["messageId"]: e for e in stored_events(ddb, prefix)}
    assert set(stored) == {f"{kind}-{n}" for kind in ("single", "batched") for n in range(len(CONTENT_TYPES))}
    assert all("_metadata" not in e and "writeKey" not in e for e in stored.values())
    # sentAt is kept, and corrected the client's clock: the event happened 10 s before the request was sent.
    assert stored["single-0"]["sentAt"] == "2026-01-01T00:00:10.000Z"
    assert stored["single-0"]["originalTimestamp"] == "2026-01-01T00:00:00.000Z"


def test_cors_preflight_of_every_public_path(server: str) -> None:
    for path in [*INGEST_PATHS, METRICS_PATH]:
        pre = requests.options(f"{server}{path}", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,content-encoding,x-retry-count"},
            timeout=30)
        assert pre.status_code == 200, path
        assert pre.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in pre.headers["Access-Control-Allow-Methods"].split(",")
        allowed = {h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "content-encoding", "x-retry-count"} <= allowed, path
        assert "retry-after" in pre.headers["Access-Control-Expose-Headers"].lower()
        assert int(pre.headers["Access-Control-Max-Age"]) > 0


def test_the_private_api_keeps_its_own_cors(server: str) -> None:
    pre = requests.options(f"{server}/api/accounts", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"},
        timeout=30)
    assert pre.headers["Access-Control-Allow-Origin"] not in ("*", ORIGIN)
    assert "content-encoding" not in pre.headers["Access-Control-Allow-Headers"].lower()


def test_analytics_js_telemetry_is_accepted_and_dropped(server: str, ddb: Any, prefix: str) -> None:
    series = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1,
                          "tags": {"library": "analytics.js", "library_version": "next-1.84.3", "0": "track"}}]}
    r = send(server, METRICS_PATH, series, content_type="text/plain")
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert stored_events(ddb, prefix) == []
    bad = requests.post(f"{server}{METRICS_PATH}", data=b"{not json", headers={"Content-Type": "text/plain"},
                        timeout=30)
    assert bad.status_code == 400 and bad.json()["field"] == "body"


def test_sdk_settings_name_this_api(server: str, tenant: dict[str, str]) -> None:
    key = tenant["write_key"]
    r = requests.get(f"{server}/v1/projects/{key}/settings", headers={"Origin": ORIGIN}, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    segment = r.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == key
    assert (segment["apiHost"], segment["protocol"]) == (server.split("://", 1)[1] + "/v1", "http")
    assert r.json()["metrics"]["sampleRate"] == 0
    unknown = requests.get(f"{server}/v1/projects/wk_nobody/settings", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_write_key"
    # Another tenant's API token is not a write key.
    assert requests.get(f"{server}/v1/projects/{tenant['api_token']}/settings", timeout=30).status_code == 404


UNKNOWN = [
    ("POST", "/v1/tarck", "/v1/track"),
    ("POST", "/batch", "/v1/batch"),
    ("POST", "/v2/b", "/v1/b"),
    ("POST", "/v1/identity", "/v1/identify"),
    ("GET", "/api/acounts", "/api/accounts"),
    ("OPTIONS", "/v1/tracks", "/v1/track"),
    ("GET", "/v1/projects/wk_x/setting", "/v1/projects/{write_key}/settings"),
]


def test_an_unknown_path_answers_404_naming_the_nearest(server: str) -> None:
    """Not API Gateway's SigV4 403 ("Authorization header requires 'Credential' parameter...")."""
    for method, path, nearest in UNKNOWN:
        r = requests.request(method, f"{server}{path}", headers={"Authorization": "Basic d2s6", "Origin": ORIGIN},
                             timeout=30)
        assert r.status_code == 404 and r.headers["Content-Type"] == "application/json", (method, path)
        body = r.json()
        assert (body["code"], body["path"], body["nearest"]) == ("not_found", path, nearest)
        assert path in body["message"] and nearest in body["message"] and "Credential" not in r.text
        assert r.headers["Access-Control-Allow-Origin"] == "*"


# --- traits: `traits`, else `context.traits` (identify, group, track); the root wins ---------------------------


def test_traits_come_from_context_traits_when_the_call_has_none(server: str, tenant: dict[str, str], ddb: Any,
                                                               prefix: str) -> None:
    ctx = {"traits": {"email": "ctx@example.com", "name": "From Context"}, "library": {"name": "analytics-python"}}
    batch = [
        {"type": "identify", "messageId": "id-ctx", "userId": "u1", "context": ctx},
        {"type": "identify", "messageId": "id-both", "userId": "u1", "traits": {"email": "root@example.com"},
         "context": ctx},
        {"type": "identify", "messageId": "id-empty-root", "userId": "u1", "traits": {}, "context": ctx},
        {"type": "group", "messageId": "g-ctx", "userId": "u1", "groupId": "a1",
         "context": {"traits": {"plan": "pro"}}},
        {"type": "track", "messageId": "t-ctx", "userId": "u1", "event": "Report Created", "context": ctx},
        {"type": "page", "messageId": "p-ctx", "userId": "u1", "name": "Home", "context": ctx},
    ]
    assert send(server, "/v1/batch", {"batch": batch}, key=tenant["write_key"]).status_code == 200
    stored = {e["messageId"]: e for e in stored_events(ddb, prefix)}
    assert stored["id-ctx"]["traits"] == ctx["traits"] and "traits" not in stored["id-ctx"]["context"]
    assert stored["id-ctx"]["context"]["library"] == {"name": "analytics-python"}
    assert stored["id-both"]["traits"] == {"email": "root@example.com"}  # the root wins
    assert stored["id-both"]["context"]["traits"] == ctx["traits"]
    assert stored["id-empty-root"]["traits"] == {}  # a root `traits` member, even empty, is the call's traits
    assert stored["g-ctx"]["traits"] == {"plan": "pro"}
    assert stored["t-ctx"]["traits"] == ctx["traits"]
    assert stored["p-ctx"]["traits"] == {} and stored["p-ctx"]["context"]["traits"] == ctx["traits"]


def test_context_traits_are_checked_like_traits(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    r = send(server, "/v1/batch", {"batch": [{"type": "identify", "userId": "u1", "context": {"traits": ["x"]}}]},
             key=tenant["write_key"])
    assert r.status_code == 400
    assert (r.json()["field"], r.json()["limit"]) == ("batch[0].context.traits", "object")
    many = {f"t{i}": i for i in range(51)}
    r = send(server, "/v1/i", {"type": "identify", "userId": "u1", "context": {"traits": many}},
             key=tenant["write_key"])
    assert r.status_code == 400 and (r.json()["field"], r.json()["limit"]) == ("context.traits", 50)
    r = send(server, "/v1/t", {"type": "track", "userId": "u1", "event": "E", "context": {"traits": {"x": "y" * 300}}},
             key=tenant["write_key"])
    assert r.status_code == 400 and r.json()["field"] == "context.traits.x" and r.json()["limit"] == 256
    assert stored_events(ddb, prefix) == []
