"""Benchmark phases that put streamfold's figures beside their ceilings and beside what a user would pick.

Every speed here is a ratio against a reference measured in the same run, on the same DynamoDB Local
(the machines are shared and noisy); write units and bytes are exact.

* :func:`ingest_vs_raw` — events/s through the real HTTP API (durable when acknowledged) against a
  bare boto3 ``BatchWriteItem`` writing one item per event, same number of threads.
* :func:`replay_vs_scan` — the workload is generated straight into a day table (packed chunks, so it
  fits the time); a raw parallel ``Scan`` of that table, then a replay of it into a fresh view version
  run in a child process (its peak RSS is the replay's own), then the query API over the rebuilt view:
  p50/p99 of the account list (each sort order) and of an account page's calls.
* :func:`eventsourcing_baseline` — the Python ``eventsourcing`` library (POPO recorder) folding the same
  events into the same per-account counts: the single-box alternative.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from app import app
from chalicelib import db, keys, pages, services, tables
from chalicelib.chunks import decode_chunk_body, pack_chunks
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.versions import VIEW_VERSION, set_active_view_version
from chalicelib.view_items import load_account
from chalicelib.views import ViewStore
from projections.events import Event
from streams import replay
from streams.functions import PROJECTOR_PATH, FunctionRegistry
from streams.local_backend import LocalMappingBackend
from streams.mapping import family_source_arn
from streams.poller import RuntimeOptions
from streams.rescore import settle_all
from streams.runtime import LocalRuntime
from streams.store import ControlStore
from streams.writer import ViewWriter
from tooling.mappings import DEFAULT_PROJECTOR_MAPPING
from tooling.server import LocalHttpServer
from tooling.stack import use_endpoint

__all__ = ["cost_curve", "eventsourcing_baseline", "generate_events", "ingest_vs_raw", "percentile", "replay_vs_scan"]

FEATURES = ("Report Created", "Dashboard Viewed", "Export Downloaded", "Filter Applied", "Alert Configured",
            "Invite Sent", "Integration Connected", "Comment Added")
SORTS = ("score", "last_seen", "active_users", "name")
REPLAY_CHILD_TIMEOUT_S = 4 * 3600
"""A hang guard, not a speed: the 1,000,000-event replay took 57 minutes on a quiet 2-vCPU machine and passed
the former one-hour guard on a busy one (2026-12-06), which threw the whole run away."""


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile of ``values`` (NaN when empty)."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def generate_events(n: int, accounts: int, users_per_account: int, now: datetime, seed: int = 3,
                    days: int = 7) -> Iterator[dict[str, Any]]:
    """Normalised events as ingest stores them: ``identify`` + ``group`` for every user, then ``n`` tracks
    spread over ``accounts`` and the last ``days`` days (half of them without ``context.groupId``), in
    requests of 100 sent within a minute, each with the client's own timestamp (``originalTimestamp``)
    as an SDK sends it."""
    rng = random.Random(seed)
    received = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for a in range(accounts):
        for u in range(users_per_account):
            uid = f"u{a:05d}-{u:02d}"
            yield {"type": "identify", "messageId": f"id-{uid}", "userId": uid, "anonymousId": None,
                   "timestamp": received, "receivedAt": received, "traits": {"email": f"{uid}@example.com"},
                   "context": {}, "properties": {}}
            yield {"type": "group", "messageId": f"gr-{uid}", "userId": uid, "anonymousId": None,
                   "groupId": f"acct-{a:05d}", "timestamp": received, "receivedAt": received,
                   "traits": {"name": f"Account {a}", "plan": rng.choice(["free", "pro", "enterprise"]),
                              "seats": users_per_account + 2}, "context": {}, "properties": {}}
    sent = now
    for i in range(n):
        if i % 100 == 0:
            sent = now - timedelta(seconds=rng.randrange(days * 86400))
        a = rng.randrange(accounts)
        uid = f"u{a:05d}-{rng.randrange(users_per_account):02d}"
        ts = (sent - timedelta(seconds=rng.randrange(60))).isoformat(timespec="milliseconds")
        ctx: dict[str, Any] = {"library": {"name": "analytics-python", "version": "2.3.2"}}
        if i % 2:
            ctx["groupId"] = f"acct-{a:05d}"
        yield {"type": "track", "messageId": f"m{seed}-{i}", "userId": uid, "anonymousId": None,
               "event": rng.choice(FEATURES), "timestamp": ts.replace("+00:00", "Z"),
               "originalTimestamp": ts.replace("+00:00", "Z"), "receivedAt": received,
               "properties": {"path": f"/app/reports/{rng.randrange(10000)}", "rows": rng.randrange(1000)},
               "context": ctx}


def _fresh_prefix(endpoint: str, name: str) -> str:
    prefix = f"bench{uuid.uuid4().hex[:6]}-{name}-"
    use_endpoint(endpoint, prefix)
    client = db.get_client()
    tables.ensure_control_table(client, prefix)
    tables.ensure_event_tables(client, prefix, tables.utc_today())
    return prefix


def _in_threads(threads: int, jobs: list[Any], fn: Callable[[Any], None]) -> float:
    """Run ``fn`` over ``jobs`` on ``threads`` threads; seconds taken."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, jobs))
    return time.perf_counter() - started


# --- ingest against its ceiling --------------------------------------------------------------------


def ingest_vs_raw(endpoint: str, events: int, threads: int = 4, per_request: int = 100) -> dict[str, Any]:
    """HTTP API events/s (plain JSON client, ``per_request`` events per request) vs BatchWriteItem, 1 item/event."""
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests

    prefix = _fresh_prefix(endpoint, "ceiling")
    client = db.get_client()
    tenant = services.tenants().create("bench-ceiling")
    now = datetime.now(UTC)
    wire = [{k: v for k, v in e.items() if k not in ("receivedAt", "anonymousId")}
            for e in generate_events(events, 200, 5, now, seed=5, days=1) if e["type"] == "track"][:events]
    for i, e in enumerate(wire):
        e["messageId"] = f"ceil-{i}"
    requests_ = [wire[i:i + per_request] for i in range(0, len(wire), per_request)]
    # The API in its own process, as it is deployed (never in its clients' process): the client threads
    # and the server do not share one interpreter lock.
    server = _ServerProcess(endpoint, prefix)
    local = threading.local()
    failures: list[int] = []

    def post(batch: list[dict[str, Any]]) -> None:
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        r = session.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(tenant["write_key"], ""), timeout=60)
        if r.status_code != 200:
            failures.append(r.status_code)

    try:
        post(requests_[0][:1])  # warm-up: imports, clients, the day table
        api_s = _in_threads(threads, requests_, post)
    finally:
        server.stop()

    raw_table = f"{prefix}raw-events"
    tables.ensure_table(client, {"TableName": raw_table, "BillingMode": "PAY_PER_REQUEST",
                                 "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                                 "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
    puts = [[{"PutRequest": {"Item": {"pk": {"S": f"{tenant['tenant_id']}#{e['messageId']}"},
                                      "event": {"S": json.dumps(e, separators=(",", ":"))}}}} for e in wire[i:i + 25]]
            for i in range(0, len(wire), 25)]

    def write(batch: list[dict[str, Any]]) -> None:
        request = {raw_table: batch}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    raw_s = _in_threads(threads, puts, write)
    api_rate, raw_rate = len(wire) / api_s, len(wire) / raw_s
    return {"events": len(wire), "threads": threads, "events_per_request": per_request, "failures": len(failures),
            "api_events_per_s": round(api_rate, 1), "raw_batch_write_events_per_s": round(raw_rate, 1),
            "ingest_vs_raw": round(api_rate / raw_rate, 3), "server": "own process",
            "reference": "boto3 BatchWriteItem, one item per event (25 per call), same threads, same DynamoDB Local"}


class ChildProcess:
    """A ``python -m tooling.ceilings <command> ...`` child process and the protocol the three commands share:
    the child prints a ready line, serves until its stdin closes, and answers a request line (``stats``) with one
    reply line. A thread reads its stdout all along, so a full pipe never blocks the child; lines starting with
    one of ``replies`` (the ready line's prefix first) go to :meth:`reply`, every other line to :meth:`on_line`."""

    replies: tuple[str, ...] = ()
    stop_timeout = 15.0

    def __init__(self, *args: str, start_timeout: float = 120.0, wait: bool = True,
                 env: dict[str, str] | None = None) -> None:
        # ``env``: settings for this child on top of this process's environment (e.g. a settle policy).
        self.proc = subprocess.Popen([sys.executable, "-m", "tooling.ceilings", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **env} if env else None)
        self.command = args[0]
        self.start_timeout = start_timeout
        self.ready_line = ""
        self._lock = threading.Lock()
        self._replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self.started()

    def started(self) -> ChildProcess:
        """Wait for the child's ready line (``wait=False`` starts several children side by side, then waits)."""
        if not self.ready_line:
            self.ready_line = self.reply(timeout=self.start_timeout)
            if not self.ready_line.startswith(self.replies[0]):
                self.kill()
                raise RuntimeError(f"{self.command} child did not start")
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(self.replies):
                self._replies.put(line.strip())
            else:
                self.on_line(line)
        self._replies.put("")  # the child ended

    def on_line(self, line: str) -> None:
        """A line that is no reply (a log line, a report): ignored unless a subclass wants it."""

    def reply(self, timeout: float | None = None) -> str:
        """The child's next reply line ("" once it ended, or after ``timeout`` seconds)."""
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            return ""

    def ask(self, request: str) -> str:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
            return self.reply()

    def stop(self) -> dict[str, float]:
        """Stop the child (its stdin closed) and wait for it; what it counted by its end, for a child that counts
        (:class:`RuntimeProcess`: write units and events), else nothing."""
        self.close()
        return {}

    def close(self, reply_timeout: float | None = None) -> str:
        """Close the child's stdin (it stops), wait for it; with ``reply_timeout``, its last reply line first."""
        with self._lock:
            if self.proc.poll() is not None:
                return ""
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            last = self.reply(timeout=reply_timeout) if reply_timeout is not None else ""
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            return last

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class _ServerProcess(ChildProcess):
    """The local HTTP API in a child process (``python -m tooling.ceilings serve``) until :meth:`stop`."""

    replies = ("http://",)

    def __init__(self, endpoint: str, prefix: str, *, wait: bool = True) -> None:
        super().__init__("serve", endpoint, prefix, wait=wait)

    @property
    def url(self) -> str:
        return self.started().ready_line


def _serve_child(endpoint: str, prefix: str) -> None:
    use_endpoint(endpoint, prefix)
    server = LocalHttpServer(app, port=0)  # bound and listening already
    # The URL line before the server thread starts: its "Serving on ..." banner, printed from that thread,
    # could otherwise land inside this line, and the parent would never read a URL (a hang).
    print(server.url, flush=True)
    server.start()
    try:
        sys.stdin.read()
    finally:
        server.stop()


SETTLER_NICE = 10
"""The local settler process's niceness: on a small machine the projector's batches come first (on AWS the
settler is a function of its own, never in the projector's sandbox)."""


class SettlerProcess(ChildProcess):
    """The settler schedule (``streams.rescore.settle_all`` every ``interval`` seconds) in a child process
    (``python -m tooling.ceilings settle``) at a lower CPU priority, until :meth:`stop`. ``runs``: one
    ``{"at", "seconds", "buckets"}`` per run, as the child reports them."""

    replies = ("settler ready",)
    stop_timeout = 60.0  # the child ends its run's bucket in hand, then exits

    def __init__(self, endpoint: str, prefix: str, interval: float = 15.0, *, wait: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.runs: list[dict[str, Any]] = []
        super().__init__("settle", endpoint, prefix, str(interval), wait=wait, env=env)

    def on_line(self, line: str) -> None:
        if line.startswith("{\"settle_run\""):
            self.runs.append(json.loads(line)["settle_run"])


def _settle_child(endpoint: str, prefix: str, interval: float) -> None:
    use_endpoint(endpoint, prefix)
    os.nice(SETTLER_NICE)
    stop = threading.Event()

    def loop() -> None:
        wait = interval
        while not stop.wait(wait):
            started = time.perf_counter()
            try:
                done = settle_all(stop=stop)
            except Exception as exc:  # the schedule goes on, as `tooling.loops.Periodic` does
                done = {"error": repr(exc)}  # type: ignore[dict-item]
            # A run ends at its budget: while it found due buckets, the next looks again after a second (each run
            # bounded, a backlog still drains); otherwise at the schedule's interval.
            wait = 1.0 if any(isinstance(v, int) and v for v in done.values()) else interval
            print(json.dumps({"settle_run": {"at": time.time(), "seconds": round(time.perf_counter() - started, 2),
                                             "buckets": done}}), flush=True)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    print("settler ready", flush=True)
    try:
        sys.stdin.read()
    finally:
        stop.set()
        thread.join(60)


class RuntimeProcess(ChildProcess):
    """The local mapping runtime (``GetRecords`` every 0.25 s, the functions it invokes) in a child process
    (``python -m tooling.ceilings runtime``), as on AWS, where the projector runs in Lambda, apart from the API
    and from the clients: a benchmark's load generator and probe watcher then do not share its interpreter (its
    GIL) with the projector. ``functions``: ``"projector"`` (the projector function, ``projector:blue``) and/or
    ``"naive:<table>"`` / ``"naive-membership:<table>"`` (:func:`naive_handler` into that table). The mappings
    themselves are in the control table (the parent creates them). :meth:`naive_stats` asks the child for the
    naive handler's ``{"units", "events"}`` so far; :meth:`stop` stops the runtime (after the invocation in
    flight; a naive handler cancels its rest) and returns the final ones."""

    replies = ("runtime ready", '{"units"')
    stop_timeout = 60.0

    def __init__(self, endpoint: str, prefix: str, functions: Iterable[str], poll_interval: float = 0.25,
                 stop_timeout: float = 600.0, *, wait: bool = True, env: dict[str, str] | None = None) -> None:
        self.poll_interval = poll_interval
        self.runtime_stop_timeout = stop_timeout
        super().__init__("runtime", endpoint, prefix, ",".join(functions), str(poll_interval), str(stop_timeout),
                         wait=wait, env=env)

    def naive_stats(self) -> dict[str, float]:
        return dict(json.loads(self.ask("stats")))

    def stop(self) -> dict[str, float]:
        """Stop the runtime (the child prints the final counts once it stopped) and the child."""
        line = self.close(reply_timeout=self.runtime_stop_timeout + 60)
        return dict(json.loads(line)) if line.startswith("{") else {"units": 0.0, "events": 0}


def _runtime_child(endpoint: str, prefix: str, functions: str, poll_interval: float, stop_timeout: float) -> None:
    use_endpoint(endpoint, prefix)
    client = db.get_client()
    registry = FunctionRegistry()
    naive_fns: list[Any] = []
    for spec in functions.split(","):
        kind, _, table = spec.partition(":")
        if kind == "projector":
            name, colour = DEFAULT_PROJECTOR_MAPPING["function_name"].split(":")
            registry.register(name, PROJECTOR_PATH, colour=colour)
        elif kind in ("naive", "naive-membership"):
            fn = naive_handler(client, table, membership=kind == "naive-membership")
            registry.register("naive", fn)
            naive_fns.append(fn)
        else:
            raise SystemExit(f"unknown function {spec!r}")

    def counts() -> str:
        return json.dumps({"units": sum(sum(f.units) for f in naive_fns),
                           "events": sum(f.events[0] for f in naive_fns)})

    runtime = LocalRuntime(ControlStore(client, keys.control_table_name(prefix)), client, db.get_streams_client(),
                           RuntimeOptions(poll_interval=poll_interval), registry).start()
    print("runtime ready", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(counts(), flush=True)
    finally:
        for f in naive_fns:
            f.cancel.set()  # the baseline's in-flight batch ends now (streamfold's runs to its end)
        runtime.stop(timeout=stop_timeout)
        print(counts(), flush=True)


# --- replay against a raw scan, then the query API over the rebuilt view ---------------------------


def _write_chunks(client: Any, table: str, tenant_id: str, events: Iterator[dict[str, Any]], now: datetime,
                  per_chunk: int = 100, threads: int = 4) -> int:
    batch: list[dict[str, Any]] = []
    puts: list[list[dict[str, Any]]] = []
    pending: list[dict[str, Any]] = []
    n = 0
    for e in events:
        batch.append(e)
        n += 1
        if len(batch) == per_chunk:
            pending += [{"PutRequest": {"Item": it}} for it in pack_chunks(tenant_id, batch, now)]
            batch = []
        if len(pending) >= 25:
            puts.append(pending[:25])
            pending = pending[25:]
    if batch:
        pending += [{"PutRequest": {"Item": it}} for it in pack_chunks(tenant_id, batch, now)]
    puts += [pending[i:i + 25] for i in range(0, len(pending), 25)]

    def write(chunk: list[dict[str, Any]]) -> None:
        request = {table: chunk}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    _in_threads(threads, puts, write)
    return n


def _raw_scan(client: Any, table: str, segments: int) -> tuple[int, int, float]:
    """Items and events (``n`` attribute) of a parallel scan, and the seconds it took."""
    counts: list[tuple[int, int]] = []

    def one(segment: int) -> None:
        items = events = 0
        for it in db.items(client, "scan", TableName=table, Segment=segment, TotalSegments=segments):
            items += 1
            events += int(it.get("n", {}).get("N", "0"))
        counts.append((items, events))

    seconds = _in_threads(segments, list(range(segments)), one)
    return sum(c[0] for c in counts), sum(c[1] for c in counts), seconds


class TreeRss:
    """The peak of a process tree's summed resident set (the process and its descendants, by psutil, every
    ``interval`` seconds) while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mb = 0.0
        self._by_process: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak_by_process_mb(self) -> list[float]:
        """Each process's own peak (the replay's first, then its workers), MB."""
        return [round(v, 1) for _, v in sorted(self._by_process.items())]

    def _run(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            while not self._stop.is_set():
                now: dict[int, float] = {}
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # ended meanwhile
                        now[proc.pid] = proc.memory_info().rss / 2**20
                self.peak_mb = max(self.peak_mb, sum(now.values()))
                for p, mb in now.items():
                    self._by_process[p] = max(self._by_process.get(p, 0.0), mb)
                self._stop.wait(self.interval)


class CpuMeter:
    """CPU use of named processes and of the whole machine between two :meth:`snapshot` calls (psutil): where a
    stepped load's cores go (the projector's runtime, the API, the settler, DynamoDB Local, this process), so a
    step that does not hold says whether the machine ran out of cores or a process waited."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.procs[name] = psutil.Process(pid)

    @staticmethod
    def listening_pid(endpoint: str) -> int | None:
        """The process listening on ``endpoint``'s port (DynamoDB Local), if this user may see it."""
        port = int(endpoint.rsplit(":", 1)[1].strip("/"))
        with contextlib.suppress(psutil.AccessDenied):
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                    return int(conn.pid)
        return None

    def snapshot(self) -> dict[str, float]:
        out = {"at": time.perf_counter()}
        times = psutil.cpu_times()
        out["machine_busy"] = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                out[name] = t.user + t.system
        return out

    @staticmethod
    def cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """Cores each process used on average between two snapshots (``machine``: all processes)."""
        span = max(1e-9, after["at"] - before["at"])
        return {("machine" if k == "machine_busy" else k): round((after[k] - before[k]) / span, 2)
                for k in after if k != "at" and k in before}


def replay_vs_scan(endpoint: str, events: int, accounts: int, *, users_per_account: int = 3,
                   query_samples: int = 40, raw_items_per_s: float | None = None,
                   workers: int = 1) -> dict[str, Any]:
    """Generate, scan, replay (child process: rate and peak RSS), then query the rebuilt view.

    ``workers``: the rebuild's fold processes (``replay view --workers``). The peak RSS is the sum of the replay's
    processes' resident sets (its own and its workers', sampled every 0.25 s from ``/proc``), not one process's
    ``ru_maxrss`` (a child started by fork inherits its parent's as its start).

    The write floor: the rebuilt view's items are counted (a ``Scan`` count of its table), and the replay's
    writes are reported per final item (1.0 = each item written once). ``raw_items_per_s`` is the same run's
    raw ``BatchWriteItem`` rate (items/s, :func:`ingest_vs_raw`): writing every final item once at that rate
    takes ``final items / raw_items_per_s`` seconds, the floor of any replay that writes per-account state."""
    prefix = _fresh_prefix(endpoint, "replay")
    client = db.get_client()
    tenant = services.tenants().create("bench-replay")
    now = datetime.now(UTC)
    table = keys.events_table_name(prefix, now)
    started = time.perf_counter()
    stored = _write_chunks(client, table, tenant["tenant_id"],
                           generate_events(events, accounts, users_per_account, now), now)
    generate_s = time.perf_counter() - started
    segments = replay.SCAN_SEGMENTS if hasattr(replay, "SCAN_SEGMENTS") else 1
    chunks, scanned, scan_s = _raw_scan(client, table, segments)
    version = VIEW_VERSION + 100  # a version nobody else uses
    proc = subprocess.Popen([sys.executable, "-m", "tooling.ceilings", "replay", endpoint, prefix, str(version),
                             str(workers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeRss(proc.pid) as rss:
        try:
            stdout, stderr = proc.communicate(timeout=REPLAY_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"replay child failed: {stderr[-2000:]}")
    child = json.loads(stdout.strip().splitlines()[-1])
    scan_rate = scanned / scan_s
    out: dict[str, Any] = {
        "events": stored, "accounts": accounts, "chunks": chunks, "generate_s": round(generate_s, 1),
        "scan_segments": segments, "scan_events_per_s": round(scan_rate, 1),
        "replay_events_per_s": round(child["events_per_s"], 1), "replay_seconds": round(child["seconds"], 1),
        "replay_vs_scan": round(child["events_per_s"] / scan_rate, 3), "replay_rss_mb": round(rss.peak_mb, 1),
        "replay_rss_by_process_mb": rss.peak_by_process_mb(), "replay_workers": child.get("workers"),
        "replay_write_units": child["write_units"], "replay_writes": child["writes"],
        "replay_in_memory": child.get("buffered"), "replay_flushes": child.get("flushes"),
        "replay_batches": child.get("batches"), "replay_partitions": child.get("partitions"),
        "replay_passes_s": child.get("passes_s"),
    }
    final = _count_items(client, keys.view_table_name(prefix, version))
    out["final_items"] = final
    out["replay_writes_per_final_item"] = round(child["writes"] / final, 3) if final else float("nan")
    if raw_items_per_s:
        floor_s = final / raw_items_per_s
        out.update({"raw_batch_write_items_per_s": raw_items_per_s, "write_floor_s": round(floor_s, 1),
                    "write_floor_events_per_s": round(stored / floor_s, 1) if floor_s else float("nan")})
    # The floor on the view's own schema: the rebuilt view's items (a sample), written again with plain
    # BatchWriteItem into an empty table like it (its listing indexes and stream), in the same threads as the
    # ingest reference. A rebuild writes each final item about once, so final items / this rate is what no
    # rebuild into this table can beat on this DynamoDB.
    view_rate = _view_write_rate(client, prefix, version)
    if view_rate:
        view_floor_s = final / view_rate
        out.update({"view_batch_write_items_per_s": round(view_rate, 1), "view_write_floor_s": round(view_floor_s, 1),
                    "view_write_floor_events_per_s": round(stored / view_floor_s, 1) if view_floor_s else float("nan"),
                    "replay_vs_view_floor": round(view_floor_s / child["seconds"], 3) if child["seconds"] else None})
    set_active_view_version(client, keys.control_table_name(prefix), version)
    services.reset()
    out["query"] = _query_latency(endpoint, prefix, tenant, query_samples)
    return out


def _view_write_rate(client: Any, prefix: str, version: int, sample: int = 20_000, threads: int = 4) -> float:
    """Items/s of plain ``BatchWriteItem`` (25 a request, ``threads`` threads) of up to ``sample`` items of view
    ``version`` into a fresh table of the view's schema (dropped afterwards)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": keys.view_table_name(prefix, version), "Limit": 1000}
    while len(items) < sample:
        resp = client.scan(**kwargs)
        items += resp["Items"]
        if not resp.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    items = items[:sample]
    if not items:
        return 0.0
    table = tables.ensure_view_table(client, prefix, version + 1)
    try:
        chunks = [items[i:i + 25] for i in range(0, len(items), 25)]
        store = ViewStore(client, table)
        seconds = _in_threads(threads, chunks, store.batch_write_raw)
        return len(items) / seconds
    finally:
        client.delete_table(TableName=table)


def _count_items(client: Any, table: str) -> int:
    """Items of a table (index copies are not items): ``DescribeTable``'s ``ItemCount``, which DynamoDB Local keeps
    exact at every write (AWS refreshes it about every six hours; the bench runs on DynamoDB Local). A
    ``Select=COUNT`` ``Scan`` of a rebuilt 1M-event view held DynamoDB Local's SQLite thread for over ten minutes
    (2026-12-07: two runs stopped there)."""
    return int(client.describe_table(TableName=table)["Table"]["ItemCount"])


def _query_latency(endpoint: str, prefix: str, tenant: dict[str, str], samples: int) -> dict[str, Any]:
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests

    server = _ServerProcess(endpoint, prefix)  # the API alone in its process, as deployed
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {tenant['api_token']}"
    out: dict[str, Any] = {}
    try:
        def timed(path: str) -> tuple[float, Any]:
            t = time.perf_counter()
            r = session.get(f"{server.url}{path}", timeout=30)
            ms = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            return ms, r.json()

        _, first = timed("/api/accounts?limit=50")  # warm-up
        ids = [a["account_id"] for a in first["items"]]
        all_ms: list[float] = []
        for sort in SORTS:
            ms = [timed(f"/api/accounts?limit=50&sort={sort}")[0] for _ in range(samples)]
            all_ms += ms
            out[f"accounts_sort_{sort}"] = {"p50_ms": round(percentile(ms, 50), 2),
                                            "p99_ms": round(percentile(ms, 99), 2)}
        page: list[float] = []
        for i in range(samples):
            aid = ids[i % len(ids)]
            for suffix in ("", "/score", "/usage?days=30", "/users", "/timeline"):
                page.append(timed(f"/api/accounts/{aid}{suffix}")[0])
        out["account_page_calls"] = {"p50_ms": round(percentile(page, 50), 2), "p99_ms": round(percentile(page, 99), 2)}
        out["p99_ms"] = round(percentile(all_ms + page, 99), 2)
        out["samples"] = len(all_ms) + len(page)
        # The ceiling, same run: the bare index Query of one page of 50 (boto3, no HTTP, no API).
        client = db.get_client()
        table = services.query().table
        raw: list[float] = []
        for _ in range(samples):
            t = time.perf_counter()
            client.query(TableName=table, IndexName="by_score", KeyConditionExpression="gpk = :g", Limit=50,
                         ExpressionAttributeValues={":g": {"S": keys.accounts_gpk(tenant["tenant_id"])}})
            raw.append((time.perf_counter() - t) * 1000)
        out["raw_index_query"] = {"p50_ms": round(percentile(raw, 50), 2), "p99_ms": round(percentile(raw, 99), 2)}
    finally:
        server.stop()
    return out


def _replay_child(endpoint: str, prefix: str, version: int, workers: int = 1) -> None:
    use_endpoint(endpoint, prefix)
    started = time.perf_counter()
    stats = replay.rebuild(db.get_client(), prefix, version, workers=workers)
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps({"events": stats.events, "seconds": seconds, "events_per_s": stats.events / seconds,
                      "rss_mb": rss_mb, "write_units": stats.write_units, "writes": stats.writes,
                      "buffered": stats.buffered, "flushes": stats.flushes, "batches": stats.batches,
                      "partitions": stats.partitions, "passes_s": stats.seconds, "workers": stats.workers}))


# --- lag under sustained load, ours and the naive design ----------------------------------------


def naive_handler(client: Any, table: str, *,
                  membership: bool = False) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The design a user would build first with the same packages: Powertools ``BatchProcessor`` calling one
    ``UpdateItem`` per event per view item (counter per account/day/name, ``last_seen`` on account and user,
    and a per-account summary marker the lag probe looks for). Not idempotent; counted for comparison.

    ``membership``: also what that user adds for tracks without ``context.groupId`` (the spread phases): a
    ``group`` sets ``account_id`` on the user's item (one ``UpdateItem``), a usage event without ``groupId``
    reads it back (a strongly consistent ``GetItem``, read units, not counted). Without it, such an event
    counts for an ``unattributed`` account. ``handler.units`` holds the write units of every write,
    ``handler.events[0]`` the events it was given; once ``handler.cancel`` is set, it skips the rest of its
    records (a benchmark stopping its runtime need not wait for a backlog)."""
    # deferred: only this baseline uses Powertools' batch utility (a replay child need not import it)
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    units: list[float] = []
    events = [0]
    cancel = threading.Event()

    def on_record(record: Any) -> None:
        image = record.dynamodb.new_image
        tenant = image["tenant"]
        for ev in decode_chunk_body(image["body"], fmt=image.get("fmt")):
            if cancel.is_set():
                return
            events[0] += 1
            user = {"pk": {"S": keys.user_pk(tenant, ev.get("userId") or "anon")}, "sk": {"S": keys.HEAD_SK}}
            if membership and ev.get("type") == "group" and ev.get("groupId"):
                resp = client.update_item(TableName=table, Key=user, UpdateExpression="SET account_id = :a",
                                          ExpressionAttributeValues={":a": {"S": ev["groupId"]}},
                                          ReturnConsumedCapacity="TOTAL")
                units.append(float(resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)))
                continue
            if ev.get("type") not in ("track", "page", "screen"):
                continue
            acct = (ev.get("context") or {}).get("groupId")
            if not acct and membership:
                item = client.get_item(TableName=table, Key=user, ProjectionExpression="account_id",
                                       ConsistentRead=True).get("Item") or {}
                acct = item.get("account_id", {}).get("S")
            acct = acct or "unattributed"
            pk = keys.account_pk(tenant, acct)
            for key, expr, values in (
                ({"pk": {"S": pk}, "sk": {"S": f"DAY#{ev['timestamp'][:10]}#{ev.get('event')}"}}, "ADD events :one",
                 {":one": {"N": "1"}}),
                ({"pk": {"S": pk}, "sk": {"S": keys.SUMMARY_SK}}, "SET last_seen = :t", {":t": {"S": ev["timestamp"]}}),
                (user, "SET last_seen = :t", {":t": {"S": ev["timestamp"]}}),
            ):
                resp = client.update_item(TableName=table, Key=key, UpdateExpression=expr,
                                          ExpressionAttributeValues=values, ReturnConsumedCapacity="TOTAL")
                units.append(float(resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0)))

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(process_partial_response(event=event, record_handler=on_record,
                                             processor=BatchProcessor(event_type=EventType.DynamoDBStreams),
                                             context=context))

    handler.units = units  # type: ignore[attr-defined]
    handler.events = events  # type: ignore[attr-defined]
    handler.cancel = cancel  # type: ignore[attr-defined]
    return handler


AtRest = Callable[[str, dict[str, Any], Any, str], dict[str, Any]]
"""``at_rest(url, tenant, client, view)``: a measurement run on the lag-under-load stack after its warm-up."""


_probe_stores: dict[tuple[int, str], ViewStore] = {}


def _probe_store(client: Any, view_table: str) -> ViewStore:
    """One view store per client and table for the probe reads (a store per look started thread pools anew)."""
    key = (id(client), view_table)
    store = _probe_stores.get(key)
    if store is None or store.client is not client:
        store = _probe_stores[key] = ViewStore(client, view_table, workers=2)
    return store


def probe_visible(client: Any, view_table: str, tenant_id: str, account_ids: Iterable[str], *,
                  cache: pages.PageCache | None = None) -> set[str]:
    """The accounts of ``account_ids`` whose usage a user of the query API sees now.

    What ``GET /api/accounts/{id}/usage`` serves: the account's day items merged with its bucket's pending delta
    pages (``chalicelib.view_items.load_account`` with ``pending_for``, as ``chalicelib.query`` reads them), so
    a probe is visible once the batch holding its track is written, settled or not. This check must follow what
    the query API serves: if the API comes to read another layout, change this function with it, or the bench
    measures something no user sees. Every lag figure of the bench's spread phases goes through here. (A design
    without delta pages, the naive one, is visible through the same read: its items are plain counters.)"""
    store = _probe_store(client, view_table)
    seen: set[str] = set()
    wanted = list(dict.fromkeys(account_ids))
    if view_table.endswith("naive-view"):
        for a in wanted:
            found = db.batch_get(client, view_table, [{"pk": {"S": keys.account_pk(tenant_id, a)},
                                                       "sk": {"S": keys.SUMMARY_SK}}], projection="pk")
            if found:
                seen.add(a)
        return seen
    # The read ``pending_for`` does for one account, done once per bucket for all the probes in it: a watcher of
    # 100 probes must not Query and decode a bucket's pending pages 100 times a round (its CPU and DynamoDB
    # Local's are the projector's on this machine; on AWS the API's reads run apart and scale).
    by_bucket: dict[int, list[str]] = {}
    for a in wanted:
        by_bucket.setdefault(pages.bucket_of(a), []).append(a)
    # ``cache``: a watcher that looks again and again decodes each page once (pages are written once; which are
    # pending is asked of the table on every look, so what counts as visible is the same).
    found_pages = (cache.pending(store, tenant_id, by_bucket) if cache is not None
                   else pages.pending_pages(store, tenant_id, by_bucket, consistent=True))
    for bucket, group in by_bucket.items():
        pending = pages.derive(tenant_id, found_pages[bucket], accounts=set(group), users=set())
        for a in group:
            state, _, _ = load_account(store, tenant_id, a, pending=pending)
            if any(day.count() for day in state.days.values()):
                seen.add(a)
    return seen


def lag_under_load(endpoint: str, rate: float, seconds: float, accounts: int, *, naive: bool = False,
                   per_request: int = 100, at_rest: AtRest | None = None) -> dict[str, Any]:
    """Sustained ``rate`` events/s for ``seconds`` over ``accounts`` through the HTTP API, mappings polling
    4 times a second; each request carries one probe event for a fresh account, and the lag of a request is
    from its HTTP 200 to that account's SUMMARY item existing in the view.

    ``at_rest``: run after the warm-up, before the load (the lag at rest of ``streamfold bench``: the same
    stack and mapping, already warm, so it needs no warm-up of its own); its result is ``out["at_rest"]``
    with the runtime's ``poll_interval_s``."""
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests


    prefix = _fresh_prefix(endpoint, "naive" if naive else "load")
    client = db.get_client()
    view = tables.ensure_view_table(client, prefix, VIEW_VERSION)
    tenant = services.tenants().create("bench-load")
    store = ControlStore(client, keys.control_table_name(prefix))
    settings = dict(DEFAULT_PROJECTOR_MAPPING)
    functions = ["projector"]
    if naive:
        functions = [f"naive:{view}"]
        settings["function_name"] = "naive"
    LocalMappingBackend(store, client, db.get_streams_client()).create(
        event_source_arn=family_source_arn(prefix), **settings)
    # As deployed: the mapping runtime with its functions (Lambda) and the API each in a process of their own,
    # apart from this one's client and probe watcher.
    # Both children start side by side (each imports the app: a second or two), then the runtime is waited for.
    runtime = RuntimeProcess(endpoint, prefix, functions, poll_interval=0.25, wait=False)
    server: Any = None
    rng = random.Random(17)
    users = accounts
    try:
        server = _ServerProcess(endpoint, prefix, wait=False)
        runtime.started()
        warm_s = _warm_up(server.url, tenant, client, view, accounts, per_request, naive=naive)
        rest = None if at_rest is None else {**at_rest(server.url, tenant, client, view),
                                             "poll_interval_s": runtime.poll_interval}
    except BaseException:
        if server is not None:
            server.stop()
        runtime.stop()
        raise
    pending: dict[str, float] = {}
    lags: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    cache = pages.PageCache()

    def watch() -> None:
        while not stop.is_set() or pending:
            with lock:
                todo = list(pending)[:100]
            if todo:
                if naive:  # the naive handler writes a per-account marker for its probes
                    found = db.batch_get(client, view, [{"pk": {"S": keys.account_pk(tenant["tenant_id"], a)},
                                                         "sk": {"S": keys.SUMMARY_SK}} for a in todo], projection="pk")
                    seen = {f["pk"]["S"].rsplit("#A#", 1)[1] for f in found}
                else:  # what the query API serves: items plus pending delta pages
                    seen = probe_visible(client, view, tenant["tenant_id"], todo, cache=cache)
                now_ = time.perf_counter()
                with lock:
                    for a in seen:
                        lags.append((now_ - pending.pop(a)) * 1000)
            if stop.is_set() and time.perf_counter() > deadline_drain:
                return
            time.sleep(0.02)

    deadline_drain = float("inf")
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    session = requests.Session()
    sent = requests_sent = 0
    interval = per_request / rate
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            due = started + requests_sent * interval
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            probe = f"probe-{requests_sent:06d}"
            batch: list[dict[str, Any]] = [
                {"type": "track", "userId": f"u{rng.randrange(users)}", "event": rng.choice(FEATURES),
                 "timestamp": ts, "messageId": f"load-{requests_sent}-{i}",
                 "context": {"groupId": probe if i == 0 else f"acct-{rng.randrange(accounts):05d}"}}
                for i in range(per_request)]
            r = session.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(tenant["write_key"], ""),
                             timeout=60)
            r.raise_for_status()
            with lock:
                pending[probe] = time.perf_counter()
            requests_sent += 1
            sent += per_request
        send_s = time.perf_counter() - started
        deadline_drain = time.perf_counter() + 60
        stop.set()
        watcher.join(65)
    finally:
        server.stop()
        final = runtime.stop()
    out: dict[str, Any] = {"design": "naive per-event UpdateItem" if naive else "streamfold",
                           "target_events_per_s": rate, "achieved_events_per_s": round(sent / send_s, 1),
                           "seconds": round(send_s, 1), "accounts": accounts, "users": users,
                           "warm_up_s": round(warm_s, 1), "requests": requests_sent,
                           "probes_seen": len(lags), "probes_lost": len(pending),
                           "p50_ms": round(percentile(lags, 50), 1), "p99_ms": round(percentile(lags, 99), 1),
                           "max_ms": round(max(lags), 1) if lags else None,
                           "samples_ms": [round(x, 1) for x in lags]}
    if rest is not None:
        out["at_rest"] = rest
    if naive:
        out["write_units_per_event"] = round(final["units"] / max(1, int(final["events"])), 3)
    return out


def _warm_up(url: str, tenant: dict[str, Any], client: Any, view: str, accounts: int, per_request: int,
             timeout: float = 900.0, *, naive: bool = False) -> float:
    """Before the clock: every account and one user per account seen once (one track each, through the API
    and the mappings), so the load measures a warm view ("10,000 accounts, then 1,000 events/s"). Returns
    the seconds it took; waits until the last account is visible (``probe_visible``; the naive design: its
    SUMMARY marker)."""
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests

    started = time.perf_counter()
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    events: list[dict[str, Any]] = [{"type": "track", "userId": f"u{a}", "event": FEATURES[0], "timestamp": ts,
                                     "messageId": f"warm-{a}", "context": {"groupId": f"acct-{a:05d}"}}
                                    for a in range(accounts)]
    session = requests.Session()
    for i in range(0, len(events), per_request):
        session.post(f"{url}/v1/batch", json={"batch": events[i:i + per_request]}, auth=(tenant["write_key"], ""),
                     timeout=60).raise_for_status()
    last = f"acct-{accounts - 1:05d}"
    while not (db.batch_get(client, view, [{"pk": {"S": keys.account_pk(tenant["tenant_id"], last)},
                                            "sk": {"S": keys.SUMMARY_SK}}], projection="pk") if naive
               else probe_visible(client, view, tenant["tenant_id"], [last])):
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"warm-up: {accounts} accounts not projected within {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


# --- cost against events per account-day ----------------------------------------------------------


def cost_curve(endpoint: str, sizes: list[int], *, chunk: int = 10, batch: int = 100) -> list[dict[str, Any]]:
    """View write units per event for one account and one event name in one UTC day, at each volume in
    ``sizes``: live-like stream batches (``batch`` records of ``chunk`` events), users joined by ``group``
    and tracks without ``context.groupId``. ``marginal`` is the last full batch's cost per event: flat if
    no item grows through the day. ``claims`` is the share spent on message claims (the exactly-once index)."""
    out = []
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for n in sizes:
        prefix = _fresh_prefix(endpoint, f"curve{n}")
        client = db.get_client()
        view = tables.ensure_view_table(client, prefix, VIEW_VERSION)
        writer = ViewWriter(ViewStore(client, view), ScoreModelStore(client, keys.control_table_name(prefix)))
        users = [f"u{i}" for i in range(50)]
        wire = [{"messageId": f"g-{u}", "type": "group", "userId": u, "groupId": "busy",
                 "timestamp": day.isoformat()} for u in users]
        # As ingest stores an SDK's call: the corrected timestamp and the client's own.
        stamps = [(day + timedelta(seconds=i * 86_000 // n)).isoformat() for i in range(n)]
        wire += [{"messageId": f"e{i}", "type": "track", "userId": users[i % 50], "event": "Report Viewed",
                  "timestamp": stamps[i], "originalTimestamp": stamps[i]} for i in range(n)]
        events = [Event.from_wire(w) for w in wire]
        chunks = [(f"t|c{i}", events[i:i + chunk]) for i in range(0, len(events), chunk)]
        per_batch: list[float] = []
        started = time.perf_counter()
        total_before = writer.store.stats.write_units
        for b in range(0, len(chunks), batch):
            work = chunks[b:b + batch]
            before = writer.store.stats.write_units
            writer.record(None, day + timedelta(hours=23), chunks={"t-curve": work})
            per_batch.append((writer.store.stats.write_units - before) / sum(len(e) for _, e in work))
        units = writer.store.stats.write_units - total_before
        full = per_batch[:-1] if len(per_batch) > 1 else per_batch
        out.append({"events_per_account_day": n, "events": len(events), "batches": len(per_batch),
                    "wcu_per_event": round(units / len(events), 4), "marginal_wcu_per_event": round(full[-1], 4),
                    "min_batch_wcu_per_event": round(min(full), 4), "max_batch_wcu_per_event": round(max(full), 4),
                    "seconds": round(time.perf_counter() - started, 1)})
    return out


# --- the single-box alternative --------------------------------------------------------------------


def eventsourcing_baseline(events: int, accounts: int) -> dict[str, Any]:
    """The ``eventsourcing`` library (POPO recorder) folding the same tracks into per-account counts."""
    # deferred: heavy optional dependency, a baseline only the benchmark uses
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event  # deferred: as the line above

    class AccountUsage(Aggregate):  # type: ignore[misc]
        def __init__(self, account_id: str) -> None:
            self.account_id = account_id
            self.counts: dict[str, int] = {}

        @event("Used")  # type: ignore[misc]
        def used(self, name: str) -> None:
            self.counts[name] = self.counts.get(name, 0) + 1

    class Usage(Application):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
            self.ids: dict[str, Any] = {}

        def track(self, account_id: str, name: str) -> None:
            if account_id not in self.ids:
                agg = AccountUsage(account_id)
                self.ids[account_id] = agg.id
            else:
                agg = self.repository.get(self.ids[account_id])
            agg.used(name)
            self.save(agg)

    tracks = [(e["context"].get("groupId") or "acct-" + e["userId"][1:6], e["event"])
              for e in generate_events(events, accounts, 1, datetime.now(UTC), seed=9) if e["type"] == "track"]
    app_ = Usage()
    started = time.perf_counter()
    for account_id, name in tracks:
        app_.track(account_id, name)
    seconds = time.perf_counter() - started
    total = sum(sum(app_.repository.get(i).counts.values()) for i in app_.ids.values())
    return {"library": "eventsourcing (POPO recorder, in memory)", "events": len(tracks), "counted": total,
            "events_per_s": round(len(tracks) / seconds, 1), "seconds": round(seconds, 2),
            "note": "one process, no durability across restarts, no stream, no per-tenant API"}


def summarise(report: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a ``streamfold bench`` report (the issue's ``summary`` keys)."""
    ingest = report["ingest"]["by_batch_size"]["100"]["wcu_per_event"]
    projection = report["projector"]["live"]["wcu_per_event"]
    ceilings = report.get("ceilings", {})
    rep = ceilings.get("replay", {})
    spread = report["projector"].get("spread", {})
    keep = report.get("keep_up", {})
    nan = float("nan")
    return {
        "append_wru_per_event": ingest,
        "projection_wru_per_event": projection,
        "total_wru_per_event": round(ingest + projection, 4),
        "ingest_vs_raw": ceilings.get("ingest", {}).get("ingest_vs_raw", float("nan")),
        "lag_p99_ms": report.get("load", {}).get("streamfold", {}).get("p99_ms", float("nan")),
        "replay_vs_scan": rep.get("replay_vs_scan", float("nan")),
        "replay_events_per_s": rep.get("replay_events_per_s", float("nan")),
        "replay_rss_mb": rep.get("replay_rss_mb", float("nan")),
        "query_p99_ms": rep.get("query", {}).get("p99_ms", float("nan")),
        "projection_wru_per_event_spread": spread.get("wcu_per_event", nan),
        "projection_wru_per_event_spread_tracks": spread.get("tracks", {}).get("wcu_per_event", nan),
        "live_events_per_s_spread": keep.get("streamfold", {}).get("highest_sustained_events_per_s", nan),
        "naive_live_events_per_s_spread": keep.get("naive", {}).get("highest_sustained_events_per_s", nan),
        "replay_writes_per_final_item": rep.get("replay_writes_per_final_item", nan),
        "parallel_speedup_factor_2": report.get("parallel", {}).get("speedup", {}).get("2") or nan,
    }


def format_ms(v: float | None) -> str:
    """A latency as the reports print it; a probe that was never seen (None, NaN) is "not reached"."""
    return "not reached" if v is None or v != v else f"{v:,.0f} ms"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def verdicts(report: dict[str, Any]) -> list[str]:
    """The goals of docs/PERFORMANCE.md against this run, as Markdown table rows (goal, figure, verdict)."""
    p = report["projector"]
    s = report.get("summary") or summarise(report)
    rows = ["| line | goal | figure | verdict |", "| --- | --- | --- | --- |",
            f"| append write units per event (100 per request) | — | {s['append_wru_per_event']:.3f} | — |"]
    live = p["live"]["wcu_per_event"]
    rows.append(f"| projection write units per event (100-record live batches) | ≤ 0.5 | {live:.3f} | "
                f"{_verdict(live <= 0.5)} |")
    if "spread" in p:
        sp = p["spread"]
        combined = sp["wcu_per_event"]
        rows.append(f"| projection write units per event, spread ({sp['accounts']:,} accounts joined by `group`, "
                    f"{sp['tracks']['events']:,} tracks without `groupId`, 100-record batches) | ≤ 0.5 | "
                    f"{combined:.3f} (identity {sp['identity']['wcu_per_event']:.3f}, tracks "
                    f"{sp['tracks']['wcu_per_event']:.3f}; naive {sp['baseline_wcu_per_event']:.1f}) | "
                    f"{_verdict(combined <= 0.5)} |")
    rows.append(f"| total per event (append + claims + projection) | — | {s['total_wru_per_event']:.3f} | — |")
    for name, label in (("live_small_batches", "10-record batches"), ("one_record_invocations",
                                                                       "one-record invocations (usage alone)")):
        if name in p:
            r = p[name]["ratio_vs_baseline"]
            rows.append(f"| projection at {label} vs per-event baseline ({p[name]['baseline_wcu_per_event']:.1f}) "
                        f"| ≤ 1.0× | {p[name]['wcu_per_event']:.3f} ({r:.2f}×) | {_verdict(r <= 1.0)} |")
    curve = p.get("cost_curve") or []
    if curve:
        costs = [c["wcu_per_event"] for c in curve]
        spread = (max(costs) - min(costs)) / min(costs) * 100
        lo, hi = curve[0]["events_per_account_day"], curve[-1]["events_per_account_day"]
        rows.append(f"| cost flat from {lo:,} to {hi:,} events per account-day | within ±25 % | "
                    f"{min(costs):.3f}–{max(costs):.3f} ({spread:.0f} %) | {_verdict(spread <= 25)} |")
    c = report.get("ceilings", {})
    if "ingest" in c:
        rows.append(f"| ingest API vs raw BatchWriteItem (same threads) | ≥ 2.0× | {s['ingest_vs_raw']:.2f}× | "
                    f"{_verdict(s['ingest_vs_raw'] >= 2.0)} |")
    load = report.get("load", {}).get("streamfold")
    if load:
        p99 = load.get("p99_ms")
        seen = p99 == p99 and p99 is not None and not load.get("probes_lost")
        fig = format_ms(p99)
        rows.append(f"| lag p99 at {load['achieved_events_per_s']:,.0f} events/s over {load['accounts']:,} accounts "
                    f"(warm) | ≤ 1,000 ms | {fig}, {load.get('probes_lost', 0)} probes not seen | "
                    f"{_verdict(bool(seen and p99 <= 1000))} |")
    keep = report.get("keep_up", {})
    if "streamfold" in keep:
        k = keep["streamfold"]
        best = k["highest_sustained_events_per_s"]
        naive = keep.get("naive", {}).get("highest_sustained_events_per_s")
        vs = f"; naive {naive:,.0f}" if naive is not None else ""
        rows.append(f"| projector keeps up at spread ({k['accounts']:,} accounts; highest step rate with lag p99 "
                    f"≤ {k['lag_goal_ms'] / 1000:.0f} s over {k['step_seconds']:.0f} s) | ≥ 1,000 events/s | "
                    f"{best:,.0f} events/s{vs} | "
                    f"{_verdict(best >= 1000) if k['step_seconds'] >= 60 else 'steps under 60 s'} |")
    if "parallel" in report:
        par = report["parallel"]
        exact = all(v["exact"] for v in par["by_factor"].values())
        sp = par["speedup"]
        top = max(sp, key=lambda f: int(f))
        rows.append(f"| past one writer: events/s at `ParallelizationFactor` {', '.join(sp)} vs 1 (one tenant, sandbox "
                    f"processes), every event counted once | grows, exact | "
                    f"{', '.join(f'{f}: {x}×' for f, x in sp.items())}; exact: {'yes' if exact else 'NO'} | "
                    f"{_verdict(exact and (sp[top] or 0) > 1.0)} |")
    if "replay" in c:
        r = c["replay"]
        per_item = r.get("replay_writes_per_final_item")
        if per_item is not None:
            floor = (f"; floor {r['write_floor_s']:,.0f} s at {r['raw_batch_write_items_per_s']:,.0f} items/s"
                     if r.get("write_floor_s") is not None else "")
            if r.get("view_write_floor_s") is not None:
                floor += (f", on the view's schema {r['view_write_floor_s']:,.0f} s at "
                          f"{r['view_batch_write_items_per_s']:,.0f} items/s")
            rows.append(f"| replay writes per final item ({r.get('final_items', 0):,} items{floor}) | about 1 "
                        f"(≤ 1.1) | {per_item:.2f} | {_verdict(per_item <= 1.1)} |")
        rows.append(f"| replay vs raw Scan (same segments) | ≥ 0.5× | {r['replay_vs_scan']:.4f}× | "
                    f"{_verdict(r['replay_vs_scan'] >= 0.5)} |")
        view_floor = (f" (the view-schema floor: {r['view_write_floor_events_per_s']:,.0f}; the replay took "
                      f"{1 / r['replay_vs_view_floor']:.1f}× it)" if r.get("replay_vs_view_floor") else "")
        rows.append(f"| replay events/s | ≥ 10,000 | {r['replay_events_per_s']:,.0f}{view_floor} | "
                    f"{_verdict(r['replay_events_per_s'] >= 10_000)} |")
        at = r["events"]
        rows.append(f"| replay peak RSS ({at:,} events) | ≤ 500 MB at 1,000,000 | {r['replay_rss_mb']:.0f} MB | "
                    f"{_verdict(r['replay_rss_mb'] <= 500) if at >= 1_000_000 else 'not measured at 1M'} |")
        q = r["query"]["p99_ms"]
        raw = r["query"].get("raw_index_query", {}).get("p99_ms")
        ceiling = f" (bare index Query of the page: {raw:.1f} ms)" if raw is not None else ""
        rows.append(f"| query p99 (account list, each sort; account page calls; {r['accounts']:,} accounts) | ≤ 15 ms "
                    f"| {q:.1f} ms{ceiling} | {_verdict(q <= 15)} |")
    return rows


def chart(report: dict[str, Any], path: str) -> None:
    """A PNG: lag distribution; throughput against ceilings and baselines; cost per event."""
    # deferred: heavy optional dependency, only `streamfold bench --chart` draws
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after choosing the Agg backend, as pyplot requires

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    load = report.get("load", {})
    for name, colour in (("streamfold", "#4c72b0"), ("naive", "#c44e52")):
        run = load.get(name, {})
        if run.get("samples_ms"):
            lost = f", {run['probes_lost']} of {run['requests']} not seen" if run.get("probes_lost") else ""
            ax1.hist(run["samples_ms"], bins=20, color=colour, alpha=0.6, label=f"{name}{lost}")
        elif run:  # a design none of whose probes became visible draws nothing: say so, not an empty legend
            ax1.plot([], [], color=colour, label=f"{name}: none of {run.get('requests', 0)} probes seen")
    if not load:
        ax1.hist(report["lag"].get("samples_ms", []), bins=20, color="#4c72b0", label="idle")
    ax1.legend()
    ax1.set_title("Lag under load: HTTP 200 -> visible (ms)")
    ax1.set_xlabel("ms")
    ax1.set_ylabel("probes")
    c = report.get("ceilings", {})
    bars = {}
    if "ingest" in c:
        bars["ingest API"] = c["ingest"]["api_events_per_s"]
        bars["raw BatchWrite"] = c["ingest"]["raw_batch_write_events_per_s"]
    if "replay" in c:
        bars["replay"] = c["replay"]["replay_events_per_s"]
        bars["raw Scan"] = c["replay"]["scan_events_per_s"]
    if "eventsourcing" in c:
        bars["eventsourcing lib"] = c["eventsourcing"]["events_per_s"]
    ax2.barh(list(bars), list(bars.values()), color=["#4c72b0", "#999999", "#55a868", "#999999", "#c44e52"][:len(bars)])
    ax2.set_xscale("log")
    ax2.set_title("Throughput, same run (events/s, log scale)")
    curve = report.get("projector", {}).get("cost_curve") or []
    if curve:
        xs = [p["events_per_account_day"] for p in curve]
        ax3.plot(xs, [p["wcu_per_event"] for p in curve], marker="o", label="whole day")
        ax3.plot(xs, [p["marginal_wcu_per_event"] for p in curve], marker="x", label="last batch of the day")
        ax3.set_xscale("log")
        ax3.set_xlabel("events per account-day")
        ax3.set_ylim(bottom=0)
        ax3.legend()
    else:
        names = [n for n in ("live", "live_small_batches", "one_record_invocations", "backfill")
                 if n in report["projector"]]
        ax3.bar(names, [report["projector"][n]["wcu_per_event"] for n in names], color="#4c72b0")
        ax3.bar(names, [report["projector"][n]["baseline_wcu_per_event"] for n in names], color="none",
                edgecolor="#c44e52", label="per-event UpdateItem baseline")
        ax3.legend()
    ax3.set_title("View write units per event")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "replay":
        _replay_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) == 6 else 1)
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        _serve_child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "settle":
        _settle_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif len(sys.argv) == 7 and sys.argv[1] == "runtime":
        _runtime_child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
    else:
        print("usage: python -m tooling.ceilings replay ENDPOINT PREFIX VERSION [WORKERS] | serve ENDPOINT PREFIX | "
              "settle ENDPOINT PREFIX INTERVAL | runtime ENDPOINT PREFIX FUNCTIONS POLL_S STOP_TIMEOUT_S",
              file=sys.stderr)
        sys.exit(2)
