"""Property tests of the HTTP edge on DynamoDB Local.

* What ingest accepts, the projector can fold: any request answered 200 is stored in the current chunk and event
  format (``projections.formats``), read back (``chalicelib.chunks`` + ``Event.from_wire``) and folded by the real
  stream handler and view writer without a poison record.
* Nothing a client sends gets a 5xx: hypothesis on the ingest endpoints (over HTTP), schemathesis on
  ``/api/openapi.json``.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import db, keys
from chalicelib.errors import ApiError
from chalicelib.ingest import Ingestor, decode_body, parse_request
from projections.formats import CHUNK_FORMAT, EVENT_FORMAT
from tests.helpers.fold import fold_items, project_requests

pytestmark = pytest.mark.timeout(300)

NOW = datetime.now(UTC)
WEIRD_NUMBERS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**38, 10**38 - 1, -(10**39), 10**400,
                                 1e200, 1e-200, 1e125, 5e-324, 0.0, -0.0, 2**63, 2**64 + 1])
WEIRD_TEXT = st.sampled_from(["", "\ud800", "a\udfff", "é" * 129, "😀" * 64, "😀" * 65, "x" * 256, "x" * 257,
                              "\x00", "NaN", "#", "A#B", "USER#x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    WEIRD_NUMBERS, st.text(max_size=20), WEIRD_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.one_of(st.text(max_size=8), WEIRD_TEXT),
                                                                     inner, max_size=4)), max_leaves=12)
IDS = st.one_of(st.none(), st.text(min_size=1, max_size=12), WEIRD_TEXT, st.integers(), WEIRD_NUMBERS,
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.lists(st.integers(), max_size=2))
TIMES = st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                                          timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                  st.datetimes(min_value=NOW.replace(tzinfo=None) - timedelta(days=40),
                               max_value=NOW.replace(tzinfo=None) + timedelta(hours=2),
                               timezones=st.just(UTC)).map(lambda d: d.isoformat()),
                  st.sampled_from(["", "yesterday", "2026-02-30T00:00:00Z", "1e20"]), st.integers(), WEIRD_NUMBERS)


SAFE_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                                   st.floats(-1e100, 1e100).filter(lambda x: x == 0 or abs(x) > 1e-100),
                                   st.text(max_size=20)),
                         lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                         max_leaves=12)
RECENT = st.datetimes(min_value=NOW.replace(tzinfo=None) - timedelta(days=40),
                      max_value=NOW.replace(tzinfo=None) + timedelta(hours=2),
                      timezones=st.just(UTC)).map(lambda d: d.isoformat())


@st.composite
def plausible_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Messages a real SDK could send (unicode ids up to the byte limit, any JSON properties)."""
    kind = draw(st.sampled_from(["track", "identify", "group", "page", "screen", "alias"]))
    ident = st.text(alphabet="abc-é😀#", min_size=1, max_size=60)
    msg: dict[str, Any] = {"type": kind, "userId": draw(ident), "event": draw(ident), "name": draw(ident),
                           "groupId": draw(ident), "previousId": draw(ident),
                           "properties": draw(st.dictionaries(st.text(max_size=8), SAFE_JSON, max_size=5)),
                           "traits": draw(st.dictionaries(st.text(max_size=8), SAFE_JSON, max_size=5))}
    if draw(st.booleans()):
        msg["context"] = {"groupId": draw(st.one_of(ident, st.integers(0, 10**30)))}
    if draw(st.booleans()):
        msg["timestamp"] = draw(RECENT)
    if draw(st.integers(0, 5)) == 0:
        msg["properties"]["big"] = "p" * draw(st.integers(1, 30_000))
    return msg


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 2)) == 0:
        return draw(plausible_messages())
    kind = draw(st.sampled_from(["track", "identify", "group", "page", "screen", "alias", "other"]))
    msg: dict[str, Any] = {"type": kind}
    # Mostly plausible values, sometimes anything: most examples must get through validation to be folded.
    plausible = st.text(alphabet="abcdefgh-é😀", min_size=1, max_size=10)
    for field in ("userId", "anonymousId", "groupId", "previousId", "messageId", "event", "name"):
        if draw(st.integers(0, 3)) == 0:
            msg[field] = draw(IDS)
        elif field in ("userId", "event") or (field == "groupId" and kind == "group") or \
                (field == "previousId" and kind == "alias"):
            msg[field] = draw(plausible)
    for field in ("properties", "traits", "context"):
        if draw(st.booleans()):
            msg[field] = draw(st.one_of(JSON, st.dictionaries(st.text(max_size=6), JSON, max_size=5)))
    if draw(st.booleans()):
        msg["context"] = {"groupId": draw(IDS)}
    for field in ("timestamp", "sentAt", "originalTimestamp"):
        if draw(st.integers(0, 2)) == 0:
            msg[field] = draw(TIMES)
    if draw(st.integers(0, 5)) == 0:
        msg["properties"] = {"big": "p" * draw(st.integers(1, 40_000))}
    return msg


REQUESTS = st.one_of(
    st.fixed_dictionaries({"batch": st.lists(plausible_messages(), min_size=1, max_size=5)},
                          optional={"context": st.dictionaries(st.text(max_size=8), SAFE_JSON, max_size=3),
                                    "sentAt": RECENT}),
    st.fixed_dictionaries({"batch": st.lists(messages(), min_size=1, max_size=5)},
                          optional={"context": JSON, "sentAt": TIMES, "integrations": JSON}))


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN/Infinity tokens and lone surrogates (as \\ud800)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(body=REQUESTS)
def test_what_ingest_accepts_the_projector_folds(prefix: str, tenant: dict[str, str], body: dict[str, Any]) -> None:
    """Any accepted request is stored in the current format (the chunk's ``fmt``, every event's ``"v"``), decodes
    with ``Event.from_wire`` after that write/read round trip and folds through ``handle_batch`` with a real
    ``ViewWriter``, with no poison record; anything else is an ``ApiError`` 4xx naming a field."""
    client = db.get_client()
    ing = Ingestor(client, prefix)
    table = keys.events_table_name(prefix, datetime.now(UTC))
    before = {i["pk"]["S"] for i in db.items(client, "scan", TableName=table, ConsistentRead=True)}
    try:
        result = ing.ingest(tenant["tenant_id"], parse_request(decode_body(encode(body), None), "batch"))
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.body()["field"], exc
        OUTCOMES["rejected"] += 1
        return
    OUTCOMES["accepted"] += 1
    new = [i for i in db.items(client, "scan", TableName=table, ConsistentRead=True) if i["pk"]["S"] not in before]
    assert sum(int(i["n"]["N"]) for i in new) == result.stored
    for item in new:  # as stored, before any upcast: the current format, so a later release can tell
        assert item["fmt"] == {"N": str(CHUNK_FORMAT)}
        assert {e["v"] for e in json.loads(zlib.decompress(item["body"]["B"]))} == {EVENT_FORMAT}
    if not new:
        return
    response, report, decoded = fold_items(prefix, new)
    assert response.get("batchItemFailures", []) == [], response
    assert decoded == result.stored
    OUTCOMES["events folded"] += decoded


OUTCOMES: Counter[str] = Counter()


def test_fold_property_outcomes_are_reported() -> None:
    """Runs after the property test in file order: it must have folded real events, not only rejected input."""
    if not OUTCOMES:
        pytest.skip("run together with test_what_ingest_accepts_the_projector_folds")
    print("ingest/fold outcomes:", dict(OUTCOMES))
    assert OUTCOMES["accepted"] >= 10 and OUTCOMES["rejected"] >= 10 and OUTCOMES["events folded"] >= 10


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=st.one_of(REQUESTS, messages(), JSON), path=st.sampled_from(
    ["batch", "track", "identify", "group", "page", "screen", "alias"]), gz=st.booleans())
def test_no_ingest_input_gets_a_5xx(server: str, tenant: dict[str, str], body: Any, path: str, gz: bool) -> None:
    raw = encode(body)
    headers = {"Content-Type": "application/json"}
    if gz:
        raw, headers["Content-Encoding"] = gzip.compress(raw), "gzip"
    r = requests.post(f"{server}/v1/{path}", data=raw, headers=headers, auth=(tenant["write_key"], ""), timeout=30)
    assert r.status_code in (200, 400), r.text
    out = r.json()
    if r.status_code == 400:
        assert out["success"] is False and out["field"], out


def test_schemathesis_on_the_private_api(server: str, tenant: dict[str, str], prefix: str) -> None:
    """Every operation of ``/api/openapi.json``, positive and negative cases: never a 5xx, always JSON."""
    project_requests(tenant["tenant_id"], prefix, [{"batch": [
        {"type": "group", "userId": f"u{i}", "groupId": f"acct-{i % 3}", "traits": {"name": f"Acct {i % 3}"}}
        for i in range(9)] + [{"type": "track", "userId": f"u{i}", "event": "Report Created",
                               "context": {"groupId": f"acct-{i % 3}"}} for i in range(9)]}])
    schema = schemathesis.openapi.from_url(f"{server}/api/openapi.json")
    auth = {"Authorization": f"Bearer {tenant['api_token']}"}
    calls: Counter[int] = Counter()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=server, headers=auth)
            calls[response.status_code] += 1
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text)
            if case.path.startswith("/api/"):  # the dashboard's routes serve HTML
                assert response.headers.get("content-type") == ["application/json"], \
                    (case.path, response.status_code, response.text[:200])
                response.json()

        check()
    elapsed = time.monotonic() - started
    print(f"schemathesis: {sum(calls.values())} calls in {elapsed:.1f}s, statuses {dict(calls)}")
    assert sum(calls.values()) >= 100 and elapsed < 60
