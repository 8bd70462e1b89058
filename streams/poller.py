"""The local Event Source Mapping runtime's poller: one thread per mapping, iterating its shards.

Per shard, as Lambda's stream pollers do:

* ``GetRecords`` at most once per ``poll_interval`` (AWS: 4 times a second) while the read-ahead
  buffer is short of a batch; order within a shard is kept; a child shard is read only after its
  parent is finished (``NextShardIterator`` absent and everything delivered);
* a batch is ``BatchSize`` records (at most 6 MB), sent when full, when the batching window has
  passed, or at once when the window is 0; it runs on a worker thread at every factor, so reading goes on
  meanwhile and the window of the records behind it counts from when they were read;
* the checkpoint (last sequence number done) only moves past records that succeeded or were sent
  to the on-failure destination. ``ReportBatchItemFailures``: move to just before the lowest
  failed sequence number and retry from there. Function error: bisect (halves, recursively,
  without counting a retry) when enabled, else retry; when ``MaximumRetryAttempts`` is used up
  or records are older than ``MaximumRecordAgeInSeconds`` they go to the dead-letter store and the
  shard moves on;
* ``ParallelizationFactor`` N > 1: a shard's records are dealt by a hash of the item's key into N
  *lanes* (AWS: "in-order processing at the item (partition and sort key) level"; the day tables' key
  is the partition key alone). Each lane batches its own records in order and runs one invocation at a
  time, on a worker thread, concurrently with the others. Every record is tracked in read order, and the
  shard checkpoint moves past a record only once it and every record before it, in every lane, are done
  (succeeded or dead-lettered): a batch that finished early waits for the older ones, and after a crash
  everything after the checkpoint is delivered again. A failed batch (function error, reported item
  failure) holds the shard as Lambda does ("it stops processing additional records in a shard if your
  function returns an error"): the batches already running finish, no lane starts a new one, and the
  failed lane retries, bisects, or dead-letters its records (retries, bisect, maximum age and the
  on-failure destination act per lane, on that lane's records only) until its records are resolved.
  Disabling (a swap), and stopping, wait for every running batch, then run the records older than the
  newest one done, so that the checkpoint lies exactly past every record handled and the next colour
  neither skips nor repeats one.

DynamoDB Local specifics handled here: stream records show up ~50-150 ms after the write; an
iterator taken on an *empty* shard (``TRIM_HORIZON`` or ``LATEST``) points at the shard's
starting sequence number and raises ``TrimmedDataAccessException`` once records exist, so the
poller re-takes its iterator from its position; iterators expire (``ExpiredIteratorException``);
``ApproximateCreationDateTime`` is truncated to the minute, so ages are up to 60 s high locally.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import socket
import threading
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.db import table_names
from chalicelib.log import logger
from streams.decode import record_epoch, sequence_key, to_lambda_record
from streams.functions import FunctionNotAvailable, FunctionRegistry
from streams.functions import registry as default_registry
from streams.mapping import Mapping, arn_matches, table_name_of
from streams.store import Checkpoint, ControlStore, LeaseLost
from streams.wire import DynamoDBStreamRecord, OnFailureRecord

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "HostCrash",
    "MappingPoller",
    "RuntimeOptions",
    "ShardLag",
    "ShardState",
    "discover_streams",
    "lane_of",
    "owner_is_dead",
    "runtime_owner",
]


MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
MAX_CONCURRENT_BATCHES = 64  # worker threads of one poller (ParallelizationFactor <= 10 per shard)
GET_RECORDS_MAX = 1000  # DynamoDB Streams' GetRecords limit


class HostCrash(BaseException):
    """Raised by a handler (in tests) to simulate the runtime host dying mid-batch.

    Like ``SystemExit`` it is not an ``Exception``: the poller thread ends at once, writes no
    checkpoint and keeps its lease, as a killed process would.
    """


@dataclass(frozen=True)
class RuntimeOptions:
    """Tunables of the local runtime (defaults follow AWS where AWS has one).

    Attributes:
        poll_interval: seconds between ``GetRecords`` calls per shard (AWS: 0.25).
        discovery_interval: seconds between looks for new day tables, streams and shards.
        retry_base_delay / retry_max_delay: exponential backoff between retries of a batch.
        lease_seconds: how long a runtime's claim on a mapping lasts without renewal.
        gauge_interval: how often lag gauges are written to the checkpoint items.
        error_base_delay / error_max_delay: backoff (full jitter) after a failed loop iteration — a
            storage error, a timeout, a frozen DynamoDB — before the poller resumes from its checkpoints.
        clock: wall clock (epoch seconds) used for record ages; injectable for tests.
    """

    poll_interval: float = 0.25
    discovery_interval: float = 10.0
    retry_base_delay: float = 1.0
    retry_max_delay: float = 30.0
    lease_seconds: float = 15.0
    gauge_interval: float = 5.0
    error_base_delay: float = 0.5
    error_max_delay: float = 5.0
    clock: Callable[[], float] = time.time


@dataclass
class _Piece:
    records: list[DynamoDBStreamRecord]
    retries: int = 0


@dataclass
class _Invocation:
    """A batch running on a worker thread (``ParallelizationFactor`` > 1)."""

    piece: _Piece
    records: list[DynamoDBStreamRecord]
    future: Future[Any]


@dataclass
class _Lane:
    """One of a shard's concurrent batches: the records whose item key hashes to it, in stream order."""

    buffer: deque[tuple[DynamoDBStreamRecord, int]] = field(default_factory=deque)
    inflight: deque[_Piece] = field(default_factory=deque)
    first_buffered_at: float | None = None
    next_attempt_at: float = 0.0
    running: _Invocation | None = None
    failing: bool = False  # an attempt failed and its records are not resolved yet: the shard waits


@dataclass
class _Tracked:
    record: DynamoDBStreamRecord
    done: bool = False


@dataclass
class ShardLag:
    """Lag of one shard: known records not yet done and the age of the oldest of them."""

    stream_arn: str
    shard_id: str
    checkpoint: str | None
    finished: bool
    records_behind: int
    more_behind: bool
    iterator_age_ms: int


@dataclass
class ShardState:
    """In-memory state of one shard of one stream."""

    stream_arn: str
    shard_id: str
    parent_shard_id: str | None
    checkpoint: str | None = None
    finished: bool = False
    iterator: str | None = None
    read_position: str | None = None  # last sequence number fetched into the lanes
    lanes: list[_Lane] = field(default_factory=lambda: [_Lane()])
    # Every record read and not yet checkpointed, in stream order; the checkpoint moves over the done prefix.
    tracked: deque[_Tracked] = field(default_factory=deque)
    by_sequence: dict[str, _Tracked] = field(default_factory=dict)
    end_reached: bool = False
    more_behind: bool = False
    next_poll_at: float = 0.0
    trimmed_errors: int = 0
    trim_gap_after: str | None = None  # re-reading from TRIM_HORIZON after this position: check for a gap

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream_arn, self.shard_id)

    @property
    def factor(self) -> int:
        return len(self.lanes)

    def reset_position(self, factor: int | None = None) -> None:
        """Forget buffered and in-flight records: the next read starts after the checkpoint.

        Running invocations are forgotten too: the poller waits for them first (:meth:`MappingPoller._quiesce`).
        """
        self.iterator = None
        self.read_position = self.checkpoint
        self.lanes = [_Lane() for _ in range(factor or self.factor)]
        self.tracked.clear()
        self.by_sequence.clear()
        self.end_reached = False

    def running(self) -> list[_Invocation]:
        return [lane.running for lane in self.lanes if lane.running is not None]

    def held(self) -> bool:
        """A batch failed and its records are not resolved yet: no other lane starts a batch."""
        return any(lane.failing for lane in self.lanes)

    def buffered(self) -> int:
        return sum(len(lane.buffer) for lane in self.lanes)

    def idle(self) -> bool:
        """Nothing read and not yet done, nothing running."""
        return not self.tracked and not self.running()

    def pending(self) -> list[DynamoDBStreamRecord]:
        """Records read and not done yet, in stream order."""
        return [t.record for t in list(self.tracked) if not t.done]  # a copy: lag() reads from other threads


class MappingPoller(threading.Thread):
    """Polls every shard of one mapping's streams and invokes its target function.

    Args:
        mapping_uuid: the mapping to run.
        store: control-table access (mapping, lease, checkpoints, dead letters).
        ddb: low-level ``dynamodb`` client (table discovery).
        streams: ``dynamodbstreams`` client.
        options: runtime tunables.
        functions: the function registry targets are resolved in.
    """

    def __init__(self, mapping_uuid: str, store: ControlStore, ddb: Any, streams: Any,
                 options: RuntimeOptions | None = None, functions: FunctionRegistry | None = None) -> None:
        super().__init__(name=f"esm-{mapping_uuid[:8]}", daemon=True)
        self.uuid = mapping_uuid
        self.store = store
        self.ddb = ddb
        self.streams = streams
        self.options = options or RuntimeOptions()
        self.functions = functions or default_registry
        self.owner = runtime_owner()
        self.mapping: Mapping | None = None
        self.shards: dict[tuple[str, str], ShardState] = {}
        self.crashed: BaseException | None = None
        self.lease_lost = False
        self.errors = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._kill = threading.Event()
        self._lock = threading.Lock()
        self._has_lease = False
        self._lease_renewed_at = 0.0
        self._next_discovery = 0.0
        self._next_gauges = 0.0
        self._loaded = False
        self._last_missing_log = 0.0
        self._table_arns: dict[str, str] = {}
        self._pool: ThreadPoolExecutor | None = None  # worker threads of concurrent batches (factor > 1)
        self._wake = threading.Event()  # a concurrent batch finished
        # Records done past a shard's checkpoint when its lanes were dropped: done at once when read again.
        self._remembered: dict[tuple[str, str], set[str]] = {}

    # --- lifecycle --------------------------------------------------------------------------
    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the in-flight invocation (its checkpoint is written) and release the lease."""
        self.request_stop()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def request_stop(self) -> None:
        """Ask the poller to stop (after its running batches); returns at once."""
        self._stopping.set()
        self._wake.set()

    def kill(self) -> None:
        """Simulate a crash: stop at once, write nothing more (not even the in-flight checkpoint)."""
        self._kill.set()
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False)

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    busy = self._step()
                    failures = 0
                except HostCrash:
                    raise
                except Exception as exc:
                    # A storage blip, a timeout, a frozen DynamoDB, a conflict during a swap: back off,
                    # forget what is in flight (it was not checkpointed, so it is read again) and resume.
                    failures += 1
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    delay = random.uniform(0.5, 1.0) * min(self.options.error_max_delay,
                                                           self.options.error_base_delay * 2 ** min(failures - 1, 16))
                    logger.warning("poller step failed; backing off, then resuming from the checkpoints",
                                   extra={"mapping": self.uuid, "error": self.last_error, "failures": failures,
                                          "delay_s": round(delay, 2)})
                    self._recover()
                    self._stopping.wait(delay)
                    continue
                if not busy:
                    self._pause(self._idle_wait())
            if not self._kill.is_set() and self._has_lease and self.mapping is not None:
                self._drain(self.mapping)  # the batches still running finish and are checkpointed
        except HostCrash as exc:
            self.crashed = exc
            if self.lease_lost:
                logger.error("poller stopped: lease lost", extra={"mapping": self.uuid})
            else:
                logger.error("poller crashed (simulated host crash)", extra={"mapping": self.uuid})
            return
        except BaseException as exc:
            self.crashed = exc
            logger.exception("poller crashed", extra={"mapping": self.uuid})
            if self._has_lease:
                try:  # the process lives on: let the supervisor's next poller take over at once
                    self.store.release_lease(self.uuid, self.owner)
                except Exception:
                    logger.exception("releasing the lease failed (it expires by itself)")
            return
        if not self._kill.is_set() and self._has_lease:
            try:
                self._write_gauges(force=True)
                self.store.release_lease(self.uuid, self.owner)
            except Exception:
                logger.exception("releasing the lease failed (it expires by itself)", extra={"mapping": self.uuid})

    def _recover(self) -> None:
        """After a failed iteration: drop in-flight state, re-check the lease, reload checkpoints."""
        self._remember_done()
        with self._lock:
            for s in self.shards.values():
                s.reset_position()
        self._loaded = False
        self._lease_renewed_at = 0.0  # renew (or find it lost) before anything else

    def _quiesce(self, *, apply: bool) -> None:
        """Wait for every running batch; with ``apply``, settle its result (checkpoint) as usual.

        Without ``apply`` the lanes forget it (:meth:`_remember_done` keeps what it finished): nothing of a
        shard runs twice at the same time.
        """
        mapping = self.mapping
        with self._lock:
            shards = list(self.shards.values())
        for s in shards:
            for lane in s.lanes:
                run = lane.running
                if run is None:
                    continue
                while not futures_wait([run.future], timeout=self.options.lease_seconds / 4).done:
                    self._keep_lease()  # a long batch must not let the lease expire while we wait
                if apply and mapping is not None:
                    self._settle(s, lane, mapping)
                else:
                    lane.running = None
                    self._remember(s, run)

    def _remember(self, s: ShardState, run: _Invocation) -> None:
        """Keep the records a dropped invocation finished, so they are not delivered again."""
        if run.future.exception() is not None or self.mapping is None:
            return
        response, error = run.future.result()
        failed_at: int | None = None
        if error is None and self.mapping.reports_item_failures:
            failed_at, error = _lowest_failure(response, run.records)
        if error is None:
            done = run.records if failed_at is None else run.records[:failed_at]
            self._remembered.setdefault(s.key, set()).update(r["dynamodb"]["SequenceNumber"] for r in done)

    def _remember_done(self) -> None:
        """Before the lanes are dropped to re-read from the checkpoints (a storage error, a reload): wait for
        the running batches and remember every record done past the checkpoint. Re-read, those count as done
        at once instead of being delivered again: concurrent batches finish out of order, and a batch that
        finished while an older one was still running would otherwise be applied twice (its chunks' tags may
        have left the counters' rings meanwhile)."""
        self._quiesce(apply=False)
        with self._lock:
            shards = list(self.shards.values())
        for s in shards:
            done = {t.record["dynamodb"]["SequenceNumber"] for t in list(s.tracked) if t.done}
            if done:
                self._remembered.setdefault(s.key, set()).update(done)

    def _drain(self, mapping: Mapping) -> None:
        """Finish the running batches, then the records older than the newest one done (their checkpoint).

        Only before the lanes are dropped (Disabled, a stop): the records run here stay in their lanes.
        """
        self._quiesce(apply=True)
        with self._lock:
            shards = list(self.shards.values())
        for s in shards:
            self._close_gaps(s, mapping)

    def _close_gaps(self, s: ShardState, mapping: Mapping) -> None:
        """Concurrent batches finish out of order: records after the checkpoint may be done while older ones, in
        other lanes, are not. Run those older ones (at most a lane's read-ahead each), in order, so the
        checkpoint moves past every record handled; a failure among them ends this (they and everything after
        them are delivered again later, at least once)."""
        tracked = list(s.tracked)
        newest = max((i for i, t in enumerate(tracked) if t.done), default=None)
        if newest is None:
            return
        gap = {t.record["dynamodb"]["SequenceNumber"] for t in tracked[:newest] if not t.done}
        try:
            handler, ctx = self.functions.resolve(mapping.function_name)
        except FunctionNotAvailable:
            return
        for lane in s.lanes:
            # A lane holds only records not done yet, in stream order: its gap records come first.
            pending = [r for p in lane.inflight for r in p.records] + [r for r, _ in lane.buffer]
            todo = [r for r in pending if r["dynamodb"]["SequenceNumber"] in gap]
            for i in range(0, len(todo), mapping.batch_size):
                chunk = todo[i:i + mapping.batch_size]
                self._keep_lease()
                response, error = _invoke(handler, ctx, chunk)
                if self._kill.is_set():
                    raise _Killed()
                failed_at: int | None = None
                if error is None and mapping.reports_item_failures:
                    failed_at, error = _lowest_failure(response, chunk)
                if error is None and failed_at is None:
                    self._done(s, chunk)
                    continue
                self._done(s, chunk[:failed_at or 0])
                logger.warning("a record older than a finished concurrent batch failed while pausing; it is "
                               "delivered again after the pause", extra={"mapping": self.uuid, "shard": s.shard_id,
                                                                          "error": error})
                return

    def _keep_lease(self) -> None:
        """Renew the lease while the poller waits for batches outside its loop; a lost lease ends it."""
        if self._kill.is_set() or not self._has_lease:
            return
        try:
            held = self._hold_lease()
        except Exception:  # storage unreachable: the lease is renewed on a later try, or expires
            return
        if not held:
            logger.error("lease lost; this poller stops", extra={"mapping": self.uuid})
            self.lease_lost = True
            self._stopping.set()
            raise _Killed()

    def _pause(self, seconds: float) -> None:
        """Wait until there is work: a poll is due, a window or retry delay has passed, a batch finished."""
        if any(s.running() for s in list(self.shards.values())):
            self._wake.wait(seconds)
            self._wake.clear()
        else:
            self._stopping.wait(seconds)

    def _idle_wait(self) -> float:
        now = time.monotonic()
        waits = [self.options.poll_interval]
        window = self.mapping.maximum_batching_window_in_seconds if self.mapping else 0
        for s in list(self.shards.values()):
            held = s.held()
            for lane in s.lanes:
                if lane.running is not None or (held and not lane.failing):
                    continue
                if lane.inflight:
                    waits.append(max(0.0, lane.next_attempt_at - now))
                elif lane.buffer and lane.first_buffered_at is not None:
                    waits.append(max(0.0, lane.first_buffered_at + window - now))
        return max(0.005, min(waits))

    # --- one loop iteration -----------------------------------------------------------------
    def _step(self) -> bool:
        item = self.store.get_mapping_item(self.uuid)
        if item is None:
            logger.info("mapping deleted; poller ends", extra={"mapping": self.uuid})
            self._stopping.set()
            return False
        if not self._hold_lease():
            return False
        mapping = Mapping.from_dict(item)
        self.mapping = mapping
        state = mapping.state
        if state == "Deleting":
            self.store.delete_mapping(self.uuid)
            self._has_lease = False
            self._stopping.set()
            return False
        if state in ("Disabling", "Disabled") or (state in ("Creating", "Updating") and not mapping.enabled):
            # Disabled means no batch in flight, and the checkpoint past every record handled (a swap then
            # neither skips nor repeats a record): the running batches finish, the gaps before them are closed.
            self._drain(mapping)
            with self._lock:
                for s in self.shards.values():
                    s.reset_position()
            self._loaded = False
            if state != "Disabled":
                self.store.update_mapping(self.uuid, {"State": "Disabled"}, expect_state=state)
            return False
        if state in ("Creating", "Enabling", "Updating"):
            if state == "Enabling":
                self._loaded = False
            self.store.update_mapping(self.uuid, {"State": "Enabled"}, expect_state=state)
        if not self._loaded:
            self._load_checkpoints()
        now = time.monotonic()
        if now >= self._next_discovery:
            self._discover()
            self._next_discovery = now + self.options.discovery_interval
        busy = False
        for shard in self._ready_shards():
            if self._stopping.is_set():
                break
            busy |= self._work(shard, mapping)
        self._write_gauges()
        return busy

    def _hold_lease(self) -> bool:
        now = time.monotonic()
        if self._has_lease and now - self._lease_renewed_at < self.options.lease_seconds / 3:
            return True
        ok = self.store.acquire_lease(self.uuid, self.owner, self.options.lease_seconds)
        if not ok:
            holder = self.store.lease_holder(self.uuid)
            if holder is not None and owner_is_dead(holder):
                # A runtime of this machine that was killed (kill -9) left its lease behind: take it now
                # rather than after it expires, so a restarted `streamfold up` resumes at once.
                ok = self.store.take_lease(self.uuid, self.owner, holder, self.options.lease_seconds)
                if ok:
                    logger.info("lease taken over from a dead runtime", extra={"mapping": self.uuid, "dead": holder})
        if ok and not self._has_lease:
            self._loaded = False  # someone else may have moved the checkpoints meanwhile
            logger.info("lease acquired", extra={"mapping": self.uuid, "owner": self.owner})
        self._has_lease = ok
        if ok:
            self._lease_renewed_at = now
        return ok

    # --- shards -----------------------------------------------------------------------------
    def _load_checkpoints(self) -> None:
        self._remember_done()
        with self._lock:
            self.shards.clear()
            for cp in self.store.checkpoints(self.uuid):
                s = ShardState(cp.stream_arn, cp.shard_id, cp.parent_shard_id, checkpoint=cp.sequence_number,
                               finished=cp.finished)
                s.reset_position()
                self.shards[s.key] = s
        self._loaded = True
        self._next_discovery = 0.0

    def _discover(self) -> None:
        """Find the mapping's streams (new day tables included) and their shards."""
        assert self.mapping is not None
        try:
            self._table_arns.update(discover_streams(self.ddb, self.mapping.event_source_arn))
        except (ClientError, BotoCoreError):
            logger.exception("discovering streams failed")
            return
        for arn in set(self._table_arns.values()) | {s.stream_arn for s in self.shards.values()}:
            self._discover_shards(arn)

    def _discover_shards(self, stream_arn: str) -> None:
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            try:
                desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
            except self.streams.exceptions.ResourceNotFoundException:
                return
            with self._lock:
                for sh in desc.get("Shards", []):
                    key = (stream_arn, sh["ShardId"])
                    if key not in self.shards:
                        self.shards[key] = ShardState(stream_arn, sh["ShardId"], sh.get("ParentShardId"))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return
            kwargs["ExclusiveStartShardId"] = last

    def _ready_shards(self) -> list[ShardState]:
        with self._lock:
            shards = list(self.shards.values())
        out = []
        for s in shards:
            if s.finished:
                continue
            parent = self.shards.get((s.stream_arn, s.parent_shard_id)) if s.parent_shard_id else None
            if parent is not None and not parent.finished:
                continue  # lineage: children wait for their parent to be finished
            out.append(s)
        return out

    # --- reading ----------------------------------------------------------------------------
    def _iterator(self, s: ShardState) -> str | None:
        kwargs: dict[str, Any] = {"StreamArn": s.stream_arn, "ShardId": s.shard_id}
        if s.read_position is not None and s.trimmed_errors < 2:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=s.read_position)
        else:
            if s.read_position is not None:
                logger.warning("position trimmed from the stream; restarting at TRIM_HORIZON",
                               extra={"shard": s.shard_id, "position": s.read_position})
                s.trim_gap_after = s.read_position
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])
        except self.streams.exceptions.ResourceNotFoundException:
            s.finished = True
            return None
        except self.streams.exceptions.TrimmedDataAccessException:
            # AFTER_SEQUENCE_NUMBER refused: the position is older than the stream's retention (24 h).
            s.trimmed_errors = 2
            s.next_poll_at = 0.0
            return None

    def _trim_gap(self, s: ShardState, records: list[DynamoDBStreamRecord]) -> list[DynamoDBStreamRecord]:
        """First read after a TRIM_HORIZON restart: skip what was done; a gap becomes a dead letter."""
        after, s.trim_gap_after = s.trim_gap_after, None
        assert after is not None
        done = [r for r in records if sequence_key(r["dynamodb"]["SequenceNumber"]) <= sequence_key(after)]
        rest = records[len(done):]
        if done:
            return rest  # the position is still in the stream: nothing was lost
        first = rest[0]["dynamodb"]["SequenceNumber"] if rest else None
        self._dead_letter_trimmed(s, after, first)
        return rest

    def _fetch(self, s: ShardState, mapping: Mapping) -> int:
        if s.end_reached or s.buffered() >= mapping.batch_size * s.factor:
            return 0
        now = time.monotonic()
        if now < s.next_poll_at:
            return 0
        s.next_poll_at = now + self.options.poll_interval
        if s.iterator is None:
            s.iterator = self._iterator(s)
            if s.iterator is None:
                return 0
        limit = min(GET_RECORDS_MAX, max(mapping.batch_size * s.factor, 100))  # a backlog fills every lane
        try:
            resp = self.streams.get_records(ShardIterator=s.iterator, Limit=limit)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            s.iterator = None
            if code == "TrimmedDataAccessException":
                # DynamoDB Local: an iterator taken on an empty shard goes stale once records exist.
                s.trimmed_errors += 1
                s.next_poll_at = 0.0
            elif code == "ExpiredIteratorException":
                s.next_poll_at = 0.0
            elif code == "ResourceNotFoundException":
                s.end_reached = True
            else:
                logger.warning("GetRecords failed", extra={"shard": s.shard_id, "code": code})
            return 0
        except BotoCoreError as exc:
            logger.warning("GetRecords failed", extra={"shard": s.shard_id, "error": repr(exc)})
            s.iterator = None
            return 0
        s.trimmed_errors = 0
        records = resp.get("Records", [])
        converted = [to_lambda_record(raw, s.stream_arn) for raw in records]
        if s.trim_gap_after is not None:
            converted = self._trim_gap(s, converted)
        now = time.monotonic()
        remembered = self._remembered.get(s.key, set())
        hit = False
        for rec in converted:
            seq = rec["dynamodb"]["SequenceNumber"]
            tracked = _Tracked(rec, done=seq in remembered)
            s.tracked.append(tracked)
            s.by_sequence[seq] = tracked
            s.read_position = seq
            if tracked.done:
                remembered.discard(seq)
                hit = True
                continue
            lane = s.lanes[lane_of(rec, s.factor)]
            lane.buffer.append((rec, len(json.dumps(rec))))
            if lane.first_buffered_at is None:
                lane.first_buffered_at = now
        if hit:
            self._done(s, [])  # remembered records at the front: the checkpoint moves over them
        s.more_behind = len(records) >= limit
        s.iterator = resp.get("NextShardIterator")
        if s.iterator is None:
            s.end_reached = True  # closed shard, fully read
        elif records:
            s.next_poll_at = 0.0  # more may be waiting: read again without the poll delay
        return len(records)

    # --- processing -------------------------------------------------------------------------
    def _work(self, s: ShardState, mapping: Mapping) -> bool:
        busy = False
        for lane in s.lanes:
            if lane.running is not None and lane.running.future.done():
                self._settle(s, lane, mapping)
                busy = True
        if s.factor != mapping.parallelization_factor:
            # A new shard, or the factor was updated: once nothing runs, (re-)read from the checkpoint into
            # that many lanes.
            if s.running():
                return busy
            s.reset_position(mapping.parallelization_factor)
        busy |= self._fetch(s, mapping) > 0
        # A failed batch holds the shard: only the failing lane(s) go on until their records are resolved.
        held = s.held()
        now = time.monotonic()
        for lane in s.lanes:
            if lane.running is not None or (held and not lane.failing):
                continue
            if not lane.inflight:
                batch = self._take_batch(lane, mapping, s.end_reached)
                if batch:
                    lane.inflight.append(_Piece(batch))
            if lane.inflight and now >= lane.next_attempt_at:
                self._attempt(s, lane, mapping)
                busy = True
        if s.end_reached and s.idle() and not s.finished:
            s.finished = True
            self._checkpoint(s, s.checkpoint)
            logger.info("shard finished", extra={"shard": s.shard_id, "stream": s.stream_arn})
        return busy

    def _take_batch(self, lane: _Lane, mapping: Mapping, end_reached: bool) -> list[DynamoDBStreamRecord]:
        if not lane.buffer:
            return []
        window = mapping.maximum_batching_window_in_seconds
        full = len(lane.buffer) >= mapping.batch_size
        waited = lane.first_buffered_at is not None and time.monotonic() - lane.first_buffered_at >= window
        if not (full or waited or window == 0 or end_reached):
            return []
        batch: list[DynamoDBStreamRecord] = []
        size = 0
        while lane.buffer and len(batch) < mapping.batch_size:
            rec, n = lane.buffer[0]
            if batch and size + n > MAX_PAYLOAD_BYTES:
                break
            lane.buffer.popleft()
            batch.append(rec)
            size += n
        lane.first_buffered_at = time.monotonic() if lane.buffer else None
        return batch

    def _attempt(self, s: ShardState, lane: _Lane, mapping: Mapping) -> None:
        """Invoke the function with the lane's first piece on a worker thread (the poller reads on meanwhile)."""
        piece = lane.inflight[0]
        if mapping.maximum_record_age_in_seconds != -1:
            now = self.options.clock()
            expired = 0
            while expired < len(piece.records) and \
                    now - record_epoch(piece.records[expired]) > mapping.maximum_record_age_in_seconds:
                expired += 1
            if expired:
                self._dead_letter(s, piece.records[:expired], "RecordAgeExceeded", None)
                piece.records = piece.records[expired:]
                if not piece.records:
                    lane.inflight.popleft()
                    self._resolved(lane)
                    return
        try:
            handler, ctx = self.functions.resolve(mapping.function_name)
        except FunctionNotAvailable as exc:
            if time.monotonic() - self._last_missing_log > 30:
                logger.error("target function not available; mapping stays Enabled and waits",
                             extra={"mapping": self.uuid, "function": mapping.function_name, "error": str(exc)})
                self._last_missing_log = time.monotonic()
            lane.next_attempt_at = time.monotonic() + max(1.0, self.options.poll_interval)
            return
        records = list(piece.records)
        # On a worker thread at every factor, 1 included: the poller goes on reading the shard while a batch
        # runs, as Lambda's does, so the batching window of the records behind it counts from when they were
        # read, not from the end of the invocation (which added an invocation's time to every record's lag).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_BATCHES,
                                            thread_name_prefix=f"esm-{self.uuid[:8]}-batch")
        future = self._pool.submit(_invoke, handler, ctx, records)
        future.add_done_callback(lambda _: self._wake.set())
        lane.running = _Invocation(piece, records, future)

    def _settle(self, s: ShardState, lane: _Lane, mapping: Mapping) -> None:
        """Apply the result of the lane's finished concurrent invocation (in the poller thread)."""
        run = lane.running
        assert run is not None
        lane.running = None
        exc = run.future.exception()
        if exc is not None:
            raise exc  # a simulated host crash (HostCrash) or a dying thread (SystemExit)
        response, error = run.future.result()
        self._apply(s, lane, mapping, run.piece, run.records, response, error)

    def _apply(self, s: ShardState, lane: _Lane, mapping: Mapping, piece: _Piece,
               records: list[DynamoDBStreamRecord], response: Any, error: str | None) -> None:
        """What an invocation's outcome does to the lane and the shard checkpoint."""
        if self._kill.is_set():
            raise _Killed()
        failed_at: int | None = None
        if error is None and mapping.reports_item_failures:
            failed_at, error = _lowest_failure(response, records)
        if error is None and failed_at is None:
            self._done(s, records)
            lane.inflight.popleft()
            lane.next_attempt_at = 0.0
            self._resolved(lane)
            return
        lane.failing = True
        if failed_at is not None:
            # ReportBatchItemFailures: everything before the lowest failure succeeded.
            if failed_at > 0:
                self._done(s, records[:failed_at])
            piece.records = records = records[failed_at:]
            error = "batch item failure reported"
        elif mapping.bisect_batch_on_function_error and len(records) > 1:
            mid = len(records) // 2  # splitting does not count towards the retry quota
            lane.inflight.popleft()
            lane.inflight.appendleft(_Piece(records[mid:], piece.retries))
            lane.inflight.appendleft(_Piece(records[:mid], piece.retries))
            return
        piece.retries += 1
        if mapping.maximum_retry_attempts != -1 and piece.retries > mapping.maximum_retry_attempts:
            self._dead_letter(s, records, "RetryAttemptsExhausted", error, attempts=piece.retries)
            lane.inflight.popleft()
            lane.next_attempt_at = 0.0
            self._resolved(lane)
            return
        delay = min(self.options.retry_max_delay, self.options.retry_base_delay * 2 ** (piece.retries - 1))
        lane.next_attempt_at = time.monotonic() + delay

    @staticmethod
    def _resolved(lane: _Lane) -> None:
        """The lane's failed records are all resolved once nothing of it is in flight: the shard goes on."""
        if not lane.inflight:
            lane.failing = False

    def _done(self, s: ShardState, records: list[DynamoDBStreamRecord]) -> None:
        """Mark records done (succeeded or dead-lettered) and move the checkpoint over the done prefix."""
        for r in records:
            tracked = s.by_sequence.get(r["dynamodb"]["SequenceNumber"])
            if tracked is not None:
                tracked.done = True
        last: str | None = None
        while s.tracked and s.tracked[0].done:
            last = s.tracked.popleft().record["dynamodb"]["SequenceNumber"]
            s.by_sequence.pop(last, None)
        if last is not None:
            self._checkpoint(s, last)

    def _dead_letter(self, s: ShardState, records: list[DynamoDBStreamRecord], condition: str,
                     error: str | None, attempts: int = 0) -> None:
        mapping = self.mapping
        assert mapping is not None
        first, last = records[0], records[-1]

        def iso(r: DynamoDBStreamRecord) -> str:
            return datetime.fromtimestamp(record_epoch(r), UTC).isoformat()

        on_failure: OnFailureRecord = {
            "requestContext": {"requestId": str(uuidlib.uuid4()), "functionArn": mapping.function_name,
                               "condition": condition, "approximateInvokeCount": attempts},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": "Unhandled" if error else None, "error": error},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "DDBStreamBatchInfo": {
                "shardId": s.shard_id, "startSequenceNumber": first["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": last["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": iso(first), "approximateArrivalOfLastRecord": iso(last),
                "batchSize": len(records), "streamArn": s.stream_arn},
            "Records": list(records),
        }
        self.store.put_dead_letter(self.uuid, on_failure)
        logger.warning("batch sent to on-failure destination",
                       extra={"mapping": self.uuid, "condition": condition, "records": len(records),
                              "shard": s.shard_id, "error": error})
        self._done(s, records)

    def _dead_letter_trimmed(self, s: ShardState, after: str, first_available: str | None) -> None:
        """Records after ``after`` (up to ``first_available``) expired from the stream unread: say so."""
        mapping = self.mapping
        assert mapping is not None
        now = datetime.now(UTC).isoformat()
        error = (f"records after sequence number {after} were trimmed from the stream (retention) before they "
                 f"were processed; first record still available: {first_available or 'none'}. The events are "
                 "in their day table: rebuild with `streamfold replay view --version N --compare --promote`.")
        on_failure: OnFailureRecord = {
            "requestContext": {"requestId": str(uuidlib.uuid4()), "functionArn": mapping.function_name,
                               "condition": "RecordsTrimmed", "approximateInvokeCount": 0},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": None,
                                "error": error},
            "version": "1.0",
            "timestamp": now,
            "DDBStreamBatchInfo": {
                "shardId": s.shard_id, "startSequenceNumber": after, "endSequenceNumber": first_available or "",
                "approximateArrivalOfFirstRecord": now, "approximateArrivalOfLastRecord": now,
                "batchSize": 0, "streamArn": s.stream_arn},
            "Records": [],
        }
        self.store.put_dead_letter(self.uuid, on_failure)
        logger.error("records trimmed from the stream before processing: dead letter written",
                     extra={"mapping": self.uuid, "shard": s.shard_id, "after": after, "first": first_available})

    def _checkpoint(self, s: ShardState, sequence_number: str | None) -> None:
        if self._kill.is_set():
            raise _Killed()
        if sequence_number is not None and s.checkpoint is not None and \
                sequence_key(sequence_number) < sequence_key(s.checkpoint):
            raise RuntimeError(f"checkpoint would move backwards: {s.checkpoint} -> {sequence_number}")
        s.checkpoint = sequence_number
        remembered = self._remembered.get(s.key)
        if remembered and sequence_number is not None:
            remembered.difference_update([x for x in remembered if sequence_key(x) <= sequence_key(sequence_number)])
        lag = self._lag(s)
        try:
            self.store.put_checkpoint(self.uuid, Checkpoint(
                s.stream_arn, s.shard_id, sequence_number, s.parent_shard_id, s.finished,
                records_behind=lag.records_behind, more_behind=lag.more_behind,
                iterator_age_ms=lag.iterator_age_ms), owner=self.owner)
        except LeaseLost:
            logger.error("lease lost; this poller stops", extra={"mapping": self.uuid})
            self._has_lease = False
            self.lease_lost = True
            self._stopping.set()
            raise _Killed() from None

    # --- lag --------------------------------------------------------------------------------
    def _lag(self, s: ShardState) -> ShardLag:
        pending = s.pending()
        age = 0
        if pending:
            age = max(0, int((self.options.clock() - record_epoch(pending[0])) * 1000))
        return ShardLag(s.stream_arn, s.shard_id, s.checkpoint, s.finished, len(pending), s.more_behind, age)

    def lag(self) -> list[ShardLag]:
        """Current lag of every known shard (records behind, age of the oldest one in ms)."""
        with self._lock:
            shards = list(self.shards.values())
        return [self._lag(s) for s in shards]

    def _write_gauges(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_gauges:
            return
        self._next_gauges = now + self.options.gauge_interval
        for s in list(self.shards.values()):
            if s.finished and not force:
                continue
            lag = self._lag(s)
            try:
                self.store.put_checkpoint(self.uuid, Checkpoint(
                    s.stream_arn, s.shard_id, s.checkpoint, s.parent_shard_id, s.finished,
                    records_behind=lag.records_behind, more_behind=lag.more_behind,
                    iterator_age_ms=lag.iterator_age_ms), owner=self.owner)
            except LeaseLost:
                self._has_lease = False
                return


class _Killed(HostCrash):
    """Internal: the poller was killed (simulated crash) or lost its lease mid-batch."""


def _invoke(handler: Any, ctx: Any, records: list[DynamoDBStreamRecord]) -> tuple[Any, str | None]:
    """One synchronous invocation: ``(response, None)``, or ``(None, error)`` for a function error.

    Anything that is not an ``Exception`` (a simulated host crash, ``SystemExit``) propagates.
    """
    try:
        return handler({"Records": list(records)}, ctx), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def lane_of(record: DynamoDBStreamRecord, factor: int) -> int:
    """The concurrent batch (0 .. ``factor`` - 1) a record goes to: a stable hash of the item's key, so the
    records of one item stay in order in one lane."""
    if factor <= 1:
        return 0
    key = json.dumps(record["dynamodb"].get("Keys") or {}, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % factor


def _lowest_failure(response: Any, records: list[DynamoDBStreamRecord]) -> tuple[int | None, str | None]:
    """Index of the lowest reported failure, or an error when the response is invalid (AWS rules)."""
    if response is None or not isinstance(response, dict):
        return None, None
    failures = response.get("batchItemFailures")
    if not failures:
        return None, None
    positions = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(records)}
    lowest: int | None = None
    for f in failures:
        ident = f.get("itemIdentifier") if isinstance(f, dict) else None
        if not ident or ident not in positions:
            return None, f"invalid batchItemFailures entry {f!r}: whole batch counts as failed"
        i = positions[ident]
        lowest = i if lowest is None else min(lowest, i)
    return lowest, None


def runtime_owner() -> str:
    """A lease owner name that says where the runtime runs: ``runtime-<host>-<pid>-<random>``."""
    return f"runtime-{socket.gethostname()}-{os.getpid()}-{uuidlib.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names a runtime of this host whose process no longer exists."""
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or parts[0] != f"runtime-{socket.gethostname()}":
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def discover_streams(ddb: Any, pattern: str) -> dict[str, str]:
    """``{table name: stream ARN}`` of every existing table whose latest stream matches ``pattern``."""

    table_pattern = table_name_of(pattern)
    found: dict[str, str] = {}
    for name in table_names(ddb):
        if not fnmatch.fnmatchcase(name, table_pattern):
            continue
        try:
            table = ddb.describe_table(TableName=name)["Table"]
        except ClientError:
            continue  # deleted meanwhile
        arn = table.get("LatestStreamArn")
        if arn and arn_matches(pattern, arn):
            found[name] = arn
    return found
