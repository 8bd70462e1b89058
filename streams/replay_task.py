"""The partitioned replay beyond one machine: its passes as Lambda tasks of a Step Functions state machine.

``streamfold replay view --version N`` plans, spools and folds on one machine (:mod:`streams.replay`). On AWS
the same three passes run as tasks of the state machine ``<stack>-replay`` (``cfn/compute-extras.json``), each
pass cut into units the orchestrator fans out with a Distributed Map:

1. ``prepare`` (one task): create the view table, record the version as *building*, and cut every day table
   into parallel-scan segments (``Segment``/``TotalSegments``), about :data:`SEGMENT_CHUNKS` stored chunks
   each; the list is ``segments.json``.
2. ``ids`` (one task per segment): the ids its events name, as a partial :class:`streams.partition.Plan`
   (a union-find forest and the events per id).
3. ``assign`` (one task): the partial plans merged into the whole plan and cut into partitions, exactly as
   :func:`streams.partition.plan` cuts them on one machine (components depend on the data only); the
   manifest ``manifest.json`` lists the partitions.
4. ``spool`` (one task per segment): the segment's events, split by partition, one object per (partition,
   segment): ``spool/part-PPPPP/<table>.<segment>.pickle``.
5. ``fold`` (one task per batch of partitions, ``ItemBatcher``): the unit of work,
   :func:`streams.replay.fold_partitions` unchanged, on the partition's objects concatenated in one local
   file (a spooled partition is a stream of pickles, so segments concatenate); a partition is done once the
   table has it, recorded as the object ``done/part-PPPPP``, and a retried or redriven batch skips it.
6. ``finish`` (one task): every partition of the manifest done, or the execution fails.

Where the run's objects live is a :class:`Spool`: an S3 prefix (``s3://bucket/prefix``) on AWS, a local
directory otherwise (the same tasks, run by a test or by hand). Every task takes what Step Functions sends a
Lambda (``{"Items": [...], "BatchInput": {...}}`` from a batched map) and returns JSON.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from chalicelib import db, keys, tables
from chalicelib.chunks import unpack_chunk
from chalicelib.log import logger
from chalicelib.registry import ProjectionRegistry
from chalicelib.settings import get_settings
from projections.events import Event
from projections.folds import fold_for
from streams import catchup, partition, replay

__all__ = ["SEGMENT_CHUNKS", "FOLD_BATCH", "Spool", "LocalSpool", "S3Spool", "open_spool", "plan_task",
           "fold_task", "segment_chunks", "FOLD_CONCURRENCY", "SCAN_CONCURRENCY"]

SEGMENT_CHUNKS = 30_000
"""Stored chunks per scan segment (≈ 3,000,000 events at the bench's 100 events per chunk: a segment's ids in
≈ 25 s and its spool in ≈ 130 s on one core, inside Lambda's 15 minutes, its spool ≈ 750 MB in memory). Fewer,
bigger segments mean fewer spool objects: one per (partition, segment)."""

FOLD_BATCH = 4
"""Partitions per fold task (``ItemBatcher.MaxItemsPerBatch``): 4 × 25,000 events ≈ 40 s at the measured
≈ 2,500 events/s fold, so a retried task repeats little, and the per-task overhead stays small."""

FOLD_CONCURRENCY = 24
"""Fold tasks at once by default: 24 × ≈ 2,500 events/s × 0.67 write units per event ≈ 40,000 write units/s, an
on-demand table's default throughput quota (docs/PERFORMANCE.md); more only throttles."""

SCAN_CONCURRENCY = 100
"""Segment tasks (ids, spool) at once by default: they read the day tables and write S3 only."""

SPOOL_ENV = "STREAMFOLD_REPLAY_SPOOL"
"""Environment variable naming the spool of the Lambda tasks (``s3://<bucket>/replay``)."""


# --- the spool: a local directory or an S3 prefix -----------------------------------------------------------


class Spool:
    """The objects of replay runs, by relative name (``<run>/manifest.json``)."""

    uri: str

    def put(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, name: str) -> bytes:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def names(self, prefix: str) -> list[str]:
        """Names under ``prefix``, sorted."""
        raise NotImplementedError

    def upload(self, name: str, path: Path) -> None:
        self.put(name, path.read_bytes())

    def download(self, names: list[str], path: Path) -> None:
        """The objects, concatenated in this order, into one local file."""
        with open(path, "wb") as f:
            for name in names:
                f.write(self.get(name))

    def locate(self, name: str) -> tuple[str, str]:
        """``(bucket, key)`` of an object for a Distributed Map's ``ItemReader`` (a local spool: its directory)."""
        raise NotImplementedError


class LocalSpool(Spool):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # whole or absent, as an S3 PUT

    def get(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def names(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file()
                      and not p.name.endswith(".tmp"))

    def locate(self, name: str) -> tuple[str, str]:
        return str(self.root), name


class S3Spool(Spool):
    def __init__(self, s3: Any, bucket: str, prefix: str = "") -> None:
        self.s3, self.bucket, self.prefix = s3, bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def upload(self, name: str, path: Path) -> None:
        self.s3.upload_file(str(path), self.bucket, self._key(name))  # multipart above 8 MB

    def get(self, name: str) -> bytes:
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        return data

    def exists(self, name: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(name))
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def names(self, prefix: str) -> list[str]:
        names = []
        strip = len(self._key(""))
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            names += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(names)

    def locate(self, name: str) -> tuple[str, str]:
        return self.bucket, self._key(name)


_s3_lock = threading.Lock()
_s3: Any = None


def _s3_client() -> Any:
    """One S3 client per process (creating clients is not thread-safe; using one is)."""
    global _s3
    with _s3_lock:
        if _s3 is None:
            _s3 = boto3.client("s3")
        return _s3


def open_spool(uri: str, s3: Any = None) -> Spool:
    """``s3://bucket/prefix`` or a local directory."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        return S3Spool(s3 or _s3_client(), bucket, prefix)
    return LocalSpool(Path(uri))


# --- the names of a run's objects ---------------------------------------------------------------------------


def _job_name(run: str) -> str:
    return f"{run}/job.json"


def _segments_name(run: str) -> str:
    return f"{run}/segments.json"


def _manifest_name(run: str) -> str:
    return f"{run}/manifest.json"


def _ids_name(run: str, seg: dict[str, Any]) -> str:
    return f"{run}/ids/{_seg_id(seg)}.pickle"


def _part_prefix(run: str, p: int) -> str:
    return f"{run}/spool/part-{p:05d}/"


def _done_name(run: str, p: int) -> str:
    return f"{run}/done/part-{p:05d}"


def _seg_id(seg: dict[str, Any]) -> str:
    return f"{seg['table']}.{int(seg['segment']):05d}"


# --- the passes ---------------------------------------------------------------------------------------------


def segment_chunks(client: Any, seg: dict[str, Any]) -> Iterator[tuple[str, str, list[Event]]]:
    """``(tenant, chunk id, events)`` of one parallel-scan segment of a day table (poison skipped, as
    :func:`streams.replay.iter_chunks` skips it)."""
    table = seg["table"]
    for item in db.items(client, "scan", TableName=table, Segment=int(seg["segment"]),
                         TotalSegments=int(seg["total"])):
        try:
            tenant, wire = unpack_chunk(item)
            events = [Event.from_wire(w) for w in wire]
        except (ValueError, KeyError) as exc:
            logger.warning("skipping poison chunk %s: %s", item.get("pk", {}).get("S"), exc)
            continue
        yield tenant, f"{table}|{item.get('pk', {}).get('S')}", events


def _segments(client: Any, prefix: str, *, last_tables: int | None, segments: int | None) -> list[dict[str, Any]]:
    day_tables = tables.list_event_tables(client, prefix)
    if last_tables is not None:
        day_tables = day_tables[-last_tables:]
    out = []
    for _, table in day_tables:
        if segments:
            total = segments
        else:
            count = int((tables.describe(client, table) or {}).get("ItemCount", 0))  # refreshed ~6-hourly
            total = max(1, min(1_000_000, -(-count // SEGMENT_CHUNKS)))
        out += [{"table": table, "segment": s, "total": total} for s in range(total)]
    return out


def prepare(spool: Spool, job: dict[str, Any], *, client: Any) -> dict[str, Any]:
    """The run's job, its segments, and what the state machine reads next (bucket and keys)."""
    prefix, version, run = job["prefix"], int(job["version"]), job["run"]
    table = tables.ensure_view_table(client, prefix, version)
    if not spool.exists(_job_name(run)) and client.scan(TableName=table, Limit=1).get("Items"):
        # Another run's partitions (another plan, other batch tags) may be in it: folding ours on top could
        # count an event twice. Resume a run by redriving its execution; start over from a dropped table.
        raise RuntimeError(f"{table} is not empty: redrive the execution that built it, or drop the table first")
    # Replaying: the live projectors record the positions they handle for the catch-up from now on (the state
    # machine waits RECORDING_DELAY before the scans); `streamfold replay view --version N` catches up after Finish.
    ProjectionRegistry(client, prefix).register_building(version, fold_for(version).code, phase="replaying")
    segs = _segments(client, prefix, last_tables=job.get("last_tables"), segments=job.get("segments"))
    spool.put(_segments_name(run), json.dumps(segs).encode())
    spool.put(_job_name(run), json.dumps(job).encode())
    bucket, segments_key = spool.locate(_segments_name(run))
    _, manifest_key = spool.locate(_manifest_name(run))
    _, results_prefix = spool.locate(f"{run}/results")
    return {"bucket": bucket, "segments_key": segments_key, "manifest_key": manifest_key,
            "results_prefix": results_prefix, "segments": len(segs), "fold_batch": int(job["fold_batch"]),
            "max_concurrency": int(job["max_concurrency"]), "scan_concurrency": int(job["scan_concurrency"]),
            "job": job}


def scan_ids(spool: Spool, job: dict[str, Any], seg: dict[str, Any], *, client: Any) -> dict[str, Any]:
    """Pass 1 of one segment: its ids as a partial plan (not cut into partitions)."""
    part = partition.Plan()
    events = 0
    for tenant, _, wires in _raw_segment_chunks(client, seg):
        for w in wires:
            part.add(partition.wire_nodes(tenant, w))
            events += 1
    # Only roots and weights matter to the merge: compress every path first.
    forest = {n: part.find(n) for n in list(part.parent)}
    spool.put(_ids_name(job["run"], seg), pickle.dumps((forest, dict(part.weight)),
                                                       protocol=pickle.HIGHEST_PROTOCOL))
    return {"segment": _seg_id(seg), "ids": len(forest), "events": events}


def _raw_segment_chunks(client: Any, seg: dict[str, Any]) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    for item in db.items(client, "scan", TableName=seg["table"], Segment=int(seg["segment"]),
                         TotalSegments=int(seg["total"])):
        try:
            tenant, wire = unpack_chunk(item)
        except (ValueError, KeyError):
            continue  # counted as poison by the pass that spools
        yield tenant, "", [w for w in wire if isinstance(w, dict)]


def assign(spool: Spool, job: dict[str, Any]) -> dict[str, Any]:
    """The partial plans merged into the whole plan, cut into partitions; the manifest of the fold."""
    run = job["run"]
    whole = partition.Plan()
    for name in spool.names(f"{run}/ids/"):
        forest, weights = pickle.loads(spool.get(name))  # written by this run's ids tasks
        for node, root in forest.items():
            whole.union([node, root] if node != root else [node])
        whole.weight.update(weights)
    whole.assign(int(job["max_events"]), int(job["max_entities"]))
    spool.put(f"{run}/plan.pickle", pickle.dumps(whole, protocol=pickle.HIGHEST_PROTOCOL))
    manifest = [{"partition": p, "events": n} for p, n in enumerate(whole.events)]
    spool.put(_manifest_name(run), json.dumps(manifest).encode())
    return {"partitions": whole.partitions, "events": sum(whole.events), "ids": len(whole.parent)}


def spool_segment(spool: Spool, job: dict[str, Any], seg: dict[str, Any], *, client: Any) -> dict[str, Any]:
    """Pass 2 of one segment: its events, split by partition, one object per non-empty partition, in the format of
    :class:`streams.partition.PartitionSpool` (a stream of pickled ``(tenant, chunk id, events)``). Held in memory
    (≈ 250 B per event pickled), not in one open file per partition: Lambda allows 1,024 open files, a replay of
    1,000,000,000 events has 40,000 partitions."""
    run = job["run"]
    the_plan: partition.Plan = pickle.loads(spool.get(f"{run}/plan.pickle"))  # written by this run's assign
    parts: dict[int, io.BytesIO] = {}
    chunks = events = 0
    for tenant, chunk, evs in segment_chunks(client, seg):
        split: dict[int, list[Event]] = {}
        for e in evs:
            split.setdefault(the_plan.route(partition.event_nodes(tenant, e)), []).append(e)
        for p, part in split.items():
            pickle.dump((tenant, chunk, part), parts.setdefault(p, io.BytesIO()), protocol=pickle.HIGHEST_PROTOCOL)
        chunks += 1
        events += len(evs)
    for p in sorted(parts):
        spool.put(_part_prefix(run, p) + _seg_id(seg) + ".pickle", parts.pop(p).getvalue())
    return {"segment": _seg_id(seg), "chunks": chunks, "events": events}


def _mark_done(spool: Spool, run: str, p: int, events: int) -> None:
    spool.put(_done_name(run, p), json.dumps({"events": events}).encode())


def fold(spool: Spool, job: dict[str, Any], items: list[dict[str, Any]], *, client: Any) -> dict[str, Any]:
    """Pass 3 of a batch of partitions: :func:`streams.replay.fold_partitions`, unchanged, on local copies of the
    partitions not yet done; each is marked done in the spool once the table has it."""
    run = job["run"]
    wanted = [int(i["partition"]) for i in items]
    todo = [p for p in wanted if not spool.exists(_done_name(run, p))]
    result: dict[str, Any] = {"partitions": 0, "batches": 0, "flushes": 0, "writes": 0, "write_units": 0.0}
    if todo:
        with tempfile.TemporaryDirectory(prefix="fold-") as tmp:
            for p in todo:
                spool.download(spool.names(_part_prefix(run, p)), Path(tmp) / f"part-{p:05d}.pickle")
            result = replay.fold_partitions(job["prefix"], int(job["version"]), tmp, todo, job["now"],
                                            int(job["max_events"]), client=client,
                                            progress=lambda d: _mark_done(spool, run, d[0], d[1]))
    return {**result, "skipped": len(wanted) - len(todo), "folded": todo}


def finish(spool: Spool, job: dict[str, Any], *, client: Any) -> dict[str, Any]:
    """The run is built once every partition of its manifest is done; otherwise the execution fails (redrive it)."""
    run = job["run"]
    manifest = json.loads(spool.get(_manifest_name(run)))
    done = {int(n.rsplit("-", 1)[1]) for n in spool.names(f"{run}/done/")}
    missing = [m["partition"] for m in manifest if m["partition"] not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} partitions not folded (e.g. {missing[:5]}): redrive the execution")
    summary = {"version": int(job["version"]), "partitions": len(manifest),
               "events": sum(m["events"] for m in manifest), "finished": datetime.now(UTC).isoformat()}
    spool.put(f"{run}/finished.json", json.dumps(summary).encode())
    # Rebuilt: what is left is the search index and the catch-up (`streamfold replay view --version N` goes on
    # from here, never folding the day tables again).
    ProjectionRegistry(client, job["prefix"]).set_phase(int(job["version"]), "replaying",
                                                        caught_up_to=catchup.REBUILT)
    return summary


# --- the Lambda entry points (what app.py's replay_plan and replay_fold call) --------------------------------


def _job(options: dict[str, Any], run: str) -> dict[str, Any]:
    """The execution's input with its defaults: what every later task gets as ``BatchInput.job``."""
    version = int(options["version"])
    prefix = options.get("prefix") or get_settings().table_prefix
    return {"prefix": prefix, "version": version, "run": f"{keys.view_table_name(prefix, version)}/{run}",
            "spool": options.get("spool") or _default_spool(),
            "now": options.get("now") or datetime.now(UTC).isoformat(),
            "max_events": int(options.get("partition_events") or replay.PARTITION_EVENTS),
            "max_entities": int(options.get("partition_entities") or replay.PARTITION_ENTITIES),
            "fold_batch": int(options.get("fold_batch") or FOLD_BATCH),
            "max_concurrency": int(options.get("max_concurrency") or FOLD_CONCURRENCY),
            "scan_concurrency": int(options.get("scan_concurrency") or SCAN_CONCURRENCY),
            "last_tables": options.get("last_tables"), "segments": options.get("segments")}


def _default_spool() -> str:
    uri = os.environ.get(SPOOL_ENV)
    if not uri:
        raise RuntimeError(f"no spool: set {SPOOL_ENV} (s3://bucket/prefix) or pass 'spool' in the input")
    return uri


def plan_task(event: dict[str, Any], context: Any = None, *, client: Any = None) -> dict[str, Any]:
    """Every step but the fold, by ``step``: ``prepare`` (the execution's input and ``run``), then ``ids`` and
    ``spool`` (a batched map's ``{"Items": [segment], "BatchInput": {"step", "job"}}``), ``assign``, ``finish``
    (``{"step", "job"}``)."""
    client = client or db.get_client()
    batch = event.get("BatchInput") or {}
    step = event.get("step") or batch.get("step")
    if step == "prepare":
        job = _job(event.get("input") or {}, str(event["run"]))
        return prepare(open_spool(job["spool"]), job, client=client)
    given = event.get("job") or batch.get("job")
    if not isinstance(given, dict):
        raise ValueError(f"step {step!r} needs its job (the prepare step's output)")
    job = given
    spool = open_spool(job["spool"])
    if step == "ids":
        return {"segments": [scan_ids(spool, job, seg, client=client) for seg in event["Items"]]}
    if step == "assign":
        return assign(spool, job)
    if step == "spool":
        return {"segments": [spool_segment(spool, job, seg, client=client) for seg in event["Items"]]}
    if step == "finish":
        return finish(spool, job, client=client)
    raise ValueError(f"unknown step {step!r}")


def fold_task(event: dict[str, Any], context: Any = None, *, client: Any = None) -> dict[str, Any]:
    """A Distributed Map's batch of partitions: ``{"Items": [{"partition", "events"}...], "BatchInput": {"job"}}``."""
    job = event["BatchInput"]["job"]
    return fold(open_spool(job["spool"]), job, list(event["Items"]), client=client or db.get_client())

