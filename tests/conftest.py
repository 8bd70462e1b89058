"""Shared fixtures: one real DynamoDB Local per test session, a fresh table prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "streamfold-test")
os.environ.setdefault("POWERTOOLS_DEV", "false")

from chalicelib import db, services, tables  # noqa: E402
from chalicelib.dynamodb_local import DynamoDBLocal  # noqa: E402
from chalicelib.settings import get_settings  # noqa: E402
from chalicelib.stack import use_endpoint  # noqa: E402

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
    tables.ensure_view_table(client, p, 1)
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
    from app import app
    from chalicelib.local_server import LocalHttpServer

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
