"""DynamoDB clients, built lazily and once, so importing the app does no I/O."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config

from chalicelib.settings import get_settings

__all__ = ["get_client", "get_streams_client", "reset_clients", "client_kwargs", "items", "table_names"]

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def client_kwargs() -> dict[str, Any]:
    """Keyword arguments for boto3 clients talking to the configured DynamoDB endpoint."""
    s = get_settings()
    kwargs: dict[str, Any] = {
        "region_name": s.region,
        "config": Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32),
    }
    if s.dynamodb_endpoint:
        kwargs["endpoint_url"] = s.dynamodb_endpoint
        # DynamoDB Local accepts any credentials; do not require a real profile locally.
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            kwargs["aws_access_key_id"] = "local"
            kwargs["aws_secret_access_key"] = "local"
    return kwargs


def _get(name: str) -> Any:
    with _lock:
        if name not in _clients:
            _clients[name] = boto3.session.Session().client(name, **client_kwargs())
        return _clients[name]


def get_client() -> Any:
    """The low-level ``dynamodb`` client."""
    return _get("dynamodb")


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
    """Every table name of the endpoint, across pages.

    Plain ``list_tables`` calls rather than a paginator, so the streams tests' minimal fake
    DynamoDB client (``list_tables`` + ``describe_table``) still serves.
    """
    kwargs: dict[str, Any] = {}
    while True:
        page = client.list_tables(**kwargs)
        yield from page.get("TableNames", [])
        if "LastEvaluatedTableName" not in page:
            return
        kwargs["ExclusiveStartTableName"] = page["LastEvaluatedTableName"]
