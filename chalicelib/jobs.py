"""Scheduled work: rescoring every account as time passes, delivering alerts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib import services
from chalicelib.log import logger

__all__ = ["Periodic", "rescore_all", "rescorer"]


def rescore_all(now: datetime | None = None) -> dict[str, int]:
    """Recompute the score of every account of every tenant; returns summaries written per tenant."""
    now = now or datetime.now(UTC)
    q = services.query()
    proj = services.projector()
    out: dict[str, int] = {}
    for t in services.tenants().list():
        out[t.tenant_id] = proj.rescore(t.tenant_id, q.account_ids(t.tenant_id), now)
    return out


class Periodic:
    """Run ``fn`` every ``interval`` seconds on a daemon thread (local stand-in for a schedule)."""

    def __init__(self, name: str, fn: Callable[[], Any], interval: float) -> None:
        self.name = name
        self.fn = fn
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Periodic:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.fn()
                except Exception:
                    logger.exception("%s failed", self.name)

        self._thread = threading.Thread(target=loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def rescorer(interval: float = 3600.0) -> Periodic:
    """The hourly rescore as a component of ``streamfold up``."""
    return Periodic("rescore", lambda: logger.info("rescored", extra={"written": rescore_all()}), interval)
