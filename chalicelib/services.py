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

__all__ = ["tenants", "ingestor", "query", "projector", "active_version", "reset"]

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


def active_version() -> int:
    """The view version the API reads and the projector writes (see :mod:`chalicelib.versions`)."""
    from chalicelib.versions import active_view_version

    return active_view_version(get_client(), get_settings().control_table)


def query() -> Any:
    """The private API's query service for the active view version."""
    return _query(active_version())


@lru_cache(maxsize=4)
def _query(version: int) -> Any:
    from chalicelib import keys
    from chalicelib.query import QueryService
    from chalicelib.scoremodels import ScoreModelStore
    from chalicelib.views import ViewStore

    s = get_settings()
    client = get_client()
    from chalicelib.search import get_indexer

    return QueryService(ViewStore(client, keys.view_table_name(s.table_prefix, version)),
                        ScoreModelStore(client, s.control_table), search=get_indexer(version), status=_status)


def _status() -> list[dict[str, Any]]:
    from streams.cli import status_report
    from streams.store import ControlStore

    return status_report(ControlStore(get_client(), get_settings().control_table))


def projector() -> Any:
    from streams.projector import get_projector

    return get_projector(active_version())


_reset_base = reset


def reset() -> None:  # type: ignore[no-redef]
    _reset_base()
    _query.cache_clear()
    from chalicelib.versions import forget

    forget()
    try:
        from streams.projector import get_projector

        get_projector.cache_clear()
    except ImportError:
        pass
    from chalicelib.search import reset_indexers

    reset_indexers()
