"""Rescoring as time passes: recency and trends change even when no event arrives."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from chalicelib import db, services
from chalicelib.log import logger
from chalicelib.settings import get_settings
from chalicelib.versions import live_versions
from chalicelib.views import ViewStore
from streams.handler import get_writer
from streams.writer import ViewWriter

__all__ = ["rescore_all", "settle_all"]


def _written() -> list[int]:
    """The versions the live projector writes (serving first, then the building ones it keeps current): each is
    settled and rescored on the schedule, so a promoted version's listing is as fresh as the one it replaces."""
    return [v for v, phase in live_versions(db.get_client(), get_settings().control_table).items()
            if phase in ("serving", "current")]


_settlers: dict[str, ViewWriter] = {}
_settlers_lock = threading.Lock()


def settler_writer(version: int | None = None) -> ViewWriter:
    """The settler's view writer for a version: the projector's (``get_writer(version)``: its fold, models,
    outbox, search) on a view store of its own, so a settle's reads and writes never queue in the thread pools
    the projector's batches use (``settle_workers`` threads)."""
    projector = get_writer(version)
    table = projector.store.table
    with _settlers_lock:
        w = _settlers.get(table)
        if w is None or w.store.client is not projector.store.client:
            if w is not None:
                w.store.close()
            w = ViewWriter(ViewStore(projector.store.client, table, workers=get_settings().settle_workers),
                           projector.models, projector.outbox, projector.search, deferred=projector.deferred,
                           settle_after=projector.settle_after, settle_min_age=projector.settle_min_age,
                           settle_pages=projector.settle_pages,
                           settle_bytes=projector.settle_bytes, settle_inline=0, fold=projector.fold)
            _settlers[table] = w
        return w


def settle_all(now: datetime | None = None, *, stop: threading.Event | None = None) -> dict[str, int]:
    """Settle every tenant's due delta-page buckets (``streams.writer.ViewWriter.settle_due``): the settler
    schedule. Each tenant's run is bounded (``settle_budget_seconds``, ``settle_pause``: see
    ``chalicelib.settings``); what is left is due again on the next run. Returns buckets settled per tenant;
    one tenant's failure does not stop the others."""
    now = now or datetime.now(UTC)
    s = get_settings()
    out: dict[str, int] = {}
    for version in _written():
        writer = settler_writer(version)
        if not writer.deferred:
            continue
        for t in services.tenants().list():
            if stop is not None and stop.is_set():
                break
            try:
                out[t.tenant_id] = out.get(t.tenant_id, 0) + writer.settle_due(
                    t.tenant_id, now, budget_seconds=s.settle_budget_seconds, pause=s.settle_pause, stop=stop)
            except Exception:
                logger.exception("settling failed", extra={"tenant_id": t.tenant_id, "version": version})
    return out


def rescore_all(now: datetime | None = None) -> dict[str, int]:
    """Settle every tenant's due delta pages (as the settler schedule does, bounded: a bucket no batch touched
    lately is due by the age of its oldest page), then recompute the score of every account of every tenant;
    returns summaries written per tenant. Both on the settler's view store, not the projector's.

    One tenant's failure is logged and does not stop the others.
    """
    now = now or datetime.now(UTC)
    s = get_settings()
    out: dict[str, int] = {}
    for version in _written():
        query = services.query(version)
        writer = settler_writer(version)
        for t in services.tenants().list():
            try:
                if writer.deferred:
                    writer.settle_due(t.tenant_id, now, budget_seconds=s.settle_budget_seconds, pause=s.settle_pause)
                written = writer.rescore(t.tenant_id, query.account_ids(t.tenant_id), now)
                out[t.tenant_id] = out.get(t.tenant_id, 0) + written
            except Exception:
                logger.exception("rescoring failed", extra={"tenant_id": t.tenant_id, "version": version})
    return out
