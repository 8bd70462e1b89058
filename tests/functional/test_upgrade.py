"""The runbook of docs/UPGRADING.md, exercised: view version 2 → 3 on a live stack under continuous ingest.

A running stack (HTTP API + local mappings + the projector, in this process) serves version 2 while clients
keep sending Segment batches and a reader keeps calling the API. ``streamfold replay view --version 3`` runs as
an operator runs it (a subprocess), is killed with ``kill -9`` in the middle of its fold, and is run again: it
resumes, rebuilds version 3's search index and catches up from the stream positions the projector recorded
meanwhile; version 2 serves throughout. Then compare, promote, retire and sweep version 2. Every acknowledged
event is counted exactly once in version 3, and the API never answered 5xx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from app import app
from chalicelib import db, keys, services, tables
from chalicelib.registry import ProjectionRegistry
from chalicelib.settings import get_settings
from chalicelib.versions import active_view_version, set_active_view_version
from streams import replay
from tests.helpers.api import api_get
from tests.helpers.streams import fast_options, kill_replay_midway, wait_until
from tooling import spread
from tooling.mappings import LocalMappings
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

pytestmark = pytest.mark.timeout(900)

ACCOUNTS = 120
SEED_TRACKS = 2400


@pytest.fixture
def stack_v2(ddb_endpoint: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A running stack serving view version 2 (as a stack deployed before version 3 existed does)."""
    monkeypatch.setenv("STREAMFOLD_DATA_DIR", str(tmp_path / "data"))
    p = f"u{uuid.uuid4().hex[:10]}-"
    use_endpoint(ddb_endpoint, p)
    client = db.get_client()
    tables.ensure_control_table(client, p)
    tables.ensure_event_tables(client, p, tables.utc_today())
    tables.ensure_view_table(client, p, 2)
    set_active_view_version(client, keys.control_table_name(p), 2)
    creds = services.tenants().create("Upgrade Co")
    services.tenants().put_settings(creds["tenant_id"], {"key_features": ["Report Built", "Dashboard Viewed"]})
    mappings = LocalMappings(SimpleNamespace(settings=get_settings()), fast_options()).start()
    srv = LocalHttpServer(app, port=0).start()
    try:
        yield {**creds, "url": srv.url, "prefix": p, "client": client}
    finally:
        srv.stop()
        mappings.stop()


class Traffic:
    """Clients sending tracks (100 per batch, no groupId: the membership pattern) until stopped; every
    acknowledged message is remembered with the account it counts for."""

    def __init__(self, url: str, write_key: str) -> None:
        self.url, self.write_key = url, write_key
        self.acked: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def send(self, batch: list[dict[str, Any]]) -> None:
        r = requests.post(f"{self.url}/v1/batch", json={"batch": batch}, auth=(self.write_key, ""), timeout=30)
        if r.status_code != 200:
            self.errors.append(f"{r.status_code} {r.text[:200]}")
            return
        for e in batch:
            if e["type"] == "track":
                self.acked[spread.account_id(int(e["userId"].rsplit("-", 1)[1]))] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            now = datetime.now(UTC)
            batch = spread.track_events(40, ACCOUNTS, now, spread_s=5, seed=self._n)
            for i, e in enumerate(batch):
                e["messageId"] = f"live-{self._n}-{i}"
                e["event"] = ("Report Built", "Dashboard Viewed", "Export Run")[i % 3]
            self._n += 1
            self.send(batch)
            time.sleep(0.5)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class Reader:
    """A customer-success reader calling the API throughout: every status and the version each answer came from."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.statuses: Counter[int] = Counter()
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for path in ("/api/accounts", f"/api/accounts/{spread.account_id(i % ACCOUNTS)}",
                         "/api/status"):
                r = api_get(self.url, self.token, path)
                self.statuses[r.status_code] += 1
                if path == "/api/status" and r.status_code == 200:
                    self.versions += [p["version"] for p in r.json()["projections"] if p["name"] == "view"]
            i += 1
            time.sleep(0.2)

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tooling.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ), check=check)


def _counted(url: str, token: str) -> dict[str, int]:
    """Usage counted per account over the last two days, as the API serves it."""
    out = {}
    for a in range(ACCOUNTS):
        r = api_get(url, token, f"/api/accounts/{spread.account_id(a)}/usage", days=3)
        assert r.status_code == 200, r.text
        out[spread.account_id(a)] = sum(r.json()["totals"])
    return out


def test_version_2_to_3_under_ingest_with_a_killed_replay(stack_v2: dict[str, Any]) -> None:
    s, client, prefix = stack_v2, stack_v2["client"], stack_v2["prefix"]
    traffic = Traffic(s["url"], s["write_key"])
    # Seed: every account's user joins it, then tracks (the history the replay folds).
    seed = spread.identity_events(ACCOUNTS, datetime.now(UTC) - timedelta(hours=2))
    seed += spread.track_events(SEED_TRACKS, ACCOUNTS, datetime.now(UTC) - timedelta(minutes=5), spread_s=3000)
    for e in seed[2 * ACCOUNTS:]:
        e["event"] = ("Report Built", "Dashboard Viewed", "Export Run")[hash(e["messageId"]) % 3]
    for i in range(0, len(seed), 100):
        traffic.send(seed[i:i + 100])
    assert not traffic.errors
    reader = Reader(s["url"], s["api_token"]).start()
    traffic.start()
    registry = ProjectionRegistry(client, prefix)
    job = replay.job_dir(prefix, 3)
    args = ["replay", "view", "--version", "3", "--partition-events", "20", "--partition-entities", "4",
            "--no-progress"]
    try:
        # 1. Build version 3, and kill -9 the build in the middle of its fold.
        killed_at = kill_replay_midway(args, job, 8, timeout=240)
        assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 2
        v3 = registry.get(3)
        assert v3 is not None and v3.state == "building" and v3.phase == "replaying"
        # Meanwhile the projector records the positions it handles for version 3's catch-up.
        wait_until(lambda: client.query(TableName=keys.view_table_name(prefix, 3), KeyConditionExpression="pk = :p",
                                        ExpressionAttributeValues={":p": {"S": "CATCHUP"}}, Limit=1)["Count"] > 0,
                   timeout=60)

        # 2. The same command again: it resumes, indexes, catches up, and leaves version 3 current.
        out = json.loads(_cli(*args).stdout)
        assert out["rebuild"]["resumed_partitions"] >= killed_at
        assert out["catch_up"]["batches"] > 0 and out["catch_up"]["events"] > 0
        assert out["search_index"]["accounts"] == ACCOUNTS
        v3 = registry.get(3)
        assert v3 is not None and v3.phase == "current" and v3.built_through
        assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 2
        time.sleep(3)  # the projector now writes version 3 beside version 2
        listed = {v["version"]: v for v in map(json.loads, _cli("projection", "list").stdout.splitlines())}
        assert listed[2]["state"] == "serving" and listed[3]["state"] == "building"
        assert listed[3]["phase"] == "current" and listed[3]["item_count"] > 0
        assert listed[2]["code_version"].startswith("v2:") and listed[3]["code_version"].startswith("v3:")
        # Version 2 serves: the account detail has no per-key-feature weekly active users yet.
        detail = api_get(s["url"], s["api_token"], f"/api/accounts/{spread.account_id(1)}").json()
        assert detail.get("key_features_wau") is None
    finally:
        traffic.stop()
    assert not traffic.errors, traffic.errors[:3]

    # 3. Traffic stopped: both versions settle to the same counts, each exactly the acknowledged events.
    expected = {spread.account_id(a): traffic.acked[spread.account_id(a)] for a in range(ACCOUNTS)}
    wait_until(lambda: _counted(s["url"], s["api_token"]) == expected, timeout=120, interval=2)
    compared = json.loads(_cli("replay", "view", "--version", "3", "--no-rebuild", "--compare", "--against", "2",
                               check=False).stdout)["compare"]
    assert compared["items_a"] > 0 and compared["items_b"] > 0

    # 4. Promote: every reader switches at once; version 2 stays current for a rollback until retired.
    promoted = _cli("replay", "view", "--version", "3", "--no-rebuild", "--promote", "--force")
    assert json.loads(promoted.stdout)["active_after"] == 3
    wait_until(lambda: reader.versions[-3:] == [3, 3, 3], timeout=30)
    assert _counted(s["url"], s["api_token"]) == expected
    # Version 3's schema change, served: per-key-feature weekly active users, and the score factor using them.
    detail = api_get(s["url"], s["api_token"], f"/api/accounts/{spread.account_id(1)}").json()
    assert set(detail["key_features_wau"]) == {"Report Built", "Dashboard Viewed"}
    assert all(0 <= n <= 1 for n in detail["key_features_wau"].values())  # one user per account
    score = api_get(s["url"], s["api_token"], f"/api/accounts/{spread.account_id(1)}/score").json()
    assert "key_feature_wau" in json.dumps(score)
    hits = api_get(s["url"], s["api_token"], "/api/search", q="Account 7").json()
    assert any(h["id"] == spread.account_id(7) for h in hits["items"])
    reader.stop()
    first_v3 = reader.versions.index(3)
    assert set(reader.versions[:first_v3]) == {2} and set(reader.versions[first_v3:]) == {3}
    assert not [c for c in reader.statuses if c >= 500], reader.statuses
    assert reader.statuses[200] > 10

    # 5. Retire version 2 (no grace in a test) and sweep: its table is gone, version 3 serves on.
    _cli("projection", "retire", "2", "--grace-hours", "0")
    assert json.loads(_cli("projection", "sweep").stdout)["dropped"] == [2]
    assert tables.describe(client, keys.view_table_name(prefix, 2)) is None
    assert _counted(s["url"], s["api_token"]) == expected
