"""The local Event Source Mapping runtime's poller: one thread per mapping, iterating its shards.

Per shard, as Lambda's stream pollers do:

* ``GetRecords`` at most once per ``poll_interval`` (AWS: 4 times a second) while the read-ahead
  buffer is short of a batch; order within a shard is kept; a child shard is read only after its
  parent is finished (``NextShardIterator`` absent and everything delivered);
* a batch is ``BatchSize`` records (at most 6 MB), sent when full, when the batching window has
  passed, or at once when the window is 0;
* the checkpoint (last sequence number done) only moves past records that succeeded or were sent
  to the on-failure destination. ``ReportBatchItemFailures``: move to just before the lowest
  failed sequence number and retry from there. Function error: bisect (halves, recursively,
  without counting a retry) when enabled, else retry; when ``MaximumRetryAttempts`` is used up
  or records are older than ``MaximumRecordAgeInSeconds`` they go to the dead-letter store and the
  shard moves on.

DynamoDB Local specifics handled here: stream records show up ~50-150 ms after the write; an
iterator taken on an *empty* shard (``TRIM_HORIZON`` or ``LATEST``) points at the shard's
starting sequence number and raises ``TrimmedDataAccessException`` once records exist, so the
poller re-takes its iterator from its position; iterators expire (``ExpiredIteratorException``);
``ApproximateCreationDateTime`` is truncated to the minute, so ages are up to 60 s high locally.
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import socket
import threading
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
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
    "owner_is_dead",
    "runtime_owner",
]


MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit
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
    read_position: str | None = None  # last sequence number fetched into the buffer
    buffer: deque[tuple[DynamoDBStreamRecord, int]] = field(default_factory=deque)
    inflight: deque[_Piece] = field(default_factory=deque)
    end_reached: bool = False
    more_behind: bool = False
    next_poll_at: float = 0.0
    next_attempt_at: float = 0.0
    first_buffered_at: float | None = None
    trimmed_errors: int = 0
    trim_gap_after: str | None = None  # re-reading from TRIM_HORIZON after this position: check for a gap

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream_arn, self.shard_id)

    def reset_position(self) -> None:
        """Forget buffered and in-flight records: the next read starts after the checkpoint."""
        self.iterator = None
        self.read_position = self.checkpoint
        self.buffer.clear()
        self.inflight.clear()
        self.end_reached = False
        self.first_buffered_at = None
        self.next_attempt_at = 0.0

    def pending(self) -> list[DynamoDBStreamRecord]:
        out = [r for p in self.inflight for r in p.records]
        out.extend(r for r, _ in self.buffer)
        return out


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

    # --- lifecycle --------------------------------------------------------------------------
    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the in-flight invocation (its checkpoint is written) and release the lease."""
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def kill(self) -> None:
        """Simulate a crash: stop at once, write nothing more (not even the in-flight checkpoint)."""
        self._kill.set()
        self._stopping.set()

    def run(self) -> None:
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
                    self._stopping.wait(self._idle_wait())
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
        with self._lock:
            for s in self.shards.values():
                s.reset_position()
        self._loaded = False
        self._lease_renewed_at = 0.0  # renew (or find it lost) before anything else

    def _idle_wait(self) -> float:
        now = time.monotonic()
        waits = [self.options.poll_interval]
        for s in self.shards.values():
            if s.inflight:
                waits.append(max(0.0, s.next_attempt_at - now))
            elif s.buffer and s.first_buffered_at is not None:
                window = self.mapping.maximum_batching_window_in_seconds if self.mapping else 0
                waits.append(max(0.0, s.first_buffered_at + window - now))
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
        if s.end_reached or len(s.buffer) >= mapping.batch_size:
            return 0
        now = time.monotonic()
        if now < s.next_poll_at:
            return 0
        s.next_poll_at = now + self.options.poll_interval
        if s.iterator is None:
            s.iterator = self._iterator(s)
            if s.iterator is None:
                return 0
        limit = min(GET_RECORDS_MAX, max(mapping.batch_size, 100))
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
        for rec in converted:
            s.buffer.append((rec, len(json.dumps(rec))))
            s.read_position = rec["dynamodb"]["SequenceNumber"]
        if converted and s.first_buffered_at is None:
            s.first_buffered_at = time.monotonic()
        s.more_behind = len(records) >= limit
        s.iterator = resp.get("NextShardIterator")
        if s.iterator is None:
            s.end_reached = True  # closed shard, fully read
        elif records:
            s.next_poll_at = 0.0  # more may be waiting: read again without the poll delay
        return len(records)

    # --- processing -------------------------------------------------------------------------
    def _work(self, s: ShardState, mapping: Mapping) -> bool:
        busy = self._fetch(s, mapping) > 0
        if not s.inflight:
            batch = self._take_batch(s, mapping)
            if batch:
                s.inflight.append(_Piece(batch))
        if s.inflight and time.monotonic() >= s.next_attempt_at:
            self._attempt(s, mapping)
            busy = True
        if s.end_reached and not s.buffer and not s.inflight and not s.finished:
            s.finished = True
            self._checkpoint(s, s.checkpoint)
            logger.info("shard finished", extra={"shard": s.shard_id, "stream": s.stream_arn})
        return busy

    def _take_batch(self, s: ShardState, mapping: Mapping) -> list[DynamoDBStreamRecord]:
        if not s.buffer:
            return []
        window = mapping.maximum_batching_window_in_seconds
        full = len(s.buffer) >= mapping.batch_size
        waited = s.first_buffered_at is not None and time.monotonic() - s.first_buffered_at >= window
        if not (full or waited or window == 0 or s.end_reached):
            return []
        batch: list[DynamoDBStreamRecord] = []
        size = 0
        while s.buffer and len(batch) < mapping.batch_size:
            rec, n = s.buffer[0]
            if batch and size + n > MAX_PAYLOAD_BYTES:
                break
            s.buffer.popleft()
            batch.append(rec)
            size += n
        s.first_buffered_at = time.monotonic() if s.buffer else None
        return batch

    def _attempt(self, s: ShardState, mapping: Mapping) -> None:
        piece = s.inflight[0]
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
                    s.inflight.popleft()
                    return
        try:
            handler, ctx = self.functions.resolve(mapping.function_name)
        except FunctionNotAvailable as exc:
            if time.monotonic() - self._last_missing_log > 30:
                logger.error("target function not available; mapping stays Enabled and waits",
                             extra={"mapping": self.uuid, "function": mapping.function_name, "error": str(exc)})
                self._last_missing_log = time.monotonic()
            s.next_attempt_at = time.monotonic() + max(1.0, self.options.poll_interval)
            return
        records = piece.records
        error: str | None = None
        failed_at: int | None = None
        try:
            response = handler({"Records": list(records)}, ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            response = None
        if self._kill.is_set():
            raise _Killed()
        if error is None and mapping.reports_item_failures:
            failed_at, error = _lowest_failure(response, records)
        if error is None and failed_at is None:
            self._checkpoint(s, records[-1]["dynamodb"]["SequenceNumber"])
            s.inflight.popleft()
            s.next_attempt_at = 0.0
            return
        if failed_at is not None:
            # ReportBatchItemFailures: everything before the lowest failure succeeded.
            if failed_at > 0:
                self._checkpoint(s, records[failed_at - 1]["dynamodb"]["SequenceNumber"])
            piece.records = records = records[failed_at:]
            error = "batch item failure reported"
        elif mapping.bisect_batch_on_function_error and len(records) > 1:
            mid = len(records) // 2  # splitting does not count towards the retry quota
            s.inflight.popleft()
            s.inflight.appendleft(_Piece(records[mid:], piece.retries))
            s.inflight.appendleft(_Piece(records[:mid], piece.retries))
            return
        piece.retries += 1
        if mapping.maximum_retry_attempts != -1 and piece.retries > mapping.maximum_retry_attempts:
            self._dead_letter(s, records, "RetryAttemptsExhausted", error, attempts=piece.retries)
            s.inflight.popleft()
            s.next_attempt_at = 0.0
            return
        delay = min(self.options.retry_max_delay, self.options.retry_base_delay * 2 ** (piece.retries - 1))
        s.next_attempt_at = time.monotonic() + delay

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
        self._checkpoint(s, last["dynamodb"]["SequenceNumber"])

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
