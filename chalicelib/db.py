"""DynamoDB clients, built lazily and once, so importing the app does no I/O."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import get_settings

__all__ = ["API_TIMEOUTS", "MAX_BATCH_GET", "batch_get", "client_kwargs", "get_api_client", "get_client",
           "get_streams_client", "items", "reset_clients", "table_names"]

#: The HTTP API's client (ingest, query, tenants): it must answer — 503 with ``Retry-After`` — within a few
#: seconds when DynamoDB hangs, never hold a request for minutes. Worst case ≈ attempts × (connect or read
#: timeout) + backoff ≈ 6 s. DynamoDB's own p99 is tens of milliseconds, DynamoDB Local's hundreds.
API_TIMEOUTS = {"connect_timeout": 1.0, "read_timeout": 2.5, "total_max_attempts": 2}

#: Stream side, CLI and tooling: patient (long batches, table creation) but still bounded, so a frozen
#: endpoint turns into an error the poller backs off from rather than a thread stuck forever.
BACKGROUND_TIMEOUTS = {"connect_timeout": 5.0, "read_timeout": 30.0, "total_max_attempts": 8}

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def client_kwargs(timeouts: dict[str, float] | None = None) -> dict[str, Any]:
    """Keyword arguments for boto3 clients talking to the configured DynamoDB endpoint."""
    s = get_settings()
    t = timeouts or BACKGROUND_TIMEOUTS
    kwargs: dict[str, Any] = {
        "region_name": s.region,
        "config": Config(retries={"total_max_attempts": int(t["total_max_attempts"]), "mode": "standard"},
                         connect_timeout=t["connect_timeout"], read_timeout=t["read_timeout"],
                         max_pool_connections=32),
    }
    if s.dynamodb_endpoint:
        kwargs["endpoint_url"] = s.dynamodb_endpoint
        # DynamoDB Local accepts any credentials; do not require a real profile locally.
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs["aws_access_key_id"] = "local"
            kwargs["aws_secret_access_key"] = "local"
    return kwargs


def _get(name: str, role: str = "background") -> Any:
    with _lock:
        key = f"{name}:{role}"
        if key not in _clients:
            timeouts = API_TIMEOUTS if role == "api" else BACKGROUND_TIMEOUTS
            _clients[key] = boto3.session.Session().client(name, **client_kwargs(timeouts))
        return _clients[key]


def get_client() -> Any:
    """The low-level ``dynamodb`` client (stream side, CLI, tooling: :data:`BACKGROUND_TIMEOUTS`)."""
    return _get("dynamodb")


def get_api_client() -> Any:
    """The ``dynamodb`` client of the HTTP API: short timeouts, one retry (:data:`API_TIMEOUTS`)."""
    return _get("dynamodb", "api")


def get_streams_client() -> Any:
    """The ``dynamodbstreams`` client."""
    return _get("dynamodbstreams")


def reset_clients() -> None:
    """Drop cached clients (after the endpoint changes)."""
    with _lock:
        _clients.clear()


def items(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a ``query`` or ``scan``, across pages (boto3's paginator)."""
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get("Items", [])


def table_names(client: Any) -> Iterator[str]:
    """Every table name of the endpoint, across pages (boto3's paginator)."""
    for page in client.get_paginator("list_tables").paginate():
        yield from page.get("TableNames", [])


MAX_BATCH_GET = 100  # DynamoDB's limit of keys per BatchGetItem


def batch_get(client: Any, table: str, keys: Sequence[dict[str, Any]], *, projection: str | None = None,
              consistent: bool = False, on_response: Callable[[dict[str, Any]], None] | None = None,
              max_attempts: int = 8, base_delay: float = 0.05) -> list[dict[str, Any]]:
    """Every item of ``keys`` that exists, in chunks of 100, retrying ``UnprocessedKeys``.

    Unprocessed keys (throttling, 16 MB responses) are retried with full-jitter exponential
    backoff, as the AWS SDKs advise; after ``max_attempts`` a :class:`RuntimeError` says how many are
    left. ``on_response`` sees every raw response (consumed capacity accounting).
    """
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), MAX_BATCH_GET):
        spec: dict[str, Any] = {"Keys": list(keys[start:start + MAX_BATCH_GET]), "ConsistentRead": consistent}
        if projection:
            spec["ProjectionExpression"] = projection
        request: dict[str, Any] = {table: spec}
        attempt = 0
        while request:
            if attempt:
                if attempt >= max_attempts:
                    left = len(request[table]["Keys"])
                    raise RuntimeError(f"BatchGetItem on {table}: {left} keys still unprocessed after {attempt} tries")
                time.sleep(random.uniform(0, base_delay * 2 ** attempt))
            resp = client.batch_get_item(RequestItems=request, ReturnConsumedCapacity="TOTAL")
            if on_response is not None:
                on_response(resp)
            found += resp.get("Responses", {}).get(table, [])
            request = resp.get("UnprocessedKeys") or {}
            attempt += 1
    return found
