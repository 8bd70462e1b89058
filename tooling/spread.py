"""The spread workload of ``streamfold bench`` (issue 17): a B2B tenant's membership pattern.

N accounts with one user each, joined by ``group`` (after an ``identify``), then ``track`` calls **without**
``context.groupId`` spread over the users, so every event is attributed to its account by membership and a
100-record stream batch touches thousands of accounts once each.

* :func:`identity_events` / :func:`track_events` — the pattern itself (wire events, as an SDK sends them);
* :func:`probe_visible` — whether a probe account is visible to a user of the query API (one function, so
  every phase measures the same thing);
* :func:`keep_up` — the stepped-rate phase: the pattern through the HTTP API and the local mapping runtime
  (the projector mapping's own settings), streamfold or the naive per-event design, one step per rate.

The projection-cost phase that feeds the same events to ``streams.handler.handle_batch`` is
``tooling.bench``'s ``_spread_phase``. Everything here goes through public seams (the HTTP API, the local
runtime, the view table as the query API reads it), never the view writer's internals, which change.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib import db, keys, services, tables
from chalicelib.pages import PAGE_BUCKETS, PageCache
from chalicelib.versions import VIEW_VERSION
from streams.local_backend import LocalMappingBackend
from streams.mapping import family_source_arn
from streams.store import ControlStore
from tooling import ceilings
from tooling.mappings import DEFAULT_PROJECTOR_MAPPING

__all__ = ["DESIGNS", "LAG_GOAL_MS", "account_id", "identity_events", "keep_up", "probe_visible", "track_events",
           "user_id"]

LAG_GOAL_MS = 15_000.0
"""A step holds when its probes' lag p99 (a probe never seen counts as infinitely late) is at most this."""

FEATURES = ceilings.FEATURES
LIBRARY = {"name": "analytics-python", "version": "2.3.2"}


def user_id(a: int) -> str:
    """The one user of account ``a``."""
    return f"user-{a:05d}"


def account_id(a: int) -> str:
    return f"acct-{a:05d}"


def _ts(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def identity_events(accounts: int, when: datetime) -> list[dict[str, Any]]:
    """What the tenant sends first: for every account's one user an ``identify`` (name, email) and a ``group``
    (the account, its name and plan)."""
    ts = _ts(when)
    out: list[dict[str, Any]] = []
    for a in range(accounts):
        uid = user_id(a)
        out.append({"type": "identify", "messageId": f"id-{uid}", "userId": uid, "timestamp": ts,
                    "traits": {"name": f"User {a}", "email": f"{uid}@example.com"}})
        out.append({"type": "group", "messageId": f"gr-{uid}", "userId": uid, "groupId": account_id(a),
                    "timestamp": ts, "traits": {"name": f"Account {a}", "plan": ("free", "pro", "enterprise")[a % 3]}})
    return out


def probe_account(j: int) -> str:
    return f"probe-{j:06d}"


def probe_user(j: int) -> str:
    return f"probe-user-{j:06d}"


def probe_identities(n: int, when: datetime) -> list[dict[str, Any]]:
    """The keep-up's probe accounts: one user each, joined, no usage until its probe track."""
    ts = _ts(when)
    return [e for j in range(n) for e in (
        {"type": "identify", "messageId": f"pid-{j}", "userId": probe_user(j), "timestamp": ts,
         "traits": {"name": f"Probe user {j}"}},
        {"type": "group", "messageId": f"pgr-{j}", "userId": probe_user(j), "groupId": probe_account(j),
         "timestamp": ts, "traits": {"name": f"Probe {j}"}})]


def settle_debt(client: Any, view_table: str, tenant_id: str) -> int:
    """Buckets of a view still due for a settle because a ``group`` named an account new to the listing (their
    ``META`` has ``due_at``): the set-up's onboarding. Pages waiting for the age rule are the steady state."""
    found = db.batch_get(client, view_table, [{"pk": {"S": keys.page_pk(tenant_id, b)}, "sk": {"S": keys.PAGE_META_SK}}
                                              for b in range(PAGE_BUCKETS)])
    return sum(1 for it in found if "due_at" in it and int(it.get("n", {}).get("N", "0")) > 0)


def track(rng: random.Random, user: str, when: datetime, message_id: str | None = None) -> dict[str, Any]:
    """One Segment ``track`` of about 250 bytes, **without** ``context.groupId`` (attributed by membership)."""
    return {"type": "track", "messageId": message_id or str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "userId": user, "event": rng.choice(FEATURES), "timestamp": _ts(when),
            "properties": {"path": f"/app/reports/{rng.randrange(10000)}", "duration_ms": rng.randrange(20, 5000),
                           "rows": rng.randrange(1000)},
            "context": {"library": dict(LIBRARY)}}


def track_events(n: int, accounts: int, now: datetime, *, spread_s: float = 3600.0,
                 seed: int = 41) -> list[dict[str, Any]]:
    """``n`` tracks spread uniformly over the accounts' users, client timestamps rising over the ``spread_s``
    seconds before ``now`` (arrival order)."""
    rng = random.Random(seed)
    return [track(rng, user_id(rng.randrange(accounts)), now - timedelta(seconds=(1 - i / n) * spread_s))
            for i in range(n)]


probe_visible = ceilings.probe_visible
"""Whether probe accounts are visible through the query API's read (``tooling.ceilings.probe_visible``)."""


def _p99_holds(lags_ms: list[float], lost: int, goal_ms: float) -> bool:
    """Whether the p99 (linear interpolation, as :func:`tooling.ceilings.percentile`) of ``lags_ms`` plus
    ``lost`` infinitely late probes is at most ``goal_ms``: the values above the goal must all sit above the
    99th percentile's upper neighbour."""
    n = len(lags_ms) + lost
    if n == 0:
        return False
    late = lost + sum(1 for x in lags_ms if x > goal_ms)
    return late <= n - 1 - math.ceil((n - 1) * 0.99)


DESIGNS = ("streamfold", "naive")


def keep_up(endpoint: str, accounts: int, rates: Sequence[float], step_seconds: float, *,
            designs: Sequence[str] = ("streamfold",), per_request: int = 100, threads: int = 4,
            lag_goal_ms: float = LAG_GOAL_MS, warm_timeout: float = 1800.0, stop_timeout: float = 600.0,
            seed: int = 43, settler_interval: float = 15.0,
            settle_min_age_s: float | None = None) -> dict[str, dict[str, Any]]:
    """The projector at stepped rates over ``accounts`` accounts of the membership pattern; one result per design.

    A fresh stack: the projector mapping with its own settings (``DEFAULT_PROJECTOR_MAPPING``: 100 records, the
    5 s batching window) run by the local runtime (``GetRecords`` every 0.25 s), the HTTP API in its own process.
    ``designs``: ``"streamfold"`` (the projector, into the view table) and/or ``"naive"`` (a mapping with the same
    settings on the same streams, invoking :func:`tooling.ceilings.naive_handler` with membership — a ``group``
    sets the user's account, a ``track`` without ``groupId`` reads it back — into a table of its own). Designs
    given together share the stack, the traffic and the machine (``streamfold bench --quick``: it fits the
    two-minute budget); the full run measures each on a stack of its own, one after the other.

    Not timed: every account's ``identify`` + ``group`` through the API, the last request ending with a marker
    (a probe of its own), waited for until every design shows it (so each view holds every account and each
    function has run). Then one step per rate in ``rates``, each ``step_seconds`` long, without a pause between
    them: ``threads`` client threads send requests of ``per_request`` messages on a fixed schedule (tracks
    without ``groupId`` spread over the users). The first message of every request is its probe: a ``track``
    without ``groupId`` by the one user of a probe account that has seen no usage yet (a pool of such accounts
    joins by ``identify`` + ``group`` in the set-up, beside the others); the probe's lag is from the request's
    200 OK until :func:`probe_visible` sees usage on that account. (Until 2026-12-07 the probe was a ``group``
    creating a fresh account, then its track: with one new account per request, every request made its bucket
    of accounts due for a settle 30 s later, a load no tenant creates, and the lag measured the settle policy
    for new accounts, not whether the projector keeps up with usage.)

    The set-up's settle debt is paid before the first step: for streamfold the warm-up waits until the settler
    has settled the buckets the set-up's new accounts made due, as the naive design's set-up writes are all done
    when its marker shows. The steps measure a steady state, not an onboarding.

    A step *holds* for a design when it reached 90 % of its rate and its lag p99 (a probe never seen counts as
    infinitely late) is at most ``lag_goal_ms``. Stepping stops after a step that did not reach its rate, or
    once every design has a step known to have failed (its late probes already decide it). After the last step,
    probes are awaited for ``lag_goal_ms`` + 5 s at most. ``highest_sustained_events_per_s`` is the achieved rate
    of the last step of the unbroken run of held steps from the first (0.0 when the first does not hold).
    """
    # deferred: heavy optional dependency, only the HTTP phases need it
    import requests

    unknown = set(designs) - set(DESIGNS)
    if unknown or not designs:
        raise ValueError(f"designs must be some of {DESIGNS}, not {sorted(unknown) or 'none'}")
    prefix = ceilings._fresh_prefix(endpoint, "spread" + "-".join(designs))
    client = db.get_client()
    tenant = services.tenants().create("bench-spread-load")
    tenant_id, write_key = tenant["tenant_id"], tenant["write_key"]
    store = ControlStore(client, keys.control_table_name(prefix))
    backend = LocalMappingBackend(store, client, db.get_streams_client())
    view: dict[str, str] = {}
    functions: list[str] = []
    settings = dict(DEFAULT_PROJECTOR_MAPPING)
    for design in designs:
        if design == "streamfold":
            view[design] = tables.ensure_view_table(client, prefix, VIEW_VERSION)
            functions.append("projector")
            backend.create(event_source_arn=family_source_arn(prefix), **settings)
        else:
            view[design] = f"{prefix}naive-view"
            tables.ensure_table(client, {
                "TableName": view[design], "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]})
            functions.append(f"naive-membership:{view[design]}")
            backend.create(event_source_arn=family_source_arn(prefix), **{**settings, "function_name": "naive"})
    # The settler schedule runs beside the projector (every 15 s), in a process of its own at a lower CPU priority
    # (on AWS a function of its own): its settles compete for the same DynamoDB Local, so the rate that holds
    # includes them. The mapping runtime and the functions it invokes run in a process of their own too (on AWS:
    # Lambda), apart from this one's client threads and probe watcher.
    # ``settle_min_age_s`` / ``settler_interval``: the settle policy of this stack's projector and settler (the
    # production one by default; ``streamfold bench --quick`` shortens both to fit its two minutes, which only
    # shortens the warm-up's wait for the set-up's settle debt).
    policy = {} if settle_min_age_s is None else {"STREAMFOLD_SETTLE_MIN_AGE_SECONDS": str(settle_min_age_s)}
    # The three children start side by side (each imports the app); each is waited for below.
    settler = (ceilings.SettlerProcess(endpoint, prefix, interval=settler_interval, wait=False, env=policy)
               if "streamfold" in designs else None)
    runtime = ceilings.RuntimeProcess(endpoint, prefix, functions, poll_interval=0.25, stop_timeout=stop_timeout,
                                      wait=False, env=policy)
    server = ceilings._ServerProcess(endpoint, prefix, wait=False)  # the API alone in its process, as deployed
    local = threading.local()
    failures: list[str] = []

    def post(batch: list[dict[str, Any]]) -> bool:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            r = session.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(write_key, ""), timeout=60)
        except requests.RequestException as exc:
            failures.append(repr(exc))
            return False
        if r.status_code != 200:
            failures.append(f"HTTP {r.status_code}")
            return False
        return True

    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    # per design: probe account -> (step, 200 OK time) while unseen; lags by step once seen
    pending: dict[str, dict[str, tuple[int, float]]] = {d: {} for d in designs}
    lags: dict[str, list[list[float]]] = {d: [] for d in designs}
    lock = threading.Lock()
    watching = threading.Event()
    timings: dict[str, float] = {}
    watch_s: dict[str, float] = dict.fromkeys(designs, 0.0)  # the probe watcher's seconds in probe_visible
    base = (0.0, 0)
    setup_s = warm_s = 0.0
    steps_wall = [0.0, 0.0]  # epoch seconds the steps began and ended (the settler's runs in between)
    mark = time.perf_counter()
    try:
        for child in (server, runtime, settler):
            if child is not None:
                child.started()
        timings["server_start_s"] = time.perf_counter() - mark  # (the three children's start)
        pids = {"runtime": runtime.proc.pid, "api": server.proc.pid, "bench": os.getpid()}
        if settler is not None:
            pids["settler"] = settler.proc.pid
        if (local_pid := ceilings.CpuMeter.listening_pid(endpoint)) is not None:
            pids["dynamodb_local"] = local_pid
        meter = ceilings.CpuMeter(pids)
        started = time.perf_counter()
        # Set-up requests of up to `per_request` messages, as few as fill whole mapping batches (a small set-up
        # is then one full batch, projected at once instead of after the batching window); the marker (a group
        # and a track) rides last in the last request, posted after the others, so once the marker account is
        # visible every account is.
        probes = math.ceil(sum(r * step_seconds / per_request for r in rates)) + 10
        identity = identity_events(accounts, datetime.now(UTC) - timedelta(minutes=5)) + \
            probe_identities(probes, datetime.now(UTC) - timedelta(minutes=5))
        size = min(per_request, max(1, math.ceil(len(identity) / settings["batch_size"])))
        setup = [identity[i:i + size] for i in range(0, len(identity), size)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(post, setup[:-1]))
        now = datetime.now(UTC)
        if not post(setup[-1] + [{"type": "group", "messageId": "warm-g", "userId": "warm-marker-user",
                                  "groupId": "warm-marker", "timestamp": _ts(now)},
                                 track(rng, "warm-marker-user", now, "warm-t")]):
            raise RuntimeError(f"keep-up set-up: the last request failed: {failures[-1:]}")
        setup_s = time.perf_counter() - started
        if failures:
            raise RuntimeError(f"keep-up set-up: {len(failures)} requests failed: {failures[:3]}")
        warm_started = time.perf_counter()
        for design in designs:
            while not probe_visible(client, view[design], tenant_id, ["warm-marker"]):
                if time.perf_counter() - warm_started > warm_timeout:
                    raise RuntimeError(f"keep-up warm-up ({design}): marker not visible within {warm_timeout:.0f} s")
                time.sleep(0.1)
        if "streamfold" in designs:
            while settle_debt(client, view["streamfold"], tenant_id):
                if time.perf_counter() - warm_started > warm_timeout:
                    raise RuntimeError(f"keep-up warm-up: the set-up's pages not settled within {warm_timeout:.0f} s")
                time.sleep(1.0)
        warm_s = time.perf_counter() - warm_started
        if "naive" in designs:
            counted = runtime.naive_stats()
            base = (counted["units"], int(counted["events"]))

        caches = {d: PageCache() for d in designs}  # one per view table (a cache's keys name no table)

        def watch() -> None:
            while watching.is_set():
                for design in designs:
                    # The oldest probes first, 8 at a time, until 8 in a row are not visible yet (a stream shard is
                    # projected in order, so the probes behind those are not either, up to the order of
                    # concurrent requests), and no more than 200 a look. Each look reads the probe's bucket's
                    # pending pages; looking up the whole backlog five times a second made this watcher, not the
                    # projector, the busiest thread of the bench's process at 1,000 events/s.
                    with lock:
                        todo = list(itertools.islice(pending[design], 200))
                    for i in range(0, len(todo), 8):
                        part = todo[i:i + 8]
                        looking = time.perf_counter()
                        seen = probe_visible(client, view[design], tenant_id, part, cache=caches[design])
                        now_ = time.perf_counter()
                        watch_s[design] += now_ - looking
                        with lock:
                            for a in seen:
                                step, ok = pending[design].pop(a)
                                lags[design][step].append((now_ - ok) * 1000)
                        if not seen:
                            break
                time.sleep(0.2)

        probe_ids = itertools.count()
        watching.set()
        watcher = threading.Thread(target=watch, name="keep-up-watch", daemon=True)
        watcher.start()
        steps_started = time.perf_counter()
        steps_wall[0] = time.time()
        for k, rate in enumerate(rates):
            for design in designs:
                lags[design].append([])
            before, watched = meter.snapshot(), dict(watch_s)
            sent = _step(k, rate, step_seconds, accounts, per_request, threads, rng.random(), post, pending, lock,
                         probe_ids)
            cores = ceilings.CpuMeter.cores(before, meter.snapshot())
            steps.append({"target_events_per_s": rate, **sent, "cores": cores,
                          "watcher_busy": {d: round((watch_s[d] - watched[d]) / sent["seconds"], 2) for d in designs}})
            if sent["achieved_events_per_s"] < 0.9 * rate or all(
                    _decided_failed(steps, lags[d], pending[d], lock, lag_goal_ms) for d in designs):
                break
        timings["steps_s"] = time.perf_counter() - steps_started
        steps_wall[1] = time.time()
        drain_started = time.perf_counter()
        while time.perf_counter() < drain_started + lag_goal_ms / 1000 + 5:
            with lock:
                if not any(pending.values()):
                    break
            time.sleep(0.1)
        watching.clear()
        watcher.join(30)
        timings["drain_s"] = time.perf_counter() - drain_started
    finally:
        watching.clear()
        if server is not None:
            server.stop()
        stopping = time.perf_counter()
        # After its in-flight invocation (the baseline's ends at once): nothing runs on into the next phase.
        final = runtime.stop()
        if settler is not None:
            settler.stop()
        timings["runtime_stop_s"] = time.perf_counter() - stopping
    steps_span = (steps_wall[0], steps_wall[1] or time.time())

    out: dict[str, dict[str, Any]] = {}
    for design in designs:
        per_step = [dict(step) for step in steps]
        best = best_target = 0.0
        broken = False
        for k, step in enumerate(per_step):
            lost = sum(1 for s, _ in pending[design].values() if s == k)
            ls = sorted(lags[design][k])
            reached = step["achieved_events_per_s"] >= 0.9 * step["target_events_per_s"]
            held = reached and _p99_holds(ls, lost, lag_goal_ms)
            step.update({"probes_seen": len(ls), "probes_lost": lost,
                         "probes_late": lost + sum(1 for x in ls if x > lag_goal_ms),
                         "p50_ms": round(ceilings.percentile(ls, 50), 1),
                         "p99_ms": round(ceilings.percentile(ls, 99), 1),
                         "max_ms": round(ls[-1], 1) if ls else None, "rate_reached": reached, "held": held})
            if held and not broken:
                best, best_target = step["achieved_events_per_s"], step["target_events_per_s"]
            else:
                broken = True
        out[design] = {
            "design": "naive per-event UpdateItem, membership by GetItem" if design == "naive" else "streamfold",
            "accounts": accounts, "users": accounts, "events_per_request": per_request, "client_threads": threads,
            "mapping": {"batch_size": settings["batch_size"],
                        "batching_window_s": settings["maximum_batching_window_in_seconds"], "poll_interval_s": 0.25,
                        "runtime": "own process (the mapping runtime and its functions, as Lambda)"},
            "designs_on_the_stack": list(designs), "setup_events": 2 * accounts, "setup_s": round(setup_s, 1),
            "warm_up_s": round(warm_s, 1), "step_seconds": step_seconds, "lag_goal_ms": lag_goal_ms,
            "rates": list(rates), "steps": per_step, "failures": len(failures),
            "highest_sustained_events_per_s": best, "highest_sustained_target_events_per_s": best_target,
            "timings": {k: round(v, 1) for k, v in timings.items()},
            "probe": "a track without groupId by the one user of a joined probe account with no usage yet, first "
                     "message of every request; visible = probe_visible (usage on the account, items + pages); "
                     "the set-up's pages settled before the first step",
        }
        if design == "streamfold" and settler is not None:
            during = [r for r in settler.runs if steps_span[0] <= r["at"] <= steps_span[1] + 1]
            out[design]["settler"] = {
                "process": f"own process, nice {ceilings.SETTLER_NICE}, every 15 s",
                "runs_during_steps": len(during),
                "buckets_settled_during_steps": sum(sum(v for v in r["buckets"].values() if isinstance(v, int))
                                                    for r in during),
                "longest_run_s": max((r["seconds"] for r in during), default=0.0)}
        if design == "naive":  # over the steps' events (probes' groups included)
            out[design]["write_units_per_event"] = round(
                (final["units"] - base[0]) / max(1, int(final["events"]) - base[1]), 3)
    return out


def _step(k: int, rate: float, seconds: float, accounts: int, per_request: int, threads: int, seed: float,
          post: Any, pending: dict[str, dict[str, tuple[int, float]]], lock: threading.Lock,
          probe_ids: Iterator[int]) -> dict[str, Any]:
    """One step: ``threads`` senders keep to one schedule of ``rate`` events/s for ``seconds`` (a request due
    while every sender is busy goes out late, and the achieved rate shows it); the step lasts at least its
    schedule, so the next one starts on time."""
    interval = per_request / rate
    counter = itertools.count()
    sent = [0, 0]  # requests, events
    started = time.perf_counter()
    rngs = [random.Random(seed + t) for t in range(threads)]

    def sender(srng: random.Random) -> None:
        while True:
            with lock:
                i = next(counter)
            due = started + i * interval
            if due - started >= seconds:
                return
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            now = datetime.now(UTC)
            with lock:
                j = next(probe_ids)
            probe = probe_account(j)
            batch = [track(srng, probe_user(j), now, f"pt-{j}")]
            batch += [track(srng, user_id(srng.randrange(accounts)), now) for _ in range(per_request - 1)]
            if post(batch):
                ok = time.perf_counter()
                with lock:
                    for p in pending.values():
                        p[probe] = (k, ok)
                    sent[0] += 1
                    sent[1] += len(batch)

    workers = [threading.Thread(target=sender, args=(rngs[t],), name=f"keep-up-send-{t}", daemon=True)
               for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + 120)  # a hang guard: each request's own timeout is 60 s
    if (rest := started + seconds - time.perf_counter()) > 0:
        time.sleep(rest)
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 1), "requests": sent[0], "events": sent[1],
            "achieved_events_per_s": round(sent[1] / elapsed, 1)}


def _decided_failed(steps: list[dict[str, Any]], lags: list[list[float]], pending: dict[str, tuple[int, float]],
                    lock: threading.Lock, goal_ms: float) -> bool:
    """Whether a step run so far has failed whatever its remaining probes do: its probes already seen late
    and those pending for longer than the goal break its p99 even if every other probe arrives at once."""
    now = time.perf_counter()
    with lock:
        for k, step in enumerate(steps):
            waiting = [ok for s, ok in pending.values() if s == k]
            overdue = sum(1 for ok in waiting if (now - ok) * 1000 > goal_ms)
            on_time = [x for x in lags[k] if x <= goal_ms]
            late = overdue + sum(1 for x in lags[k] if x > goal_ms)
            # the best case for the rest: every other waiting probe seen now, on time
            if not _p99_holds(on_time + [0.0] * (len(waiting) - overdue), late, goal_ms) and step["requests"]:
                return True
    return False
