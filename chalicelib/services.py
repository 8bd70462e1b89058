"""Lazily built, process-wide services (one per Lambda container / local process)."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from chalicelib import tables
from chalicelib.db import get_client
from chalicelib.ingest import Ingestor
from chalicelib.settings import get_settings
from chalicelib.tenants import TenantStore

__all__ = ["tenants", "ingestor", "query", "projector", "reset"]

_lock = threading.Lock()


def _ensure_day_tables(client: Any, prefix: str, when: Any) -> None:
    # The rotation function creates tomorrow's table a day ahead; this is the safety net.
    with _lock:
        tables.ensure_event_tables(client, prefix, tables.utc_today(when))


@lru_cache(maxsize=1)
def tenants() -> TenantStore:
    return TenantStore(get_client(), get_settings().control_table)


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    return Ingestor(get_client(), get_settings().table_prefix, ensure_tables=_ensure_day_tables)


def reset() -> None:
    tenants.cache_clear()
    ingestor.cache_clear()


@lru_cache(maxsize=1)
def query() -> Any:
    """The private API's query service for the active view version."""
    from chalicelib import keys
    from chalicelib.query import QueryService
    from chalicelib.scoremodels import ScoreModelStore
    from chalicelib.views import ViewStore
    from streams.projector import VIEW_VERSION

    s = get_settings()
    client = get_client()
    search = None
    try:
        from chalicelib.search import get_indexer

        search = get_indexer(VIEW_VERSION)
    except ImportError:
        search = None
    return QueryService(ViewStore(client, keys.view_table_name(s.table_prefix, VIEW_VERSION)),
                        ScoreModelStore(client, s.control_table), search=search, status=_status)


def _status() -> list[dict[str, Any]]:
    from streams.cli import status_report
    from streams.store import ControlStore

    return status_report(ControlStore(get_client(), get_settings().control_table))


def projector() -> Any:
    from streams.projector import get_projector

    return get_projector()


_reset_base = reset


def reset() -> None:  # type: ignore[no-redef]
    _reset_base()
    query.cache_clear()
    try:
        from streams.projector import get_projector

        get_projector.cache_clear()
    except ImportError:
        pass
    from chalicelib.search import reset_indexers

    reset_indexers()
