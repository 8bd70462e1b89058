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

__all__ = ["tenants", "ingestor", "reset"]

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
