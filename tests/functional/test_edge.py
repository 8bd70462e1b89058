"""The HTTP edge against DynamoDB Local: any client works, no 5xx from client input, a request is stored
whole or not at all, every size is checked on what is stored, per-tenant catalog caps."""

from __future__ import annotations

import base64
import gzip
import json
import os
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.config import Config

from app import app
from chalicelib import db, keys, services
from chalicelib.chunks import pack_chunks
from chalicelib.errors import ApiError
from chalicelib.ingest import (
    MAX_DEPTH,
    MAX_EVENT_NAMES,
    MAX_ID_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PROPERTY_KEYS,
    MAX_STORED_BYTES,
    MAX_TRAITS_BYTES,
    CatalogCaps,
    Ingestor,
    decode_body,
    parse_request,
)
from chalicelib.query import encode_cursor
from projections.registers import MAX_TRAIT_KEY, MAX_TRAIT_VALUE, MAX_TRAITS
from tests.helpers.events import scan_chunks, stored_events
from tests.helpers.fold import project_requests

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], Any]:
    """A plain ``urllib`` request: no ``Accept`` header unless given (urllib sends none by default)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": f"m-{i}", "userId": f"u{i % 3}", "event": "Report Created",
            "properties": {"n": i}, "timestamp": "2026-11-01T10:00:00.000Z", **extra}


# --- 1. every client works -------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", "text/html", "application/json"])
def test_every_client_works_whatever_its_accept_header(server: str, tenant: dict[str, str], ddb: Any, prefix: str,
                                                        accept: str | None) -> None:
    extra = {"Accept": accept} if accept else {}
    body = json.dumps({"batch": [track(1), track(2)]}).encode()
    for ctype in ("application/json", "text/plain", "application/octet-stream"):
        # plain and gzip bodies, every content type ingest accepts
        status, headers, out = call(f"{server}/v1/batch", "POST", body,
                                    {"Content-Type": ctype, "Authorization": basic(tenant["write_key"]), **extra})
        assert (status, out) == (200, {"success": True}), (ctype, out)
        assert headers["Content-Type"] == "application/json"
        status, _, out = call(f"{server}/v1/batch", "POST", gzip.compress(body),
                              {"Content-Type": ctype, "Content-Encoding": "gzip",
                               "Authorization": basic(tenant["write_key"]), **extra})
        assert (status, out) == (200, {"success": True}), (ctype, "gzip", out)
    assert sorted(e["messageId"] for e in stored_events(ddb, prefix)) == ["m-1", "m-2"]
    auth = {"Authorization": f"Bearer {tenant['api_token']}", **extra}
    status, headers, out = call(f"{server}/api/accounts", headers=auth)
    assert status == 200 and out == {"items": [], "next_cursor": None}
    assert headers["Content-Type"] == "application/json"
    status, _, out = call(f"{server}/api/openapi.json", headers=extra)
    assert status == 200 and out["openapi"].startswith("3.")
    status, _, out = call(f"{server}/api/accounts/nope", headers=auth)
    assert status == 404 and out["code"] == "not_found"
    # The score model PUT accepts a gzip body too.
    model = gzip.compress(json.dumps({"yellow_from": 35}).encode())
    status, _, out = call(f"{server}/api/score-model", "PUT", model,
                          {"Content-Type": "application/json", "Content-Encoding": "gzip", **auth})
    assert status == 200 and out["model"]["yellow_from"] == 35


def test_api_gateway_decompresses_requests_in_every_stage() -> None:
    """On AWS, API Gateway inflates gzip request bodies (request decompression is on whenever the RestApi has a
    MinimumCompressionSize, which chalice package sets from ``minimum_compression_size``), and JSON is no
    binary media type."""
    assert not {"application/json", "text/plain"} & set(app.api.binary_types)
    disk = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for stage in disk["stages"]:
        cfg = Config(chalice_stage=stage, config_from_disk=disk)
        assert cfg.minimum_compression_size == 1024, stage
    # Behind API Gateway the body arrives inflated while Content-Encoding still says gzip: both work.
    assert decode_body(b'{"batch": []}', "gzip") == {"batch": []}
    assert decode_body(gzip.compress(b'{"a": 1}'), "gzip") == {"a": 1}


# --- 2. no 5xx from client input -------------------------------------------------------------------

NOW = datetime.now(UTC).isoformat()
# (name, raw request body, expected field, expected limit or None)
BAD_BODIES: list[tuple[str, bytes, str, Any]] = [
    ("nested 100,000 deep (RecursionError)", b'{"batch": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "body",
     MAX_DEPTH),
    ("nested 40 deep", json.dumps({"batch": [track(1, properties={"a": json.loads("[" * 40 + "]" * 40)})]}).encode(),
     "batch[0].properties.a" + "[0]" * (MAX_DEPTH - 4), MAX_DEPTH),
    ("5,000-digit integer", b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"n": '
     + b"9" * 5000 + b"}}]}", "batch[0].properties.n", "finite numbers, integers of at most 38 digits"),
    ("39-digit integer", b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"n": '
     + b"1" * 39 + b"}}]}", "batch[0].properties.n", "finite numbers, integers of at most 38 digits"),
    ("NaN", b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"x": NaN}}]}',
     "batch[0].properties.x", "finite numbers, integers of at most 38 digits"),
    ("Infinity", b'{"type": "track", "userId": "u", "event": "e", "properties": {"x": -Infinity}}',
     "properties.x", "finite numbers, integers of at most 38 digits"),
    ("1e999", b'{"batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"x": 1e999}}]}',
     "batch[0].properties.x", "finite numbers, integers of at most 38 digits"),
    ("1e200 (beyond DynamoDB numbers)", b'{"batch": [{"type": "track", "userId": "u", "event": "e", '
     b'"properties": {"x": 1e200}}]}', "batch[0].properties.x", "1e-130 <= |x| <= 9.99e+125"),
    ("lone surrogate in userId", b'{"batch": [{"type": "track", "userId": "ab\\ud800", "event": "e"}]}',
     "batch[0].userId", "UTF-8"),
    ("lone surrogate in a property key", b'{"type": "track", "userId": "u", "event": "e", '
     b'"properties": {"\\udfff": 1}}', "properties", "UTF-8"),
    ("a list where context goes", json.dumps({"batch": [track(1, context=[1, 2])]}).encode(),
     "batch[0].context", "object"),
    ("a list where the envelope context goes", json.dumps({"batch": [track(1)], "context": []}).encode(),
     "context", None),
    ("a string where properties go (single call)", json.dumps({**track(1), "properties": "x"}).encode(),
     "properties", "object"),
    ("an object where groupId goes", json.dumps({"batch": [track(1, groupId={"id": 1})]}).encode(),
     "batch[0].groupId", None),
    ("an object where context.groupId goes", json.dumps({"batch": [track(1, context={"groupId": {"a": 1}})]})
     .encode(), "batch[0].context.groupId", f"string of 1..{MAX_ID_BYTES} bytes"),
    ("userId of 129 characters, 258 bytes", json.dumps({"batch": [track(1, userId="é" * 129)]}).encode(),
     "batch[0].userId", MAX_ID_BYTES),
    ("event name of 100 characters, 400 bytes", json.dumps({"batch": [track(1, event="😀" * 100)]}).encode(),
     "batch[0].event", MAX_ID_BYTES),
    ("context.groupId of 300 bytes", json.dumps({"batch": [track(1, context={"groupId": "g" * 300})]}).encode(),
     "batch[0].context.groupId", MAX_ID_BYTES),
    ("property key of 300 bytes", json.dumps({"batch": [track(1, properties={"k" * 300: 1})]}).encode(),
     "batch[0].properties", MAX_ID_BYTES),
    ("traits of 20 KB", json.dumps({"batch": [{"type": "identify", "userId": "u", "traits": {"bio": "t" * 20_000}}]})
     .encode(), "batch[0].traits", MAX_TRAITS_BYTES),
    ("51 traits in one identify", json.dumps({"batch": [{"type": "identify", "userId": "u",
                                                          "traits": {f"t{i:02d}": i for i in range(51)}}]}).encode(),
     "batch[0].traits", MAX_TRAITS),
    ("a trait name of 129 characters", json.dumps({"batch": [{"type": "group", "userId": "u", "groupId": "g",
                                                               "traits": {"n" * 129: 1}}]}).encode(),
     "batch[0].traits", MAX_TRAIT_KEY),
    ("a trait value of 300 characters", json.dumps({"batch": [{"type": "identify", "userId": "u",
                                                                "traits": {"bio": "b" * 300}}]}).encode(),
     "batch[0].traits.bio", MAX_TRAIT_VALUE),
    ("sentAt year 9999, timestamp year 1 (skew overflow)",
     json.dumps({"batch": [track(1, timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z")]}).encode(),
     "batch[0].timestamp", None),
    ("timestamp year 1", json.dumps({"batch": [track(1, timestamp="0001-01-01T00:00:00Z")]}).encode(),
     "batch[0].timestamp", "1970-01-01T00:00:00.000Z"),
    ("timestamp year 3000", json.dumps({"batch": [track(1, timestamp="3000-01-01T00:00:00Z", sentAt=NOW)]}).encode(),
     "batch[0].timestamp", "receivedAt + 24h"),
]


@pytest.mark.parametrize("name,body,field,limit", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_client_input_gets_a_4xx_naming_the_field_and_the_limit(server: str, tenant: dict[str, str], ddb: Any,
                                                                 prefix: str, name: str, body: bytes, field: str,
                                                                 limit: Any) -> None:
    path = "/v1/track" if body.startswith(b'{"type"') else "/v1/batch"
    status, _, out = call(server + path, "POST", body,
                          {"Content-Type": "application/json", "Authorization": basic(tenant["write_key"])})
    assert status == 400, out
    assert out["success"] is False and out["code"] and out["message"]
    assert out["field"] == field, out
    if limit is not None:
        assert out["limit"] == limit, out
    assert scan_chunks(ddb, prefix) == []


def test_query_parameters_and_forged_cursors_get_a_4xx(server: str, tenant: dict[str, str], prefix: str) -> None:
    auth = {"Authorization": f"Bearer {tenant['api_token']}"}
    t = tenant["tenant_id"]
    forged = [
        "not-base64!", "e30", encode_cursor([1, 2]), encode_cursor({"pk": {"S": "x"}}),
        encode_cursor({"pk": {"S": keys.account_pk(t, "a")}, "sk": {"S": "SUMMARY"}, "gpk": {"S": keys.accounts_gpk(t)},
                       "score_sk": {"N": "1"}}),
        encode_cursor({"pk": {"S": keys.account_pk(t, "a")}, "sk": {"S": "SUMMARY"}, "gpk": {"S": keys.accounts_gpk(t)},
                       "score_sk": {"S": "x" * 2000}}),
        encode_cursor({"pk": {"S": keys.account_pk(t, "a")}, "sk": {"S": "SUMMARY"}, "gpk": {"S": keys.accounts_gpk(t)},
                       "score_sk": {"S": "\ud800"}}),
        encode_cursor({"pk": {"S": keys.account_pk("other", "a")}, "sk": {"S": "SUMMARY"},
                       "gpk": {"S": keys.accounts_gpk(t)}, "score_sk": {"S": "1"}}),
        base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(), "A" * 5000,
    ]
    for cursor in forged:
        status, _, out = call(f"{server}/api/accounts?cursor={cursor}", headers=auth)
        assert status == 400 and out["field"] == "cursor", (cursor[:80], out)
    for q in ("limit=201", "limit=0", "limit=" + "9" * 5000, "limit=abc", "sort=x", "order=up", "band=blue"):
        status, _, out = call(f"{server}/api/accounts?{q}", headers=auth)
        assert status == 400 and out["field"] == q.split("=")[0] and "limit" in out, (q, out)


def test_users_page_of_200_and_forged_user_and_timeline_cursors(server: str, tenant: dict[str, str],
                                                                prefix: str) -> None:
    """``users?limit=101..200`` needs more than one BatchGetItem (100 keys each): it was a 503 retried forever."""
    body = {"batch": [{"type": "group", "userId": f"user-{i:03d}", "groupId": "big", "messageId": f"g{i}",
                       "traits": {"name": "Big Co"}} for i in range(150)]}
    project_requests(tenant["tenant_id"], prefix, [body])
    auth = {"Authorization": f"Bearer {tenant['api_token']}"}
    for limit in (101, 150, 200):
        status, _, out = call(f"{server}/api/accounts/big/users?limit={limit}", headers=auth)
        assert status == 200, out
        assert len(out["items"]) == min(limit, 150)
    pk = keys.account_pk(tenant["tenant_id"], "big")
    for cursor in (encode_cursor({"pk": {"S": pk}, "sk": {"S": "HEAD"}}),
                   encode_cursor({"pk": {"S": pk}, "sk": {"S": "USER#" + "x" * 1100}}),
                   encode_cursor({"pk": {"S": pk}, "sk": {"S": "USER#a"}, "x": {"S": "1"}}),
                   encode_cursor({"pk": {"S": pk}, "sk": {"N": "1"}})):
        status, _, out = call(f"{server}/api/accounts/big/users?cursor={cursor}", headers=auth)
        assert status == 400 and out["field"] == "cursor", out
    for cursor in (encode_cursor({"bucket": "2026-13-45", "skip": 0}), encode_cursor({"bucket": "x" * 2000, "skip": 0}),
                   encode_cursor({"bucket": "2026-01-01", "skip": -1}),
                   encode_cursor({"bucket": "2026-01-01", "skip": 10**30}),
                   encode_cursor({"bucket": "2026-01-01", "skip": True})):
        status, _, out = call(f"{server}/api/accounts/big/timeline?cursor={cursor}", headers=auth)
        assert status == 400 and out["field"] == "cursor", out


@pytest.mark.parametrize("model,field", [
    (b'{"factors": [{"name": "recency", "weight": 1e300}]}', "factors[0].weight"),
    (b'{"factors": [{"name": "recency", "weight": 1e999}]}', "factors[0].weight"),
    (b'{"cooldown_hours": 1000000000000000000000000000000}', "cooldown_hours"),
    (b'{"cooldown_hours": 1e20}', "cooldown_hours"),
    (b'{"alert_drop": NaN}', "alert_drop"),
    (b'{"key_features": ["' + b"f" * 300 + b'"]}', "key_features[0]"),
    (b'{"yellow_from": "x"}', "yellow_from"),
    (b'{"factors": "x"}', "factors"),
    (b'[1]', "body"),
])
def test_score_model_numbers_that_overflow_get_a_4xx(server: str, tenant: dict[str, str], model: bytes,
                                                    field: str) -> None:
    status, _, out = call(f"{server}/api/score-model", "PUT", model,
                          {"Content-Type": "application/json", "Authorization": f"Bearer {tenant['api_token']}"})
    assert status == 400, out
    assert out["field"] == field, out


# --- 3. stored whole or not at all; sizes checked on what is stored ---------------------------------


def test_a_request_whose_first_chunk_was_stored_before_is_stored_whole(prefix: str, tenant: dict[str, str],
                                                                       ddb: Any) -> None:
    """Request A's ids are exactly the first chunk of request B: B's other chunks must still be written."""
    blob = [base64.b64encode(os.urandom(22_000)).decode() for _ in range(16)]  # incompressible, < 32 KB each
    msgs = [track(i, properties={"blob": blob[i]}) for i in range(16)]
    ing = Ingestor(ddb, prefix)
    b = parse_request({"batch": msgs}, "batch")
    chunks = pack_chunks(tenant["tenant_id"], [{"messageId": m["messageId"], "b": m["properties"]["blob"]}
                                               for m in msgs], datetime.now(UTC))
    assert len(chunks) >= 2
    first_ids = [f"m-{i}" for i in range(int(chunks[0]["n"]["N"]))]
    a = parse_request({"batch": [m for m in msgs if m["messageId"] in first_ids]}, "batch")
    assert ing.ingest(tenant["tenant_id"], a).stored == len(first_ids)
    result = ing.ingest(tenant["tenant_id"], b)
    assert result.chunks >= 2
    assert result.stored == 16 - len(first_ids) and result.duplicates == len(first_ids)
    assert sorted(e["messageId"] for e in stored_events(ddb, prefix)) == sorted(m["messageId"] for m in msgs)
    # ...and a retry of B is a no-op.
    assert ing.ingest(tenant["tenant_id"], b).stored == 0
    assert len(stored_events(ddb, prefix)) == 16


def test_envelope_context_is_counted_in_the_stored_size(server: str, tenant: dict[str, str], ddb: Any,
                                                        prefix: str) -> None:
    """A 53 KB request whose envelope context (30 KB) is copied into 300 messages would store 9.6 MB."""
    ctx = {"library": {"name": "x"}, "pad": "c" * 30_000}
    body = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "e", "messageId": f"m{i}"}
                                 for i in range(300)], "context": ctx}).encode()
    assert 50_000 < len(body) < 60_000
    status, _, out = call(f"{server}/v1/batch", "POST", body,
                          {"Content-Type": "application/json", "Authorization": basic(tenant["write_key"])})
    assert status == 400 and out["field"] == "context" and out["limit"] == MAX_STORED_BYTES, out
    assert out["code"] == "request_too_large"
    # A merged message over the per-message limit names that message.
    body = json.dumps({"batch": [track(1, context={"pad": "m" * 20_000})], "context": {"pad2": "e" * 20_000}}).encode()
    status, _, out = call(f"{server}/v1/batch", "POST", body,
                          {"Content-Type": "application/json", "Authorization": basic(tenant["write_key"])})
    assert status == 400 and out["field"] == "batch[0]" and out["limit"] == MAX_MESSAGE_BYTES, out
    assert scan_chunks(ddb, prefix) == []
    # A small envelope context is merged and stored.
    body = json.dumps({"batch": [track(i) for i in range(3)], "context": {"library": {"name": "sdk"}}}).encode()
    status, _, out = call(f"{server}/v1/batch", "POST", body,
                          {"Content-Type": "application/json", "Authorization": basic(tenant["write_key"])})
    assert status == 200
    assert all(e["context"]["library"] == {"name": "sdk"} for e in stored_events(ddb, prefix))


# --- 5. per-tenant caps on distinct event names and property keys ------------------------------------


def test_per_tenant_caps_on_event_names_and_property_keys(prefix: str, ddb: Any) -> None:
    a = services.tenants().create("A")["tenant_id"]
    b = services.tenants().create("B")["tenant_id"]
    control = keys.control_table_name(prefix)
    ing = Ingestor(ddb, prefix, caps=CatalogCaps(ddb, control, max_event_names=3, max_property_keys=4))

    def send(tenant_id: str, events: list[str], props: list[str] | None = None) -> None:
        msgs = [{"type": "track", "userId": "u", "event": e, "properties": {p: 1 for p in props or []}}
                for e in events]
        ing.ingest(tenant_id, parse_request({"batch": msgs}, "batch"))

    send(a, ["one", "two"], ["p1", "p2"])
    send(a, ["one", "two", "three"], ["p1", "p2", "p3"])  # exactly at the name cap
    with pytest.raises(ApiError) as err:
        send(a, ["one", "four"])
    assert err.value.status == 400 and err.value.code == "too_many_event_names"
    assert err.value.body()["field"] == "batch[1].event" and err.value.body()["limit"] == 3
    with pytest.raises(ApiError) as err:
        send(a, ["one"], ["p1", "p4", "p5"])
    assert err.value.code == "too_many_property_keys" and err.value.body()["limit"] == 4
    send(a, ["one", "three"], ["p1", "p2", "p3"])  # known names still pass
    send(b, ["x", "y", "z"])  # another tenant has its own caps
    # A fresh process (empty cache) counts from the control table, not from memory.
    fresh = Ingestor(ddb, prefix, caps=CatalogCaps(ddb, control, max_event_names=3, max_property_keys=4))
    with pytest.raises(ApiError):
        fresh.ingest(a, parse_request({"batch": [{"type": "page", "userId": "u", "name": "Home"}]}, "batch"))
    fresh.ingest(a, parse_request({"batch": [{"type": "track", "userId": "u", "event": "two"}]}, "batch"))
    count = db.get_client().get_item(TableName=control, Key={"pk": {"S": keys.tenant_pk(a)},
                                                             "sk": {"S": "CATALOG#COUNT"}})["Item"]
    assert count["names"]["N"] == "3" and count["property_keys"]["N"] == "3"


def test_default_caps_are_documented() -> None:
    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    for value in (MAX_EVENT_NAMES, MAX_PROPERTY_KEYS, MAX_ID_BYTES, MAX_DEPTH, MAX_STORED_BYTES, MAX_TRAITS_BYTES,
                  MAX_TRAITS, MAX_TRAIT_KEY, MAX_TRAIT_VALUE):
        assert f"{value:,}" in text, value
