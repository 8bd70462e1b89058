"""Helpers for tests that drive the local runtime against DynamoDB Local (no pytest imports)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from chalicelib import db, keys, tables
from chalicelib.settings import get_settings
from streams.functions import FunctionRegistry
from streams.local_backend import LocalMappingBackend
from streams.mapping import family_source_arn
from streams.poller import RuntimeOptions
from streams.runtime import LocalRuntime
from streams.store import ControlStore

__all__ = ["FAST", "day_table", "fast_options", "kill_replay_midway", "local_parts", "put_events", "wait_until"]

T = TypeVar("T")

FAST = RuntimeOptions(poll_interval=0.05, discovery_interval=0.3, retry_base_delay=0.01, retry_max_delay=0.05,
                      lease_seconds=1.5, gauge_interval=0.2)
"""Options that make tests quick: 50 ms polls, near-immediate retries, short leases."""


def fast_options(**overrides: Any) -> RuntimeOptions:
    """:data:`FAST` with some fields replaced."""

    return dataclasses.replace(FAST, **overrides)


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not reached within {timeout}s (last value {value!r})")
        time.sleep(interval)


def day_table(prefix: str | None = None, day: date | None = None) -> str:
    """Name of a day table (today's by default) for the configured prefix."""
    return keys.events_table_name(prefix or get_settings().table_prefix, day or tables.utc_today())


def put_events(ddb: Any, table: str, pks: Iterable[str], **attrs: Any) -> list[str]:
    """``put_item`` one item per ``pk`` (in order) with optional extra string attributes."""
    written = []
    for pk in pks:
        item = {"pk": {"S": pk}, **{k: {"S": str(v)} for k, v in attrs.items()}}
        ddb.put_item(TableName=table, Item=item)
        written.append(pk)
    return written


def local_parts(prefix: str, options: RuntimeOptions | None = None, functions: FunctionRegistry | None = None,
                ) -> tuple[ControlStore, LocalMappingBackend, Callable[[], LocalRuntime], str]:
    """Store, backend, a runtime factory and the family source ARN for a table prefix."""
    store = ControlStore(db.get_client(), keys.control_table_name(prefix))
    backend = LocalMappingBackend(store, db.get_client(), db.get_streams_client())

    def runtime() -> LocalRuntime:
        return LocalRuntime(store, db.get_client(), db.get_streams_client(), options or FAST, functions)

    return store, backend, runtime, family_source_arn(prefix)


def kill_replay_midway(cli_args: list[str], job: Path, partitions: int, timeout: float) -> int:
    """Run ``streamfold <cli_args>`` (a replay) as a subprocess and ``kill -9`` it once its job has ``partitions``
    partitions done; returns how many were done."""
    done = job / "done"
    proc = subprocess.Popen([sys.executable, "-m", "tooling.cli", *cli_args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        wait_until(lambda: done.exists() and len(done.read_text().split()) >= partitions
                   or proc.poll() is not None, timeout=timeout)
        assert proc.poll() is None, f"the replay ended before it could be killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return len(done.read_text().split())
