"""Replay: rebuild a view version from the day tables, compare it with another, promote it.

After a projection (schema) change, ``streamfold replay view --version 3`` (:func:`build`) folds every
stored event again into ``<prefix>view-v3`` with that version's fold code (no alerts are raised by a
replay), beside the serving version, which the live projector goes on writing with its own; then it
rebuilds the version's search index, catches up from the stream positions the live projector recorded
meanwhile (:mod:`streams.catchup`) and leaves the version ``current``: written by the live projector too.
``--compare`` diffs two versions item by item (time-dependent score fields aside), which is also how
invariant 4 is checked: the live view equals the view rebuilt from the day tables. ``--promote`` makes a
current version the serving one, in one transaction.

Scanning the day tables is a batch job, never a request path.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import queue
import resource
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib import db, keys, tables
from chalicelib.chunks import unpack_chunk
from chalicelib.db import items
from chalicelib.log import logger
from chalicelib.registry import ProjectionRegistry
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.settings import get_settings
from chalicelib.versions import active_view_version, set_active_view_version
from chalicelib.views import ViewStore, decode_body, from_ddb
from projections.events import Event
from projections.folds import fold_for
from streams import catchup, partition
from streams.buffered import DEFAULT_MAX_ITEMS, BufferedViewStore
from streams.writer import ViewWriter, same_but_recency

__all__ = ["ReplayStats", "Comparison", "build", "iter_chunks", "iter_events", "rebuild", "compare", "promote",
           "IGNORED_ATTRIBUTES"]


BUFFERED_BATCH_EVENTS = 10_000
"""Events per batch of an in-memory rebuild (≈ 1.5 KB of Python objects each)."""

BATCH_ENTITIES = 4_000
"""Accounts and users a batch may name before it is folded, whatever its event count. A batch holds the
decoded state of every account it touches (its days and timelines: tens of KB each) until it is
written, so this, not the event count, bounds a rebuild's working set when events are spread over many
accounts (batches of 10,000 events over 10,000 accounts peaked near 600 MB at 1,000,000 events)."""

PARTITION_EVENTS = 25_000
"""Events per partition of a partitioned rebuild (≈ 1.5 KB of Python objects each while it is folded; 50,000
per partition peaked at 636 MB RSS at 1,000,000 events)."""

PARTITION_ENTITIES = 2_000
"""Ids (accounts, users, anonymous ids) per partition: each account's decoded state is tens of KB."""

# Bookkeeping and time-dependent attributes (scores are a function of state *and* as-of time).
IGNORED_ATTRIBUTES = frozenset({
    "ver", "as_of", "alerts", "user_ver", "ring", "cl", "ttl", "seen_sk",
    "score", "band", "trend", "health_json", "score_sk", "active_sk",
    "active_1d", "active_7d", "active_30d", "model_version",
})


@dataclass
class ReplayStats:
    version: int
    tables: int = 0
    chunks: int = 0
    events: int = 0
    poison: int = 0
    write_units: float = 0.0
    writes: int = 0
    buffered: bool = False  # folded in memory, written once per flush (an inactive version)
    flushes: int = 0
    batches: int = 0  # folds (a batch ends at its event count or its count of accounts and users)
    workers: int = 1  # processes that folded (a partitioned rebuild's --workers)
    partitions: int = 0  # a partitioned rebuild's partitions (its units of work)
    seconds: dict[str, float] = field(default_factory=dict)  # a partitioned rebuild's passes: plan, spool, fold
    resumed_partitions: int = 0  # partitions a killed run had finished (not folded again)
    worker_rss_mb: list[float] = field(default_factory=list)  # each worker process's peak RSS


@dataclass
class Comparison:
    a: int
    b: int
    items_a: int = 0
    items_b: int = 0
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    codes_a: list[str] = field(default_factory=list)
    codes_b: list[str] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)

    @property
    def same_code(self) -> bool:
        """Both versions were written by one and the same fold code (and only by it): any difference is
        damage (a lost or doubled update, a bug), never the upgrade."""
        return bool(self.codes_a) and self.codes_a == self.codes_b and len(self.codes_a) == 1

    @property
    def verdict(self) -> str:
        if self.equal:
            return "equal"
        if self.same_code:
            return "damage: the same fold code built both versions, so every difference is a defect"
        if not (self.codes_a and self.codes_b):
            return "unknown fold code (a version written before codes were recorded): differences not classified"
        return "upgrade: different fold code built the two versions; the differences are the upgrade's"

    @property
    def equal(self) -> bool:
        return not (self.only_a or self.only_b or self.different)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "equal": self.equal, "same_code": self.same_code, "verdict": self.verdict,
                "codes_a": self.codes_a, "codes_b": self.codes_b, "samples": self.samples,
                "items_a": self.items_a, "items_b": self.items_b,
                "only_a": self.only_a[:20], "only_b": self.only_b[:20], "different": self.different[:20],
                "counts": {"only_a": len(self.only_a), "only_b": len(self.only_b),
                           "different": len(self.different)}}


def _scan(client: Any, table: str) -> Iterator[dict[str, Any]]:
    return items(client, "scan", TableName=table)


def iter_events(client: Any, prefix: str, *, last_tables: int | None = None,
                stats: ReplayStats | None = None) -> Iterator[tuple[str, list[Event]]]:
    """``(tenant, events)`` per stored chunk, oldest day table first."""
    for tenant, _, events in iter_chunks(client, prefix, last_tables=last_tables, stats=stats):
        yield tenant, events


def iter_chunks(client: Any, prefix: str, *, last_tables: int | None = None,
                stats: ReplayStats | None = None) -> Iterator[tuple[str, str, list[Event]]]:
    """``(tenant, chunk id, events)`` per stored chunk, oldest day table first (chunk id = table|pk)."""
    day_tables = tables.list_event_tables(client, prefix)
    if last_tables is not None:
        day_tables = day_tables[-last_tables:]
    for _, table in day_tables:
        if stats:
            stats.tables += 1
        for item in _scan(client, table):
            try:
                tenant, wire = unpack_chunk(item)
                events = [Event.from_wire(w) for w in wire]
            except (ValueError, KeyError) as exc:
                # The live path dead-letters these; a replay skips them the same way.
                logger.warning("skipping poison chunk %s: %s", item.get("pk", {}).get("S"), exc)
                if stats:
                    stats.poison += 1
                continue
            if stats:
                stats.chunks += 1
                stats.events += len(events)
            yield tenant, f"{table}|{item.get('pk', {}).get('S')}", events


def iter_raw_chunks(client: Any, prefix: str, *, last_tables: int | None = None
                    ) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """``(tenant, chunk id, wire events)`` per stored chunk (not decoded into events; poison skipped)."""
    day_tables = tables.list_event_tables(client, prefix)
    if last_tables is not None:
        day_tables = day_tables[-last_tables:]
    for _, table in day_tables:
        for item in _scan(client, table):
            try:
                tenant, wire = unpack_chunk(item)
            except (ValueError, KeyError):
                continue  # counted as poison by the pass that folds
            yield tenant, f"{table}|{item.get('pk', {}).get('S')}", [w for w in wire if isinstance(w, dict)]


def rebuild(client: Any, prefix: str, version: int, *, now: datetime | None = None, batch_events: int | None = None,
            last_tables: int | None = None, max_items: int | None = None, batch_entities: int = BATCH_ENTITIES,
            buffered: bool | None = None, partitioned: bool | None = None,
            partition_events: int = PARTITION_EVENTS, partition_entities: int = PARTITION_ENTITIES,
            workers: int = 1, progress: bool = False, fresh: bool = False, register: bool = True) -> ReplayStats:
    """Fold every stored event into ``<prefix>view-v<version>`` (created if missing).

    A version that is not the active one has no other writer: the fold runs in memory
    (:class:`streams.buffered.BufferedViewStore`) and each item is written once per flush with
    ``BatchWriteItem``. The active version (a promotion's catch-up) is written item by item with the
    live store's conditional writes, beside the live projectors. ``buffered`` overrides that choice.

    An in-memory rebuild is ``partitioned`` unless ``batch_events`` is given: the events are cut by the
    accounts and users they are about (:mod:`streams.partition`) and each partition is folded in one
    batch and flushed, so each account is folded and each item written about once. Its plan, spool and
    the partitions done live in :func:`job_dir` until it ends: a rebuild killed midway resumes from the
    partitions it had not finished (``fresh`` starts over), never counting an event twice (a partition is
    done once the table has it; a partition cut short is folded again, its counters skipping what they
    hold by their rings, its claim pages written last). ``progress``: bars with rate and ETA on stderr."""
    table = tables.ensure_view_table(client, prefix, version)
    if register:
        # The registry names the fold code building this version (`streamfold projection list`).
        ProjectionRegistry(client, prefix).register_building(version, fold_for(version).code)
    exclusive = (version != active_view_version(client, keys.control_table_name(prefix), cached=False)
                 if buffered is None else buffered)
    if exclusive and (partitioned if partitioned is not None else batch_events is None):
        return _rebuild_partitioned(client, prefix, version, table, now=now or datetime.now(UTC),
                                    last_tables=last_tables, max_events=partition_events,
                                    max_entities=partition_entities, workers=workers, progress=progress,
                                    fresh=fresh)
    store: ViewStore = (BufferedViewStore(client, table, max_items=max_items or DEFAULT_MAX_ITEMS) if exclusive
                        else ViewStore(client, table))
    projector = ViewWriter(store, ScoreModelStore(client, keys.control_table_name(prefix)), fold=fold_for(version))
    stats = ReplayStats(version, buffered=exclusive)
    # Each batch scores every account it touches once: in memory, big batches fold a busy view's
    # accounts far fewer times (the Event objects of a batch are what it costs in memory).
    batch_events = batch_events or (BUFFERED_BATCH_EVENTS if exclusive else 5000)
    now = now or datetime.now(UTC)
    pending: dict[str, list[tuple[str, list[Event]]]] = {}
    size = 0
    entities: set[tuple[str, str | None, str | None]] = set()
    for tenant, chunk, events in iter_chunks(client, prefix, last_tables=last_tables, stats=stats):
        pending.setdefault(tenant, []).append((chunk, events))
        size += len(events)
        entities.update((tenant, "g", e.group_id) for e in events if e.group_id)
        entities.update((tenant, "u", e.user_key) for e in events if e.user_key)
        if size >= batch_events or len(entities) >= batch_entities:
            _flush(projector, pending, now)
            stats.batches += 1
            pending, size, entities = {}, 0, set()
    if pending:
        _flush(projector, pending, now)
        stats.batches += 1
    if isinstance(store, BufferedViewStore):
        store.flush()
        stats.flushes = store.flushes
    stats.write_units, stats.writes = store.stats.write_units, store.stats.writes
    return stats


def _claim_pages(pk: str) -> bool:
    """Claim pages: every partition reads them (kept across a worker's flushes; each batch writes its own)."""
    parts = pk.split("#", 2)
    return len(parts) > 1 and parts[1] == "M"


def _catalog(pk: str) -> bool:
    """The event catalog: every partition updates it, so rebuild workers share it through the table."""
    parts = pk.split("#", 2)
    return len(parts) == 2 and parts[1] == "CATALOG"


def fold_partitions(prefix: str, version: int, spool_dir: str, partitions: list[int], now: str,
                    max_events: int, client: Any = None, progress: Any = None) -> dict[str, Any]:
    """Fold the given spooled partitions into ``<prefix>view-v<version>``: each in one batch (a partition
    bigger than ``2 × max_events`` in several), written while the next one folds, and recorded as done in
    the job's ``done`` file once the table has it (a resumed rebuild skips it). Runs in the rebuild's
    process or in a worker process of its own (``--workers``); the result is JSON (a task's output).
    ``progress``: a callable or a queue told ``(partition, events)`` as each partition is done."""
    client = client or db.get_client()
    table = keys.view_table_name(prefix, version)
    store = BufferedViewStore(client, table, max_items=10**9, keep=_claim_pages, through=_catalog,
                              compact_claims=True)
    projector = ViewWriter(store, ScoreModelStore(client, keys.control_table_name(prefix)), fold=fold_for(version))
    when = datetime.fromisoformat(now)
    batches = 0
    cut = max_events * 2
    job = Path(spool_dir)

    def done(p: int, events: int) -> None:
        with open(job / "done", "a") as f:
            f.write(f"{p}\n")
            f.flush()
            os.fsync(f.fileno())
        if progress is not None:
            (progress.put if hasattr(progress, "put") else progress)((p, events))

    previous: tuple[int, int] | None = None
    try:
        for p in partitions:
            pending: dict[str, list[tuple[str, list[Event]]]] = {}
            size = sub = total = 0
            for tenant, chunk, events in partition.read_partition(job, p):
                # The chunk id names the partition and the batch: a batch's tag (the replay's unit in the
                # counters' rings) is then its own, though every partition holds a part of most chunks, and
                # the same on a resumed run (the spool is the same).
                pending.setdefault(tenant, []).append((f"{chunk}#p{p}.{sub}", events))
                size += len(events)
                total += len(events)
                if size >= cut:
                    projector.record(None, when, chunks=pending, source="R")
                    batches += 1
                    pending, size, sub = {}, 0, sub + 1
            if pending:
                projector.record(None, when, chunks=pending, source="R")
                batches += 1
            # Written while the next partition folds (DynamoDB's work overlaps ours); this waits for the
            # previous partition's writes first, which makes that one done.
            store.flush(wait=False)
            if previous is not None:
                done(*previous)
            previous = (p, total)
        store.wait()
        if previous is not None:
            done(*previous)
    finally:
        store.close()
    return {"partitions": len(partitions), "batches": batches, "flushes": store.flushes,
            "writes": store.stats.writes, "write_units": store.stats.write_units,
            "rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def job_dir(prefix: str, version: int) -> Path:
    """Where a rebuild of an inactive version keeps its plan, its spooled partitions and the partitions
    done (``<data dir>/replay/<table>``): what a resumed rebuild (after ``kill -9``) starts from."""
    return get_settings().data_dir / "replay" / keys.view_table_name(prefix, version)


def _table_created(client: Any, table: str) -> str:
    return str(client.describe_table(TableName=table)["Table"].get("CreationDateTime"))


def _open_job(client: Any, prefix: str, version: int, table: str, *, fresh: bool) -> tuple[Path, bool]:
    """The job directory, and whether it holds a complete spool to resume from. A spool of another table
    (the version dropped and created again) or an unfinished one is started again."""
    job = job_dir(prefix, version)
    created = _table_created(client, table)
    meta = job / "job.json"
    if job.exists() and not fresh and meta.exists() and (job / "spooled").exists():
        info = json.loads(meta.read_text())
        if info.get("table_created") == created:
            return job, True
    if job.exists():
        shutil.rmtree(job)
    job.mkdir(parents=True)
    meta.write_text(json.dumps({"prefix": prefix, "version": version, "table": table, "table_created": created}))
    return job, False


def _rebuild_partitioned(client: Any, prefix: str, version: int, table: str, *, now: datetime,
                         last_tables: int | None, max_events: int, max_entities: int,
                         workers: int = 1, progress: bool = False, fresh: bool = False) -> ReplayStats:
    # deferred: the operator's bars (requirements-dev); the fold itself never needs them
    from rich.console import Console

    # deferred: as above
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    stats = ReplayStats(version, buffered=True)
    started = time.perf_counter()
    job, resuming = _open_job(client, prefix, version, table, fresh=fresh)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=False) as bars:
        if resuming:
            with open(job / "plan.pickle", "rb") as f:
                the_plan = pickle.load(f)  # written by this rebuild, in our own data dir
            info = json.loads((job / "spooled").read_text())
            stats.chunks, stats.events, stats.poison, stats.tables = (info["chunks"], info["events"], info["poison"],
                                                                      info["tables"])
            max_events = info["max_events"]  # the same batches as the killed run (their tags must match)
            planned = time.perf_counter()
        else:
            scan = bars.add_task("pass 1/3: plan (scan, ids)", total=None, rate="")
            raw = iter_raw_chunks(client, prefix, last_tables=last_tables)
            the_plan = partition.plan(_advancing(raw, bars, scan), max_events=max_events, max_entities=max_entities)
            planned = time.perf_counter()
            logger.info("replay v%s: %s partitions planned (%s events)", version, the_plan.partitions,
                        sum(the_plan.events))
            (job / "plan.pickle").write_bytes(pickle.dumps(the_plan, protocol=pickle.HIGHEST_PROTOCOL))
            spooling = bars.add_task("pass 2/3: spool by partition", total=sum(the_plan.events), rate="")
            spool = partition.PartitionSpool(job, the_plan)
            try:
                for tenant, chunk, events in iter_chunks(client, prefix, last_tables=last_tables, stats=stats):
                    spool.add(tenant, chunk, events)
                    _advance(bars, spooling, len(events), started)
            finally:
                spool.close()
            (job / "spooled").write_text(json.dumps({"chunks": stats.chunks, "events": stats.events,
                                                     "poison": stats.poison, "tables": stats.tables,
                                                     "max_events": max_events}))
        stats.seconds["plan"] = round(planned - started, 2)
        stats.seconds["spool"] = round(time.perf_counter() - planned, 2)
        folding = time.perf_counter()
        done = {int(x) for x in (job / "done").read_text().split()} if (job / "done").exists() else set()
        todo = [p for p in range(the_plan.partitions) if p not in done]
        stats.resumed_partitions = len(done)
        fold = bars.add_task(f"pass 3/3: fold ({the_plan.partitions} partitions)", total=sum(the_plan.events),
                             completed=sum(the_plan.events[p] for p in done), rate="")
        workers = max(1, min(workers, len(todo) or 1))
        shares = [todo[k::workers] for k in range(workers)]
        args = [(prefix, version, str(job), share, now.isoformat(), max_events) for share in shares]
        if workers == 1:
            results = [fold_partitions(*args[0], client=client,
                                       progress=lambda d: _advance(bars, fold, d[1], folding))]
        else:
            # Processes, not threads: the fold is Python (one core each). Each worker owns its partitions'
            # items; the catalog is shared through the table's conditional writes.
            ctx = multiprocessing.get_context("spawn")
            with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                told = manager.Queue()
                futures = [pool.submit(fold_partitions, *a, progress=told) for a in args]
                while not all(f.done() for f in futures):
                    with contextlib.suppress(queue.Empty):
                        _advance(bars, fold, told.get(timeout=0.5)[1], folding)
                results = [f.result() for f in futures]
    stats.seconds["fold"] = round(time.perf_counter() - folding, 2)
    stats.partitions = the_plan.partitions
    stats.workers = workers
    stats.batches = sum(r["batches"] for r in results)
    stats.flushes = sum(r["flushes"] for r in results)
    stats.writes = sum(r["writes"] for r in results)
    stats.write_units = sum(r["write_units"] for r in results)
    stats.worker_rss_mb = [round(r["rss_mb"], 1) for r in results] if workers > 1 else []
    shutil.rmtree(job, ignore_errors=True)  # done: nothing to resume
    return stats


def _advancing(chunks: Iterator[Any], bars: Any, task: Any) -> Iterator[Any]:
    for c in chunks:
        bars.advance(task, len(c[2]))
        yield c


def _advance(bars: Any, task: Any, events: int, since: float) -> None:
    bars.advance(task, events)
    done = next((t.completed for t in bars.tasks if t.id == task), 0)
    elapsed = time.perf_counter() - since
    bars.update(task, rate=f"{done / elapsed:,.0f} events/s" if elapsed > 0 else "")


def _flush(projector: ViewWriter, pending: dict[str, list[tuple[str, list[Event]]]], now: datetime) -> None:
    if pending:
        # Replay claims (source "R") never count a message the live projector claimed, and vice versa.
        projector.record(None, now, chunks=pending, source="R")
        if isinstance(projector.store, BufferedViewStore):
            projector.store.maybe_flush()


def _normalise(item: dict[str, Any]) -> tuple[str, Any]:
    plain = from_ddb(item)
    key = f"{plain.pop('pk')}|{plain.pop('sk')}"
    if "body" in plain:
        plain["body"] = decode_body(plain["body"])
    for name in IGNORED_ATTRIBUTES:
        plain.pop(name, None)
    return key, json.loads(json.dumps(plain, sort_keys=True, default=str))


def settle_view(client: Any, prefix: str, version: int, now: datetime | None = None) -> int:
    """Settle every pending delta page of every tenant in a view version (``chalicelib.pages``): what the
    live projector has written but not yet folded into the per-account items. Returns the pages settled."""
    now = now or datetime.now(UTC)
    store = ViewStore(client, keys.view_table_name(prefix, version))
    writer = ViewWriter(store, ScoreModelStore(client, keys.control_table_name(prefix)), deferred=True,
                        fold=fold_for(version))
    tenants = {i["pk"]["S"].split("#P#", 1)[0] for i in _scan(client, store.table)
               if "#P#" in i["pk"]["S"] and i["sk"]["S"].startswith(keys.PAGE_PREFIX)}
    before = store.stats.writes
    for tenant in sorted(tenants):
        writer.settle(tenant, now, force=True)
    return store.stats.writes - before if tenants else 0


def compare(client: Any, prefix: str, a: int, b: int, *, settle: bool = True) -> Comparison:
    """Item-by-item difference of two view versions (time-dependent score fields aside; claim pages,
    which name the batch that wrote them, skipped; "last seen" times equal within
    :data:`streams.writer.LAST_SEEN_STEP`, the lag a live view is allowed). Pending delta pages are settled
    first (``settle``): the comparison is of what the API serves, not of when the projector folded it."""
    if settle:
        settle_view(client, prefix, a)
        settle_view(client, prefix, b)
    left = dict(_normalise(i) for i in _scan(client, keys.view_table_name(prefix, a)) if not _claims(i))
    right = dict(_normalise(i) for i in _scan(client, keys.view_table_name(prefix, b)) if not _claims(i))
    meta = f"{keys.META_PK}|{keys.FOLD_CODE_SK}"
    codes = [sorted(str(c) for c in (side.pop(meta, None) or {}).get("codes") or ()) for side in (left, right)]
    result = Comparison(a, b, len(left), len(right), codes_a=codes[0], codes_b=codes[1])
    result.only_a = sorted(set(left) - set(right))
    result.only_b = sorted(set(right) - set(left))
    result.different = sorted(k for k in set(left) & set(right) if left[k] != right[k]
                              and not same_but_recency(left[k], right[k])
                              and not same_but_recency(right[k], left[k]))
    # A few differing items in full, so an operator can see what differs without a scan of their own.
    result.samples = {k: {"a": left[k], "b": right[k]} for k in result.different[:3]}
    result.samples.update({k: {"a": left[k], "b": None} for k in result.only_a[:2]})
    result.samples.update({k: {"a": None, "b": right[k]} for k in result.only_b[:2]})
    return result


def _claims(item: dict[str, Any]) -> bool:
    """Claim pages, delta-page bookkeeping and recorded stream positions: they name the batches that wrote them,
    not view content."""
    return (item["sk"]["S"].startswith(keys.CLAIM_PAGE_PREFIX) or "#P#" in item["pk"]["S"]
            or item["pk"]["S"] == catchup.CATCHUP_PK)


def build(client: Any, prefix: str, version: int, writer: Any, *, workers: int = 1, progress: bool = False,
          fresh: bool = False, partition_events: int = PARTITION_EVENTS, partition_entities: int = PARTITION_ENTITIES,
          delay: float = catchup.RECORDING_DELAY, now: datetime | None = None) -> dict[str, Any]:
    """Build a version that is not serving, beside the live one, and leave it current (``replay view``):

    1. register it ``building`` in phase ``replaying`` with its fold code: within ``delay`` every live projector
       records the stream positions of the batches it handles (:mod:`streams.catchup`) and writes nothing to it;
    2. :func:`rebuild` it from the day tables (resumable: a killed build run again goes on from its last done
       partition; a build killed in its catch-up goes on with the catch-up);
    3. rebuild its search index from its table (:func:`streams.catchup.reindex`);
    4. catch up from the recorded positions and switch it to phase ``current``: the live projector writes it,
       with its own fold code, until it is promoted or retired.

    ``writer``: the live projector's writer of this version (``streams.handler.new_writer(version)``).
    ``fresh`` starts the rebuild over. Returns what each step did."""
    control = keys.control_table_name(prefix)
    if version == active_view_version(client, control, cached=False):
        raise ValueError(f"view version {version} is serving: build the change under a new version number")
    tables.ensure_view_table(client, prefix, version)
    registry = ProjectionRegistry(client, prefix)
    phase, caught_up_to = registry.phase(version)
    out: dict[str, Any] = {"version": version, "code_version": fold_for(version).code}
    resume = phase == "replaying" and not fresh
    if not resume:
        registry.register_building(version, out["code_version"], phase="replaying")
        time.sleep(delay)  # every projector records this version's positions from now on
    if not (resume and caught_up_to is not None):  # else: killed in its catch-up, the rebuild was done
        out["rebuild"] = vars(rebuild(client, prefix, version, workers=workers, progress=progress, fresh=fresh,
                                      partition_events=partition_events, partition_entities=partition_entities,
                                      register=False, now=now))
        registry.set_phase(version, "replaying", caught_up_to=catchup.REBUILT)
    out["search_index"] = catchup.reindex(client, prefix, version)
    out["catch_up"] = vars(catchup.catch_up(client, prefix, version, writer))
    return out


def promote(client: Any, prefix: str, version: int) -> dict[str, Any]:
    """Make ``version`` the serving one: one transaction on the active-version record, which every API process
    and projector re-reads within :data:`chalicelib.versions.TTL_SECONDS` (each request reads one version).

    Only a version the live projector keeps current (phase ``current``, after :func:`build`) can be promoted:
    there is nothing to catch up, so no day table is scanned. The version it replaces stays ``current``
    (written on, for a rollback) until it is retired."""
    control = keys.control_table_name(prefix)
    previous = active_view_version(client, control, cached=False)
    if version != previous:
        phase, _ = ProjectionRegistry(client, prefix).phase(version)
        if phase != "current":
            raise ValueError(f"view version {version} is not current (phase {phase}): "
                             f"`streamfold replay view --version {version}` builds and catches it up first")
        set_active_view_version(client, control, version)
    return {"version": version, "previous": previous}
