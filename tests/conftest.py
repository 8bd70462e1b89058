"""Shared fixtures: one real DynamoDB Local per test session, a fresh table prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "streamfold-test")
os.environ.setdefault("POWERTOOLS_DEV", "false")
# The live projector's delta pages settle after every batch here, so tests written against settled items see
# them at once; the deferred path itself (pending pages, reads merging them) has its own tests with the
# production settings (tests/functional/test_spread_pages.py).
os.environ.setdefault("STREAMFOLD_SETTLE_SECONDS", "0")
os.environ.setdefault("STREAMFOLD_SETTLE_MIN_AGE_SECONDS", "0")
os.environ.setdefault("STREAMFOLD_SETTLE_INLINE", "64")

import time
from types import SimpleNamespace

from app import app
from chalicelib import db, services, tables
from chalicelib.settings import get_settings
from chalicelib.versions import VIEW_VERSION
from streams import handler
from tests.helpers.streams import fast_options
from tooling import demo
from tooling.dynamodb_local import DynamoDBLocal
from tooling.mappings import LocalMappings
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

OUTPUT_DIR = Path(__file__).resolve().parent.parent / "test-output"


@pytest.fixture(scope="session")
def ddb_endpoint() -> Iterator[str]:
    """A DynamoDB Local in memory on a free port (or ``STREAMFOLD_TEST_DYNAMODB_ENDPOINT``)."""
    external = os.environ.get("STREAMFOLD_TEST_DYNAMODB_ENDPOINT")
    if external:
        yield external
        return
    with DynamoDBLocal(in_memory=True) as ddb:
        yield ddb.endpoint


@pytest.fixture
def prefix(ddb_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh table prefix (isolated tables) with the control and today's event tables created."""
    p = f"t{uuid.uuid4().hex[:10]}-"
    monkeypatch.setenv("STREAMFOLD_DATA_DIR", str(tmp_path / "data"))
    use_endpoint(ddb_endpoint, p)
    client = db.get_client()
    tables.ensure_control_table(client, p)
    tables.ensure_event_tables(client, p, tables.utc_today())
    tables.ensure_view_table(client, p, VIEW_VERSION)  # a new stack starts at this code's view version
    return p


@pytest.fixture
def ddb(prefix: str) -> Any:
    """The low-level DynamoDB client for the test's endpoint."""
    return db.get_client()


@pytest.fixture
def tenant(prefix: str) -> dict[str, str]:
    return services.tenants().create("Test Co")


@pytest.fixture
def server(prefix: str) -> Iterator[str]:
    """The Chalice app served on a free loopback port."""

    srv = LocalHttpServer(app, port=0).start()
    try:
        yield srv.url
    finally:
        srv.stop()


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    d = OUTPUT_DIR / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


def settings_prefix() -> str:
    return get_settings().table_prefix


def _wait_projected(tenant_id: str, expect_accounts: int, timeout: float = 180.0) -> None:
    """Until every account has a summary and the projector has stopped writing."""

    q = services.query()
    deadline = time.monotonic() + timeout
    stable, last = 0, None
    while time.monotonic() < deadline:
        ids = q.account_ids(tenant_id)
        writes = handler.get_writer().store.stats.writes
        if len(ids) >= expect_accounts and writes == last:
            stable += 1
            if stable >= 3:
                return
        else:
            stable = 0
        last = writes
        time.sleep(1.0)
    raise TimeoutError(f"demo data not projected within {timeout}s")


@contextmanager
def _live_stack(ddb_endpoint: str, tmp_path_factory: pytest.TempPathFactory, name: str,
                tenant: str) -> Iterator[dict[str, Any]]:
    """A running stack on its own table prefix (HTTP server + local mappings) and a tenant of it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("STREAMFOLD_DATA_DIR", str(tmp_path_factory.mktemp(f"{name}-data")))
    p = f"{name[0]}{uuid.uuid4().hex[:10]}-"
    use_endpoint(ddb_endpoint, p)
    client = db.get_client()
    tables.ensure_control_table(client, p)
    tables.ensure_event_tables(client, p, tables.utc_today())
    tables.ensure_view_table(client, p, VIEW_VERSION)  # a new stack starts at this code's view version
    creds = services.tenants().create(tenant)
    mappings = LocalMappings(SimpleNamespace(settings=get_settings()), fast_options()).start()
    srv = LocalHttpServer(app, port=0).start()
    try:
        yield {**creds, "url": srv.url, "prefix": p}
    finally:
        srv.stop()
        mappings.stop()
        mp.undo()


@pytest.fixture(scope="module")
def demo_stack(ddb_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running stack (HTTP server + local mappings) with a demo tenant's history projected.

    Module-scoped and on its own table prefix; tests using it must not use ``prefix``.
    """
    with _live_stack(ddb_endpoint, tmp_path_factory, "demo", "Acme Analytics (demo)") as stack:
        services.tenants().put_settings(stack["tenant_id"], {"key_features": demo.KEY_FEATURES})
        accounts = 40
        demo.send(stack["url"], stack["write_key"], accounts=accounts, days=30)
        _wait_projected(stack["tenant_id"], accounts)
        yield {**stack, "accounts": accounts}


@pytest.fixture(scope="module")
def live_stack(ddb_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running stack (HTTP server + local mappings) with no data; tests create their own tenants.

    Module-scoped and on its own table prefix; tests using it must not use ``prefix``.
    """
    with _live_stack(ddb_endpoint, tmp_path_factory, "live", "Live Co") as stack:
        yield stack
