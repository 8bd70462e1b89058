"""Abuse limits and security of the HTTP API: rate limit per write key, CORS, per-tenant status,
revocation within a stated bound, and no secret in any log of a full run."""

from __future__ import annotations

import base64
import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from app import app
from chalicelib import db, services
from chalicelib.settings import get_settings
from chalicelib.tenants import TenantStore
from streams.local_backend import LocalMappingBackend
from streams.mapping import family_source_arn
from streams.store import ControlStore
from tests.helpers.streams import fast_options, wait_until
from tooling import cli
from tooling.mappings import DEFAULT_PROJECTOR_MAPPING, LocalMappings
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

pytestmark = pytest.mark.timeout(120)

JSON = {"Accept": "application/json", "Content-Type": "application/json"}


def _basic(key: str) -> dict[str, str]:
    return {**JSON, "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Accept": "application/json", "Authorization": f"Bearer {token}"}


def _track(account: str = "acme") -> dict[str, Any]:
    return {"batch": [{"type": "track", "event": "Opened", "userId": "u1", "messageId": uuid.uuid4().hex,
                       "context": {"groupId": account}}]}


def test_rate_limit_per_write_key_answers_429_with_retry_after(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFOLD_INGEST_RATE", "1")
    monkeypatch.setenv("STREAMFOLD_INGEST_BURST", "5")
    use_endpoint(None)
    a, b = services.tenants().create("A"), services.tenants().create("B")
    srv = LocalHttpServer(app, port=0).start()
    try:
        statuses = [requests.post(f"{srv.url}/v1/batch", json=_track(), headers=_basic(a["write_key"]))
                    for _ in range(8)]
        assert [r.status_code for r in statuses[:5]] == [200] * 5
        limited = [r for r in statuses[5:] if r.status_code == 429]
        assert limited, [r.status_code for r in statuses]
        first = limited[0]
        assert int(first.headers["Retry-After"]) >= 1
        body = first.json()
        assert body["code"] == "rate_limited" and body["field"] == "Authorization"
        assert body["limit"] == "1 requests/s per write key, bursts of 5"
        # Another key is not affected ...
        assert requests.post(f"{srv.url}/v1/batch", json=_track(), headers=_basic(b["write_key"])).status_code == 200
        # ... and the limited key may send again once Retry-After has passed.
        time.sleep(int(first.headers["Retry-After"]))
        assert requests.post(f"{srv.url}/v1/batch", json=_track(), headers=_basic(a["write_key"])).status_code == 200
    finally:
        srv.stop()


def test_cors_on_the_private_api_names_only_the_dashboard_origin(server: str, tenant: dict[str, str]) -> None:
    origin = get_settings().dashboard_origin
    pre = requests.options(f"{server}/api/accounts", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.headers.get("Access-Control-Allow-Origin") == origin
    got = requests.get(f"{server}/api/accounts", headers={**_bearer(tenant["api_token"]),
                                                          "Origin": "https://evil.example"})
    assert got.status_code == 200
    assert got.headers.get("Access-Control-Allow-Origin") == origin != "*"
    # The public ingest API stays open to every origin (Segment's browser SDK posts from customer sites).
    ing = requests.post(f"{server}/v1/batch", json=_track(), headers={**_basic(tenant["write_key"]),
                                                                       "Origin": "https://shop.example"})
    assert ing.status_code == 200 and ing.headers.get("Access-Control-Allow-Origin") == "*"


def _dead_letter_for(store: ControlStore, mapping_uuid: str, tenant_id: str) -> None:
    record = {"eventID": "1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
              "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:dynamodb:us-east-1:0:table/x/stream/y",
              "dynamodb": {"SequenceNumber": "000000000000000000001", "SizeBytes": 10, "StreamViewType": "NEW_IMAGE",
                           "ApproximateCreationDateTime": time.time(), "Keys": {"pk": {"S": f"{tenant_id}#d"}},
                           "NewImage": {"pk": {"S": f"{tenant_id}#d"}, "tenant": {"S": tenant_id}}}}
    store.put_dead_letter(mapping_uuid, {  # type: ignore[typeddict-item]
        "requestContext": {"requestId": "r", "functionArn": "projector:blue", "condition": "RetryAttemptsExhausted",
                           "approximateInvokeCount": 4},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled",
                            "error": "boom"},
        "version": "1.0", "timestamp": "2026-01-01T00:00:00Z",
        "DDBStreamBatchInfo": {"shardId": "s", "startSequenceNumber": "000000000000000000001",
                               "endSequenceNumber": "000000000000000000001", "approximateArrivalOfFirstRecord": "",
                               "approximateArrivalOfLastRecord": "", "batchSize": 1, "streamArn": "arn"},
        "Records": [record]})


def test_status_shows_a_tenant_only_its_own_figures(prefix: str, server: str) -> None:
    a, b = services.tenants().create("A"), services.tenants().create("B")
    store = ControlStore(db.get_client(), get_settings().control_table)
    backend = LocalMappingBackend(store, db.get_client(), db.get_streams_client())
    m = backend.ensure(event_source_arn=family_source_arn(prefix), **DEFAULT_PROJECTOR_MAPPING)
    _dead_letter_for(store, m.uuid, a["tenant_id"])
    _dead_letter_for(store, m.uuid, a["tenant_id"])
    seen_a = requests.get(f"{server}/api/status", headers=_bearer(a["api_token"])).json()
    seen_b = requests.get(f"{server}/api/status", headers=_bearer(b["api_token"])).json()
    assert [x["dead_letters"] for x in seen_a["mappings"]] == [2]
    assert [x["dead_letters"] for x in seen_b["mappings"]] == [0]
    assert {"lag_records", "iterator_age_ms", "state"} <= set(seen_b["mappings"][0])
    raw = json.dumps(seen_b)
    assert a["tenant_id"] not in raw and "runtime-" not in raw and "SHARD" not in raw


def test_revoked_secrets_stop_working_within_the_stated_bound(prefix: str, server: str, tenant: dict[str, str],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    other_process = TenantStore(db.get_api_client(), get_settings().control_table)  # a warm cache elsewhere
    assert other_process.resolve(tenant["write_key"], "write") == tenant["tenant_id"]
    assert requests.post(f"{server}/v1/batch", json=_track(), headers=_basic(tenant["write_key"])).status_code == 200
    assert requests.get(f"{server}/api/accounts", headers=_bearer(tenant["api_token"])).status_code == 200

    assert cli.main(["tenant", "revoke", tenant["write_key"]]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"tenant_id": tenant["tenant_id"], "kind": "write", "revoked": True, "effective_within_s": 5.0}
    revoked_at = time.monotonic()
    # This API process forgets it at once ...
    r = requests.post(f"{server}/v1/batch", json=_track(), headers=_basic(tenant["write_key"]))
    assert r.status_code == 401
    # ... another process within TenantStore.RESOLVE_TTL.
    wait_until(lambda: other_process.resolve(tenant["write_key"], "write") is None, timeout=10, interval=0.1)
    assert time.monotonic() - revoked_at <= TenantStore.RESOLVE_TTL + 0.5
    # The API token is untouched until it is revoked too.
    assert requests.get(f"{server}/api/accounts", headers=_bearer(tenant["api_token"])).status_code == 200
    assert cli.main(["tenant", "revoke", tenant["api_token"]]) == 0
    assert requests.get(f"{server}/api/accounts", headers=_bearer(tenant["api_token"])).status_code == 401
    assert cli.main(["tenant", "revoke", tenant["api_token"]]) == 2  # already revoked: says so


def test_a_full_run_never_logs_a_secret(prefix: str, server: str, capfd: pytest.CaptureFixture[str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    creds = services.tenants().create("Secretive Co")
    wk, tok = creds["write_key"], creds["api_token"]
    mappings = LocalMappings(SimpleNamespace(settings=get_settings()), fast_options()).start()
    try:
        url = server
        assert requests.post(f"{url}/v1/group", json={"groupId": "acme", "userId": "u1", "traits": {"name": "Acme"}},
                             headers=_basic(wk)).status_code == 200
        assert requests.post(f"{url}/v1/batch", json=_track(), headers=_basic(wk)).status_code == 200
        body_key = {**_track(), "writeKey": wk}
        assert requests.post(f"{url}/v1/batch", json=body_key, headers=JSON).status_code == 200
        # Errors that carry the secret somewhere in the request:
        requests.post(f"{url}/v1/batch", json={"writeKey": wk, "batch": "not a list"}, headers=JSON)
        requests.post(f"{url}/v1/batch", json=_track(), headers=_basic(wk[:-2] + "xx"))
        requests.post(f"{url}/v1/track", data=b"{not json", headers=_basic(wk))
        requests.get(f"{url}/api/accounts", headers=_bearer(tok[:-2] + "xx"))
        requests.put(f"{url}/api/score-model", json={"cooldown_hours": -1}, headers={**_bearer(tok), **JSON})
        requests.get(f"{url}/api/accounts/acme", headers=_bearer(tok))
        requests.get(f"{url}/api/status", headers=_bearer(tok))
        wait_until(lambda: requests.get(f"{url}/api/accounts/acme", headers=_bearer(tok)).status_code == 200,
                   timeout=30, message="projected")
    finally:
        mappings.stop()
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert "batch projected" in logs and len(logs) > 1000  # the logs were captured at all
    basic = base64.b64encode(f"{wk}:".encode()).decode()
    for secret in (wk, tok, basic, wk[3:], tok[3:]):
        assert secret not in logs, "a secret reached the logs"
