"""Scheduled work: rescoring every account as time passes, delivering alerts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from chalicelib import services
from chalicelib.log import logger

__all__ = ["rescore_all", "Rescorer"]


def rescore_all(now: datetime | None = None) -> dict[str, int]:
    """Recompute the score of every account of every tenant; returns summaries written per tenant."""
    now = now or datetime.now(UTC)
    q = services.query()
    proj = services.projector()
    out: dict[str, int] = {}
    for t in services.tenants().list():
        out[t.tenant_id] = proj.rescore(t.tenant_id, q.account_ids(t.tenant_id), now)
    return out


class Rescorer:
    """Local stand-in for the hourly schedule (a component of ``streamfold up``)."""

    def __init__(self, interval: float = 3600.0) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Any:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    logger.info("rescored", extra={"written": rescore_all()})
                except Exception:
                    logger.exception("rescore failed")

        self._thread = threading.Thread(target=loop, name="rescore", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
