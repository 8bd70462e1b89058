"""Rescoring as time passes: recency and trends change even when no event arrives."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import db, services
from chalicelib.log import logger
from chalicelib.settings import get_settings
from chalicelib.versions import live_versions
from streams.handler import get_writer


def _written() -> list[int]:
    """The versions the live projector writes (serving first, then the building ones it keeps current): each is
    settled and rescored on the schedule, so a promoted version's listing is as fresh as the one it replaces."""
    return [v for v, phase in live_versions(db.get_client(), get_settings().control_table).items()
            if phase in ("serving", "current")]

__all__ = ["rescore_all", "settle_all"]


def settle_all(now: datetime | None = None) -> dict[str, int]:
    """Settle every tenant's due delta-page buckets (``streams.writer.ViewWriter.settle_due``): the settler
    schedule. Returns buckets settled per tenant; one tenant's failure does not stop the others."""
    now = now or datetime.now(UTC)
    out: dict[str, int] = {}
    for version in _written():
        writer = get_writer(version)
        if not writer.deferred:
            continue
        for t in services.tenants().list():
            try:
                out[t.tenant_id] = out.get(t.tenant_id, 0) + writer.settle_due(t.tenant_id, now)
            except Exception:
                logger.exception("settling failed", extra={"tenant_id": t.tenant_id, "version": version})
    return out


def rescore_all(now: datetime | None = None) -> dict[str, int]:
    """Settle every tenant's ripe delta pages (a bucket no batch touched lately is settled here, so the
    listing is never more than an hour behind), then recompute the score of every account of every tenant;
    returns summaries written per tenant.

    One tenant's failure is logged and does not stop the others.
    """
    now = now or datetime.now(UTC)
    out: dict[str, int] = {}
    for version in _written():
        query = services.query(version)
        writer = get_writer(version)
        for t in services.tenants().list():
            try:
                if writer.deferred:
                    writer.settle(t.tenant_id, now)
                written = writer.rescore(t.tenant_id, query.account_ids(t.tenant_id), now)
                out[t.tenant_id] = out.get(t.tenant_id, 0) + written
            except Exception:
                logger.exception("rescoring failed", extra={"tenant_id": t.tenant_id, "version": version})
    return out
