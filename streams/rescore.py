"""Rescoring as time passes: recency and trends change even when no event arrives."""

from __future__ import annotations

from datetime import UTC, datetime

from chalicelib import services
from chalicelib.log import logger
from streams.handler import get_writer

__all__ = ["rescore_all", "settle_all"]


def settle_all(now: datetime | None = None) -> dict[str, int]:
    """Settle every tenant's due delta-page buckets (``streams.writer.ViewWriter.settle_due``): the settler
    schedule. Returns buckets settled per tenant; one tenant's failure does not stop the others."""
    now = now or datetime.now(UTC)
    writer = get_writer()
    out: dict[str, int] = {}
    if not writer.deferred:
        return out
    for t in services.tenants().list():
        try:
            out[t.tenant_id] = writer.settle_due(t.tenant_id, now)
        except Exception:
            logger.exception("settling failed", extra={"tenant_id": t.tenant_id})
    return out


def rescore_all(now: datetime | None = None) -> dict[str, int]:
    """Settle every tenant's ripe delta pages (a bucket no batch touched lately is settled here, so the
    listing is never more than an hour behind), then recompute the score of every account of every tenant;
    returns summaries written per tenant.

    One tenant's failure is logged and does not stop the others.
    """
    now = now or datetime.now(UTC)
    query = services.query()
    writer = get_writer()
    out: dict[str, int] = {}
    for t in services.tenants().list():
        try:
            if writer.deferred:
                writer.settle(t.tenant_id, now)
            out[t.tenant_id] = writer.rescore(t.tenant_id, query.account_ids(t.tenant_id), now)
        except Exception:
            logger.exception("rescoring failed", extra={"tenant_id": t.tenant_id})
    return out
