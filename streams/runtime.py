"""The local Event Source Mapping runtime: a supervisor starting (and restarting) one poller thread per mapping.

It plays the part of the Lambda service for local mappings: it settles state transitions
(``Creating``/``Enabling``/``Updating`` -> ``Enabled``, ``Disabling`` -> ``Disabled`` once the
in-flight batch is done, ``Deleting`` -> gone), holds a lease per mapping so that two runtimes
never poll the same mapping, and notices mappings created after it started.
"""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.log import logger
from streams.functions import FunctionRegistry
from streams.poller import HostCrash, MappingPoller, RuntimeOptions, ShardLag
from streams.store import ControlStore

__all__ = ["LocalRuntime"]



class LocalRuntime:
    """Run every mapping of a control table (or only ``only``) until :meth:`stop`.

    Args:
        store: the control table's mapping store.
        ddb: ``dynamodb`` client (discovers day tables).
        streams: ``dynamodbstreams`` client.
        options: poll interval, backoff, lease and clock.
        functions: the function registry (default: :data:`streams.functions.registry`).
        only: restrict to these mapping UUIDs.
    """

    def __init__(self, store: ControlStore, ddb: Any, streams: Any, options: RuntimeOptions | None = None,
                 functions: FunctionRegistry | None = None, only: set[str] | None = None) -> None:
        self.store = store
        self.ddb = ddb
        self.streams = streams
        self.options = options or RuntimeOptions()
        self.functions = functions
        self.only = only
        self.pollers: dict[str, MappingPoller] = {}
        self.restarts: dict[str, int] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> LocalRuntime:
        """Start the supervisor (returns at once)."""
        self._stopping.clear()
        self.rescan()
        self._thread = threading.Thread(target=self._supervise, name="esm-supervisor", daemon=True)
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stopping.wait(max(self.options.poll_interval * 4, min(self.options.discovery_interval, 2.0))):
            try:
                self.rescan()
            except Exception:
                logger.exception("mapping rescan failed")

    def rescan(self) -> None:
        """Start a poller for every mapping that has none, and restart any that died.

        Pollers back off and resume by themselves on errors; this is the second line: a poller thread
        that ended anyway (an unexpected exception, a lost lease) is replaced on the next scan. Only a
        simulated host crash (:class:`HostCrash`, tests) stays down.
        """
        uuids = self.store.list_uuids()
        with self._lock:
            if self._stopping.is_set():
                return
            for u in uuids:
                if self.only is not None and u not in self.only:
                    continue
                p = self.pollers.get(u)
                if p is not None and (p.is_alive() or (isinstance(p.crashed, HostCrash) and not p.lease_lost)):
                    continue  # a simulated host crash stays down, as a dead host would
                if p is not None:
                    # It died (an unexpected error) or lost its lease: a fresh poller resumes from the
                    # checkpoints, or waits as a standby until the lease is free again.
                    self.restarts[u] = self.restarts.get(u, 0) + 1
                    logger.error("poller ended; supervisor restarts it",
                                 extra={"mapping": u, "restarts": self.restarts[u],
                                        "reason": repr(p.crashed) if p.crashed else "stopped"})
                p = MappingPoller(u, self.store, self.ddb, self.streams, self.options, self.functions)
                self.pollers[u] = p
                p.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every poller after its in-flight invocation, checkpoint and release leases."""
        self._stopping.set()
        with self._lock:
            pollers = list(self.pollers.values())
        for p in pollers:
            p.request_stop()
        for p in pollers:
            p.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def kill(self) -> None:
        """Simulate a crash of the whole runtime: no further checkpoint, leases left to expire."""
        self._stopping.set()
        with self._lock:
            pollers = list(self.pollers.values())
        for p in pollers:
            p.kill()
        for p in pollers:
            p.join(10.0)

    def lag(self, mapping_uuid: str) -> list[ShardLag]:
        """Per-shard lag of a mapping run by this runtime (empty if not running here)."""
        p = self.pollers.get(mapping_uuid)
        return p.lag() if p is not None else []

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
