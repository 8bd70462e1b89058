"""DynamoDB Local frozen (SIGSTOP) for 20 s under traffic: quick 503s, then the views catch up by themselves.

A DynamoDB Local of its own (the session one is shared), the real Chalice app on a loopback port, the
local Event Source Mapping runtime, and a sender posting batches throughout.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app import app
from chalicelib import db, services, tables
from chalicelib.settings import get_settings
from tooling.dynamodb_local import DynamoDBLocal
from tooling.mappings import LocalMappings
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

pytestmark = pytest.mark.timeout(240)

FREEZE_S = 20.0
ACCOUNT = "acme-freeze"


@pytest.fixture
def own_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with DynamoDBLocal(in_memory=True) as ddb:
        monkeypatch.setenv("STREAMFOLD_DYNAMODB_ENDPOINT", ddb.endpoint)
        monkeypatch.setenv("STREAMFOLD_TABLE_PREFIX", "frz-")
        monkeypatch.setenv("STREAMFOLD_DATA_DIR", str(tmp_path / "data"))
        use_endpoint(None)
        client = db.get_client()
        tables.ensure_control_table(client, "frz-")
        tables.ensure_event_tables(client, "frz-", tables.utc_today())
        tables.ensure_view_table(client, "frz-", 1)
        creds = services.tenants().create("Freeze Co")
        mappings = LocalMappings(SimpleNamespace(settings=get_settings())).start()
        srv = LocalHttpServer(app, port=0).start()
        try:
            yield {**creds, "url": srv.url, "ddb": ddb}
        finally:
            srv.stop()
            mappings.stop()


def _call(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json", "Accept": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def test_frozen_dynamodb_gives_quick_503_and_views_catch_up(own_stack: dict[str, Any], output_dir: Path) -> None:
    url, ddb = own_stack["url"], own_stack["ddb"]
    auth = {"Authorization": "Basic " + b64encode(f"{own_stack['write_key']}:".encode()).decode()}
    bearer = {"Authorization": f"Bearer {own_stack['api_token']}"}
    assert _call(f"{url}/v1/group", {"groupId": ACCOUNT, "userId": "u0"}, auth)[0] == 200
    results: list[dict[str, Any]] = []
    acked = {"n": 0}
    stop = threading.Event()

    def send() -> None:
        batch: list[dict[str, Any]] = []
        while not stop.is_set() or batch:  # a batch in flight at the stop is still retried to a 200
            # Like a Segment SDK: a batch answered 503 is retried as it is (same message ids) until it gets a
            # 200, since a 503 may come after the write landed; the retry is then deduplicated.
            if not batch:
                batch = [{"type": "track", "event": "Freeze Test", "userId": "u1", "messageId": uuid.uuid4().hex,
                          "context": {"groupId": ACCOUNT}} for _ in range(5)]
            t0 = time.monotonic()
            status, headers, _ = _call(f"{url}/v1/batch", {"batch": batch}, auth)
            results.append({"at": t0, "status": status, "latency": time.monotonic() - t0,
                            "retry_after": headers.get("Retry-After")})
            if status == 200:
                acked["n"] += len(batch)
                batch = []
            else:
                time.sleep(0.2)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(2.0)
    pid = ddb.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        time.sleep(FREEZE_S)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    time.sleep(3.0)
    stop.set()
    sender.join(30)

    during = [r for r in results if frozen_at <= r["at"] < resumed_at]
    unavailable = [r for r in during if r["status"] == 503]
    assert unavailable, "no request was answered while DynamoDB was frozen"
    assert all(r["status"] in (200, 503) for r in results), {r["status"] for r in results}
    assert all(r["retry_after"] for r in unavailable)
    slowest = max(r["latency"] for r in during)
    assert slowest < 8.0, f"a request was held {slowest:.1f}s while DynamoDB was frozen"
    recovered = [r for r in results if r["at"] >= resumed_at and r["status"] == 200]
    assert recovered, "ingest did not answer 200 again after DynamoDB came back"

    counted = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _, body = _call(f"{url}/api/accounts/{ACCOUNT}/usage?days=2", headers=bearer)
        counted = sum(body["totals"]) if status == 200 else 0
        if counted >= acked["n"]:
            break
        time.sleep(0.5)
    caught_up = time.monotonic() - resumed_at
    figures = {"freeze_s": FREEZE_S, "requests": len(results), "during_freeze": len(during),
               "503_during_freeze": len(unavailable), "slowest_during_freeze_s": round(slowest, 2),
               "median_503_latency_s": round(sorted(r["latency"] for r in unavailable)[len(unavailable) // 2], 2),
               "events_acked": acked["n"], "events_counted": counted,
               "catch_up_after_resume_s": round(caught_up, 1),
               "first_200_after_resume_s": round(min(r["at"] + r["latency"] for r in recovered) - resumed_at, 2)}
    (output_dir / "freeze.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert counted == acked["n"], figures
