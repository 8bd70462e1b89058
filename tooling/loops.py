"""Local stand-ins for AWS schedules: background loops that ``streamfold up`` runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chalicelib.log import logger

__all__ = ["Periodic"]


class Periodic:
    """Run ``fn`` every ``interval`` seconds on a daemon thread; an exception is logged, the loop goes on."""

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
