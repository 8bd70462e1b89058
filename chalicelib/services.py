"""Lazily built, process-wide services of the API function (one per Lambda container / local process).

Each service is handed its client and table names, as the Chalice samples do; nothing here does I/O
at import time. Stream-side wiring (the view writer) lives in :mod:`streams.handler`.
"""

from __future__ import annotations

import threading
from datetime import datetime
from functools import lru_cache
from typing import Any

from chalicelib import keys, tables, versions
from chalicelib.db import get_api_client
from chalicelib.ingest import Ingestor
from chalicelib.query import QueryService
from chalicelib.ratelimit import RateLimiter
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.search import get_indexer, reset_indexers
from chalicelib.settings import get_settings
from chalicelib.tenants import TenantStore
from chalicelib.views import ViewStore

__all__ = ["active_version", "ingestor", "query", "rate_limiter", "reset", "tenants"]

_lock = threading.Lock()


def _ensure_day_tables(client: Any, prefix: str, when: datetime) -> None:
    # The rotation function creates tomorrow's table a day ahead; this is the safety net.
    with _lock:
        tables.ensure_event_tables(client, prefix, tables.utc_today(when))


@lru_cache(maxsize=1)
def tenants() -> TenantStore:
    """Tenants, write keys and API tokens (control table)."""
    return TenantStore(get_api_client(), get_settings().control_table)


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    """The public ingest path (day tables)."""
    return Ingestor(get_api_client(), get_settings().table_prefix, ensure_tables=_ensure_day_tables)


@lru_cache(maxsize=1)
def rate_limiter() -> RateLimiter:
    """Token buckets per write key (``STREAMFOLD_INGEST_RATE`` / ``STREAMFOLD_INGEST_BURST``)."""
    s = get_settings()
    return RateLimiter(s.ingest_rate, s.ingest_burst)


def active_version() -> int:
    """The view version the API reads (see :mod:`chalicelib.versions`): the active-version record, read on every
    request (one strongly consistent ``GetItem``), so a promotion switches every reader at once: no request
    after its transaction reads the version it replaced. A stack never promoted falls back to the cached rule."""
    client, control = get_api_client(), get_settings().control_table
    stored = versions.stored_active_view_version(client, control)
    return stored if stored is not None else versions.active_view_version(client, control)


def query(version: int | None = None) -> QueryService:
    """The private API's query service for the active view version (or for ``version``: the rescoring of a
    building version the projector keeps current)."""
    return _query(active_version() if version is None else version)


@lru_cache(maxsize=4)
def _query(version: int) -> QueryService:
    s = get_settings()
    client = get_api_client()
    return QueryService(ViewStore(client, keys.view_table_name(s.table_prefix, version)),
                        ScoreModelStore(client, s.control_table), search=get_indexer(version))


def reset() -> None:
    """Forget every cached service (after the endpoint or table prefix changes)."""
    tenants.cache_clear()
    ingestor.cache_clear()
    rate_limiter.cache_clear()
    _query.cache_clear()
    versions.forget()
    reset_indexers()
