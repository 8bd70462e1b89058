"""The embedded local stack: DynamoDB Local + tables + local mappings + HTTP server."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from app import app
from chalicelib import db, services, tables
from chalicelib.log import logger
from chalicelib.settings import Settings, get_settings, reset_settings
from chalicelib.versions import VIEW_VERSION
from streams import handler
from tooling.dynamodb_local import DynamoDBLocal
from tooling.server import LocalHttpServer

__all__ = ["Component", "LocalStack", "read_stack_file", "use_endpoint"]


class Component(Protocol):
    """Something the stack starts after storage is ready and stops before it goes."""

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def use_endpoint(endpoint: str | None, prefix: str | None = None) -> None:
    """Point this process at a DynamoDB endpoint (and table prefix) and drop cached clients."""
    if endpoint:
        os.environ["STREAMFOLD_DYNAMODB_ENDPOINT"] = endpoint
    if prefix is not None:
        os.environ["STREAMFOLD_TABLE_PREFIX"] = prefix
    reset_settings()
    db.reset_clients()
    services.reset()
    handler.get_writer.cache_clear()


def stack_file(data_dir: Path) -> Path:
    return data_dir / "stack.json"


def read_stack_file(data_dir: Path) -> dict[str, Any] | None:
    """Endpoint and URL of a running ``streamfold up`` (if its process is still alive)."""
    path = stack_file(data_dir)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return info


class LocalStack:
    """Start everything ``streamfold up`` runs, in order; stop in reverse.

    Args:
        port: HTTP port on 127.0.0.1 (0 = any free port).
        in_memory: run DynamoDB Local in memory instead of under ``<data_dir>/dynamodb``.
        components: factories for extra components (local mappings, schedulers), given the stack.
    """

    def __init__(self, port: int = 8080, *, in_memory: bool = False,
                 components: list[Callable[[LocalStack], Component]] | None = None) -> None:
        self.port = port
        self.in_memory = in_memory
        self.ddb: DynamoDBLocal | None = None
        self.http: Any = None
        self._factories = components or []
        self.components: list[Component] = []
        self._stopped = threading.Event()

    @property
    def settings(self) -> Settings:
        return get_settings()

    def start(self) -> LocalStack:
        s = get_settings()
        if s.dynamodb_endpoint is None:
            self.ddb = DynamoDBLocal(in_memory=self.in_memory, db_path=s.data_dir / "dynamodb",
                                     log_path=s.data_dir / "logs" / "dynamodb-local.log").start()
            use_endpoint(self.ddb.endpoint)
            s = get_settings()
        client = db.get_client()
        tables.ensure_control_table(client, s.table_prefix)
        tables.ensure_event_tables(client, s.table_prefix, tables.utc_today())
        tables.ensure_view_table(client, s.table_prefix, VIEW_VERSION)
        for factory in self._factories:
            comp = factory(self)
            comp.start()
            self.components.append(comp)

        self.http = LocalHttpServer(app, port=self.port).start()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        stack_file(s.data_dir).write_text(json.dumps({
            "pid": os.getpid(), "endpoint": s.dynamodb_endpoint, "url": self.http.url,
            "prefix": s.table_prefix}))
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.http is not None:
            self.http.stop()
        for comp in reversed(self.components):
            try:
                comp.stop()
            except Exception:
                logger.exception("stopping %r", comp)
        try:
            stack_file(get_settings().data_dir).unlink(missing_ok=True)
        except OSError:
            pass
        if self.ddb is not None:
            self.ddb.stop()

    def wait(self) -> None:
        """Block until SIGINT/SIGTERM, then stop cleanly."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopped.set())
        try:
            while not self._stopped.is_set():
                time.sleep(0.5)
        finally:
            self._stopped.clear()
            self.stop()
