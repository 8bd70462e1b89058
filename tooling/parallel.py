"""Concurrent batches of one shard (``ParallelizationFactor``): throughput measured, exactness checked.

:func:`measure_parallel` runs one tenant's workload through the real projector handler
(``streams.handler.on_day_table_records``) and the local Event Source Mapping runtime at each
parallelization factor, each on fresh tables of the same DynamoDB Local:

1. a tenant's users ``identify`` and ``group`` into its accounts; ingested (``Ingestor``, as the API does) and
   projected with the factor being measured, then the runtime stops;
2. the usage: ``events`` tracks in requests of ``per_request`` events (one stored chunk, one stream record,
   each), a request being one user's session as an SDK sends it (one account, seconds apart, client
   timestamps within the last half hour), half with ``context.groupId``, half attributed through the
   memberships, a few event names. Records in different lanes touch the same view items: an account's
   ``DAY#``/``HEAD``/``TL#``/``SUMMARY`` when two of its sessions land in two lanes, the users' ``HEAD``s,
   the catalog's names and days (every batch), the claim pages of the same minutes;
3. the runtime starts again with every usage record already in the stream; ``seconds`` runs from the first
   invocation to the shard checkpoint reaching the stream's last record (all batches succeeded and were
   checkpointed). ``events_per_s`` = usage events / ``seconds``;
4. the view is checked against :func:`projections.usage.attribute` (every account-day's counts and
   distinct users), the catalog's day counters against the events per day and name, and the claim pages
   against the usage message ids: ``exact`` is True when every acknowledged event is counted exactly once.

Speed is measured, never asserted (the machines are shared and noisy); exactness is a result the test
asserts. One process hosts every concurrent invocation here, where Lambda runs each in a sandbox of its
own: they share this machine's cores with DynamoDB Local, and (unless ``sandboxes``) the handler's one view
writer and its thread pools. ``cpu_s`` (this process) and ``load_avg_1m`` say how busy the machine was.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import db, keys, services, tables
from chalicelib.chunks import unpack_chunk
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore, decode_body
from projections.account import DayActivity
from projections.events import Event
from projections.usage import attribute
from streams import handler
from streams.functions import FunctionRegistry
from streams.local_backend import LocalMappingBackend
from streams.mapping import family_source_arn
from streams.mapping_settings import PROJECTOR_MAPPING
from streams.poller import RuntimeOptions
from streams.runtime import LocalRuntime
from streams.store import ControlStore
from streams.writer import ViewWriter
from tooling.stack import use_endpoint

__all__ = ["ParallelWorkload", "measure_parallel"]

NAMES = ("Report Created", "Dashboard Viewed", "Export Downloaded", "Filter Applied", "Invite Sent")
OPTIONS = RuntimeOptions(poll_interval=0.05, discovery_interval=0.3, lease_seconds=5.0, gauge_interval=1.0)
"""Polls of 50 ms so that the measured time is the projection's, not the wait for the next poll."""


@dataclass(frozen=True)
class ParallelWorkload:
    """One tenant's traffic (see the module docstring)."""

    accounts: int = 200
    users_per_account: int = 2
    events: int = 4_000
    per_request: int = 10
    seed: int = 17


class _Probe:
    """Runs the projector handler: counts invocations and how many ran at once.

    ``sandboxes``: each worker thread of the runtime (one per concurrent batch) gets a view writer of its
    own — its own thread pools, as each Lambda sandbox has — instead of the process's one.
    ``processes``: each concurrent batch runs in a worker process of its own (``factor`` of them, started once
    and kept warm), each with its own view writer: a Lambda sandbox, with its own interpreter and CPU share, as
    on AWS; the runtime's worker thread only waits for it.
    """

    def __init__(self, sandboxes: bool, processes: int = 0, endpoint: str = "", prefix: str = "",
                 latency: float = 0.0) -> None:
        self.sandboxes = sandboxes
        self.lock = threading.Lock()
        self.invocations = 0
        self.running = 0
        self.max_running = 0
        self.first_start: float | None = None
        self.writers: list[ViewWriter] = []
        self._local = threading.local()
        self._units = 0.0
        self._conflicts = 0
        self.pool: ProcessPoolExecutor | None = None
        if processes:
            self.pool = ProcessPoolExecutor(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_sandbox_start, initargs=(endpoint, prefix, latency))
            # Started and warm before the clock (a Lambda sandbox's init is not a batch's time either).
            list(self.pool.map(_sandbox_warm, range(processes * 2)))

    def writer(self) -> ViewWriter:
        if not self.sandboxes:
            return handler.get_writer()
        w: ViewWriter | None = getattr(self._local, "writer", None)
        if w is None:
            w = self._local.writer = handler.new_writer(VIEW_VERSION)
            with self.lock:
                self.writers.append(w)
        return w

    def stats(self) -> tuple[float, int]:
        """Write units and conflicts of every writer used so far."""
        if self.pool is not None:
            with self.lock:
                return self._units, self._conflicts
        writers = self.writers if self.sandboxes else [handler.get_writer()]
        return sum(w.store.stats.write_units for w in writers), sum(w.store.stats.conflicts for w in writers)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self.lock:
            self.invocations += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            if self.first_start is None:
                self.first_start = time.perf_counter()
        try:
            if self.pool is not None:
                response, units, conflicts = self.pool.submit(_sandbox_invoke, event).result()
                with self.lock:
                    self._units += units
                    self._conflicts += conflicts
                return response
            return handler.on_day_table_records(event, context, writer=self.writer())
        finally:
            with self.lock:
                self.running -= 1

    def reset(self) -> None:
        with self.lock:
            self.invocations = self.max_running = 0
            self.first_start = None

    def close(self) -> None:
        for writer in self.writers:
            writer.store.close()
        if self.pool is not None:
            self.pool.shutdown()


def _sandbox_start(endpoint: str, prefix: str, latency: float) -> None:
    """A sandbox process's init: this stack's endpoint and tables, the emulated network wait if any."""
    use_endpoint(endpoint, prefix)
    _add_latency(db.get_client(), latency)


def _sandbox_warm(_: int) -> int:
    handler.get_writer()  # the sandbox's view writer, built once (its init)
    return os.getpid()


def _sandbox_invoke(event: dict[str, Any]) -> tuple[Any, float, int]:
    """One invocation in this sandbox: the handler's response, and the write units and conflicts it spent."""
    writer = handler.get_writer()
    units, conflicts = writer.store.stats.write_units, writer.store.stats.conflicts
    response = handler.on_day_table_records(event, None, writer=writer)
    return response, writer.store.stats.write_units - units, writer.store.stats.conflicts - conflicts


def _requests(w: ParallelWorkload, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Request bodies: the memberships first, then the usage."""
    rng = random.Random(w.seed)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    setup: list[dict[str, Any]] = []
    for a in range(w.accounts):
        for u in range(w.users_per_account):
            uid = f"u{a:03d}-{u}"
            setup.append({"type": "identify", "messageId": f"id-{uid}", "userId": uid, "timestamp": stamp,
                          "traits": {"email": f"{uid}@example.com"}})
            setup.append({"type": "group", "messageId": f"gr-{uid}", "userId": uid, "groupId": f"acct-{a:03d}",
                          "timestamp": stamp, "traits": {"name": f"Account {a}", "plan": "pro"}})
    usage: list[dict[str, Any]] = []
    for r in range(0, w.events, w.per_request):
        # A request is one user's session, as an SDK sends it: one account, a few names, seconds apart.
        a, u = rng.randrange(w.accounts), rng.randrange(w.users_per_account)
        start = now - timedelta(seconds=rng.randrange(1800))
        batch = []
        for i in range(r, min(r + w.per_request, w.events)):
            ts = (start + timedelta(seconds=i - r)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            track: dict[str, Any] = {"type": "track", "messageId": f"m{w.seed}-{i}", "userId": f"u{a:03d}-{u}",
                                     "event": rng.choice(NAMES), "timestamp": ts, "properties": {"n": i}}
            if i % 2:
                track["context"] = {"groupId": f"acct-{a:03d}"}
            batch.append(track)
        usage.append({"batch": batch})
    return [{"batch": setup[i:i + 50]} for i in range(0, len(setup), 50)], usage


def _stream_tips(client: Any, streams: Any, prefix: str, expect: int, timeout: float = 30.0) -> dict[str, str]:
    """``{"<stream ARN>#<shard>": last sequence number}`` of the prefix's day tables, once their streams hold
    ``expect`` records (DynamoDB Local shows a record shortly after its write)."""
    deadline = time.monotonic() + timeout
    while True:
        tips: dict[str, str] = {}
        total = 0
        for _day, table in tables.list_event_tables(client, prefix):
            arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
                it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                while it:
                    resp = streams.get_records(ShardIterator=it, Limit=1000)
                    if not resp["Records"]:
                        break
                    total += len(resp["Records"])
                    tips[f"{arn}#{shard['ShardId']}"] = resp["Records"][-1]["dynamodb"]["SequenceNumber"]
                    it = resp.get("NextShardIterator")
        if total >= expect:
            return tips
        if time.monotonic() > deadline:
            raise TimeoutError(f"{total} of {expect} stream records after {timeout}s")
        time.sleep(0.05)


def _project(runtime_of: Callable[[], LocalRuntime], store: ControlStore, mapping_uuid: str,
             tips: dict[str, str], timeout: float) -> float:
    """Run the runtime until every shard's checkpoint is at its tip; the ``perf_counter`` time it got there."""
    runtime = runtime_of().start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = {f"{c.stream_arn}#{c.shard_id}": c.sequence_number for c in store.checkpoints(mapping_uuid)}
            if all(done.get(k) is not None and int(done[k] or 0) >= int(seq) for k, seq in tips.items()):
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"checkpoints {done} did not reach {tips} within {timeout}s")
            time.sleep(0.02)
    finally:
        runtime.stop()


def _check(client: Any, prefix: str, tenant_id: str) -> tuple[list[str], int]:
    """Compare the view with the order-free reference; the problems found and the usage events stored."""
    events: list[Event] = []
    for _day, table in tables.list_event_tables(client, prefix):
        for item in db.items(client, "scan", TableName=table, ConsistentRead=True):
            tenant, wire = unpack_chunk(item)
            if tenant == tenant_id:
                events += [Event.from_wire(e) for e in wire]
    expected = attribute(events)
    store = ViewStore(client, keys.view_table_name(prefix, VIEW_VERSION))
    problems: list[str] = []
    accounts = sorted({e.group_id for e in events if e.group_id} | set(expected))
    for acct in accounts:
        blobs, _ = store.query_prefix(keys.account_pk(tenant_id, acct), keys.DAY_PREFIX)
        got = {}
        for b in blobs:
            day = DayActivity.from_dict(b.data)
            got[b.sk[len(keys.DAY_PREFIX):]] = {"counts": dict(day.counts), "users": len(day.users)}
        if got != expected.get(acct, {}):
            problems.append(f"account {acct}: view {got} != reference {expected.get(acct, {})}")
    usage = {e.message_id: e for e in events if e.is_usage}
    per_name: dict[tuple[str, str], int] = {}
    for e in usage.values():
        per_name[(e.day, e.catalog_name or "")] = per_name.get((e.day, e.catalog_name or ""), 0) + 1
    catalog, _ = store.query_prefix(keys.catalog_pk(tenant_id), keys.DAY_PREFIX)
    counted = {tuple(b.sk[len(keys.DAY_PREFIX):].split("#", 1)): DayActivity.from_dict(b.data).counts.get("n", 0)
               for b in catalog}
    if counted != per_name:
        problems.append(f"catalog day counters {counted} != events per day and name {per_name}")
    claimed = 0
    claim_prefix = keys.claim_page_pk(tenant_id, "")
    for raw in db.items(client, "scan", TableName=store.table, ConsistentRead=True):
        if raw["pk"]["S"].startswith(claim_prefix) and raw["sk"]["S"].startswith(keys.CLAIM_PAGE_PREFIX):
            claimed += sum(len(d) // 16 for d in decode_body(raw["body"]["B"]).values())
    if claimed != len(usage):
        problems.append(f"{claimed} message ids claimed for {len(usage)} usage events")
    return problems, len(usage)


def _drop_tables(client: Any, prefix: str) -> None:
    for name in list(db.table_names(client)):
        if name.startswith(prefix):
            client.delete_table(TableName=name)


def _add_latency(client: Any, seconds: float) -> None:
    """Every request of ``client`` waits ``seconds`` before it is sent: the network round trip to DynamoDB,
    which DynamoDB Local on the loopback does not have (the wait holds no CPU and no GIL)."""
    if seconds <= 0:
        return

    def wait(**_: Any) -> None:
        time.sleep(seconds)

    client.meta.events.register("before-send", wait)


def _one_factor(endpoint: str, factor: int, w: ParallelWorkload, batch_size: int, timeout: float,
                keep_tables: bool, latency: float, sandboxes: bool, processes: bool = False) -> dict[str, Any]:
    prefix = f"par{uuid.uuid4().hex[:6]}-f{factor}-"
    use_endpoint(endpoint, prefix)  # fresh clients: the latency below dies with them
    client = db.get_client()
    streams = db.get_streams_client()
    _add_latency(client, latency)
    _add_latency(streams, latency)
    tables.ensure_control_table(client, prefix)
    tables.ensure_event_tables(client, prefix, tables.utc_today())
    tables.ensure_view_table(client, prefix, VIEW_VERSION)
    probe: _Probe | None = None
    try:
        tenant = services.tenants().create(f"parallel-{factor}")["tenant_id"]
        ingestor = Ingestor(client, prefix)
        setup, usage = _requests(w, datetime.now(UTC))
        store = ControlStore(client, keys.control_table_name(prefix))
        backend = LocalMappingBackend(store, client, streams)
        probe = _Probe(sandboxes, factor if processes else 0, endpoint, prefix, latency)
        functions = FunctionRegistry()
        functions.register("projector", probe, colour="blue")
        mapping = backend.create(event_source_arn=family_source_arn(prefix), function_name="projector:blue",
                                 **PROJECTOR_MAPPING.create_args(batch_size=batch_size, parallelization_factor=factor,
                                                                 maximum_batching_window_in_seconds=0))

        def runtime() -> LocalRuntime:
            return LocalRuntime(store, client, streams, OPTIONS, functions, only={mapping.uuid})

        records = 0
        for body in setup:
            records += ingestor.ingest(tenant, parse_request(body, "batch")).chunks
        _project(runtime, store, mapping.uuid, _stream_tips(client, streams, prefix, records), timeout)
        first = records
        for body in usage:
            records += ingestor.ingest(tenant, parse_request(body, "batch")).chunks
        tips = _stream_tips(client, streams, prefix, records)
        units, conflicts = probe.stats()
        probe.reset()
        cpu = time.process_time()
        finished = _project(runtime, store, mapping.uuid, tips, timeout)
        cpu = time.process_time() - cpu
        seconds = finished - (probe.first_start or finished)
        units_after, conflicts_after = probe.stats()
        # What the settler schedule does later (untimed, counted apart): fold every pending delta page into the
        # per-account items the check reads. (Under the test settings the batches settled their pages already.)
        settler = handler.new_writer(VIEW_VERSION)
        try:
            settler.settle(tenant, datetime.now(UTC), force=True)
            settle_units = settler.store.stats.write_units
        finally:
            settler.store.close()
        problems, counted = _check(client, prefix, tenant)
        events = w.events
        return {"factor": factor, "prefix": prefix, "tenant": tenant, "events": events, "records": records - first,
                "invocations": probe.invocations,
                "max_concurrent": probe.max_running, "seconds": round(seconds, 3),
                "cpu_s": round(cpu, 2), "load_avg_1m": round(os.getloadavg()[0], 2),
                "events_per_s": round(events / seconds, 1) if seconds > 0 else float("nan"),
                "write_units": round(units_after - units, 1),
                "wcu_per_event": round((units_after - units) / events, 3),
                "settle_write_units": round(settle_units, 1),
                "conflicts": conflicts_after - conflicts, "dead_letters": len(store.dead_letters(mapping.uuid)),
                "usage_events_stored": counted, "exact": not problems, "problems": problems[:5]}
    finally:
        if probe is not None:
            probe.close()
        if not keep_tables:
            _drop_tables(client, prefix)


def measure_parallel(endpoint: str, factors: tuple[int, ...] = (1, 2, 4), *,
                     workload: ParallelWorkload | None = None, batch_size: int = 100, rounds: int = 1,
                     latency_ms: float = 0.0, sandboxes: bool = False, processes: bool = False,
                     timeout: float = 600.0,
                     keep_tables: bool = False) -> dict[str, Any]:
    """Usage events/s of one tenant through the projector at each ``ParallelizationFactor``, and whether
    every event was counted exactly once (see the module docstring).

    Args:
        endpoint: a DynamoDB Local endpoint (``http://127.0.0.1:PORT``).
        factors: the parallelization factors to measure (1..10).
        workload: the tenant's traffic (default :class:`ParallelWorkload`).
        batch_size: records per invocation at most (the factor deals records over that many batches).
        rounds: runs per factor, in alternating order (1, 2, 4, 4, 2, 1, ...); ``events_per_s`` is the median.
        latency_ms: a wait before every DynamoDB request, for the network round trip DynamoDB Local on the
            loopback does not have. 0 measures this machine as it is: DynamoDB Local and the projector share
            its cores, and one batch at a time already keeps them busy (``machine_busy``), so concurrent
            batches have nothing to overlap. A few milliseconds (DynamoDB's own latency is single-digit
            milliseconds) makes a batch wait on the network as a Lambda does, which concurrent batches overlap.
        sandboxes: give each concurrent batch a view writer of its own (its own thread pools), as each Lambda
            sandbox has; False runs what ``streamfold up`` runs, one writer (8 + 8 pool threads) shared by every
            batch of the process.
        processes: run each concurrent batch in a worker process of its own (a pool of ``factor`` processes,
            warm before the clock), each with its own view writer: the sandboxes Lambda runs concurrent batches
            in, each with its own interpreter. Without it every batch shares this process's one interpreter.
        timeout: seconds a phase may take before ``TimeoutError``.
        keep_tables: keep each run's tables (default: deleted after the run).

    Returns:
        ``{"workload", "batch_size", "by_factor": {"<f>": {"events_per_s", "runs": [...], "exact", ...}},
        "speedup": {"<f>": events_per_s / events_per_s at the first factor}}``. The process's endpoint and
        table prefix are restored afterwards.
    """
    w = workload or ParallelWorkload()
    saved = {k: os.environ.get(k) for k in ("STREAMFOLD_DYNAMODB_ENDPOINT", "STREAMFOLD_TABLE_PREFIX")}
    runs: dict[int, list[dict[str, Any]]] = {f: [] for f in factors}
    try:
        for r in range(rounds):
            for f in (factors if r % 2 == 0 else tuple(reversed(factors))):
                runs[f].append(_one_factor(endpoint, f, w, batch_size, timeout, keep_tables, latency_ms / 1000,
                                           sandboxes, processes))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        use_endpoint(None)
    by_factor: dict[str, Any] = {}
    for f, results in runs.items():
        by_factor[str(f)] = {
            "events_per_s": round(statistics.median(x["events_per_s"] for x in results), 1),
            "wcu_per_event": round(statistics.median(x["wcu_per_event"] for x in results), 3),
            "max_concurrent": max(x["max_concurrent"] for x in results),
            "exact": all(x["exact"] for x in results), "runs": results}
    base = by_factor[str(factors[0])]["events_per_s"]
    return {"workload": asdict(w), "batch_size": batch_size, "latency_ms": latency_ms, "sandboxes": sandboxes,
            "processes": processes,
            "by_factor": by_factor,
            "speedup": {k: round(v["events_per_s"] / base, 2) if base else None for k, v in by_factor.items()}}
