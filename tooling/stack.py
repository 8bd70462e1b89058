"""The embedded local stack: DynamoDB Local + tables + local mappings + HTTP server."""

from __future__ import annotations

import fcntl
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
from tooling.dynamodb_local import DynamoDBLocal, is_dynamodb_local
from tooling.server import LocalHttpServer

__all__ = ["Component", "LocalStack", "StackRunning", "read_stack_file", "use_endpoint"]


class StackRunning(RuntimeError):
    """Another ``streamfold up`` already runs on this data directory."""


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


def lock_file(data_dir: Path) -> Path:
    return data_dir / "stack.lock"


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
        self._lock_fd: int | None = None

    @property
    def settings(self) -> Settings:
        return get_settings()

    def _lock(self, data_dir: Path) -> None:
        """One ``streamfold up`` per data directory: an exclusive ``flock`` held for the process's life.

        The kernel drops the lock when the process dies, even by ``kill -9``, so a crash never leaves a
        stale lock. A DynamoDB Local left over by a crash on a system without ``PR_SET_DEATHSIG`` is
        found by the pid recorded in ``stack.json`` and stopped.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file(data_dir), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = read_stack_file(data_dir) or {}
            where = f" (pid {info['pid']}, {info.get('url')})" if info.get("pid") else ""
            raise StackRunning(f"streamfold up is already running on data directory {data_dir}{where}; "
                               "use it, or stop it (Ctrl-C / kill -INT) before starting another") from None
        self._lock_fd = fd
        path = stack_file(data_dir)
        if path.exists():
            try:
                old = json.loads(path.read_text())
                orphan = int(old.get("dynamodb_pid") or 0)
            except (ValueError, OSError):
                orphan = 0
            if orphan and is_dynamodb_local(orphan):
                logger.warning("stopping the DynamoDB Local a crashed streamfold up left behind",
                               extra={"pid": orphan})
                os.kill(orphan, signal.SIGKILL)
                for _ in range(50):
                    if not is_dynamodb_local(orphan):
                        break
                    time.sleep(0.1)
            path.unlink(missing_ok=True)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def start(self) -> LocalStack:
        s = get_settings()
        self._lock(s.data_dir)
        if s.dynamodb_endpoint is None:
            self.ddb = DynamoDBLocal(in_memory=self.in_memory, db_path=s.data_dir / "dynamodb",
                                     log_path=s.data_dir / "logs" / "dynamodb-local.log").start()
            use_endpoint(self.ddb.endpoint)
            s = get_settings()
            self._write_stack_file(url=None)  # the DynamoDB Local pid is on record from now on
        client = db.get_client()
        tables.ensure_control_table(client, s.table_prefix)
        tables.ensure_event_tables(client, s.table_prefix, tables.utc_today())
        tables.ensure_view_table(client, s.table_prefix, VIEW_VERSION)
        for factory in self._factories:
            comp = factory(self)
            comp.start()
            self.components.append(comp)

        self.http = LocalHttpServer(app, port=self.port).start()
        self._write_stack_file(url=self.http.url)
        return self

    def _write_stack_file(self, url: str | None) -> None:
        s = get_settings()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = stack_file(s.data_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps({
            "pid": os.getpid(), "endpoint": s.dynamodb_endpoint, "url": url, "prefix": s.table_prefix,
            "dynamodb_pid": self.ddb.pid if self.ddb is not None else None}))
        tmp.replace(stack_file(s.data_dir))

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
        self._unlock()

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
