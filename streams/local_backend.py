"""The local :class:`~streams.backend.MappingBackend`: mappings in the control table, run by
:class:`~streams.runtime.LocalRuntime`.

State transitions are settled by the runtime that holds the mapping's lease (after its
in-flight batch). When no runtime runs the mapping (no live lease) nothing is in flight, so the
backend settles them itself and the CLI works with or without ``streamfold up``.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from streams.backend import MappingBusy, MappingNotFound, to_aws_settings
from streams.mapping import TRANSITIONAL_STATES, Mapping, split_function
from streams.poller import discover_streams
from streams.store import Checkpoint, ControlStore

__all__ = ["LocalMappingBackend", "seed_latest_positions"]


class LocalMappingBackend:
    """Mappings for the local runtime.

    Args:
        store: control-table store.
        ddb: ``dynamodb`` client (LATEST positions need the current streams).
        streams: ``dynamodbstreams`` client.
        poll: seconds between polls in :meth:`wait_for_state`.
    """

    def __init__(self, store: ControlStore, ddb: Any, streams: Any, *, poll: float = 0.05) -> None:
        self.store = store
        self.ddb = ddb
        self.streams = streams
        self.poll = poll

    def create(self, *, event_source_arn: str, function_name: str, starting_position: str = "TRIM_HORIZON",
               enabled: bool = True, **settings: Any) -> Mapping:
        now = time.time()
        params = to_aws_settings(settings)
        mapping = Mapping.from_dict({
            "UUID": str(uuidlib.uuid4()), "EventSourceArn": event_source_arn, "FunctionName": function_name,
            "StartingPosition": starting_position, "State": "Creating", "Enabled": enabled,
            "Created": now, "LastModified": now, "StateTransitionReason": "USER_INITIATED", **params,
        }).validate()
        if starting_position == "LATEST":
            # LATEST means "records written after the mapping was created": pin that position now.
            seed_latest_positions(self.store, self.streams, self.ddb, mapping)
        self.store.put_mapping(mapping)
        self._settle_if_unowned(mapping.uuid)
        return self.get(mapping.uuid) or mapping

    def get(self, mapping_uuid: str) -> Mapping | None:
        return self.store.get_mapping(mapping_uuid)

    def list(self, *, function_name: str | None = None, event_source_arn: str | None = None) -> list[Mapping]:
        out = []
        for m in self.store.list_mappings():
            if event_source_arn is not None and m.event_source_arn != event_source_arn:
                continue
            if function_name is not None and function_name not in (m.function_name, m.function_base_name):
                continue
            out.append(m)
        return sorted(out, key=lambda m: m.created)

    def update(self, mapping_uuid: str, *, function_name: str | None = None, enabled: bool | None = None,
               **settings: Any) -> Mapping:
        current = self._require(mapping_uuid)
        if current.state in TRANSITIONAL_STATES:
            raise MappingBusy(f"mapping {mapping_uuid} is {current.state}; try again when it settles")
        changes: dict[str, Any] = to_aws_settings(settings)
        if function_name is not None:
            changes["FunctionName"] = function_name
        candidate = Mapping.from_dict({**current.to_dict(), **changes})
        candidate.validate()
        if enabled is not None and enabled != current.enabled:
            changes["Enabled"] = enabled
            changes["State"] = "Enabling" if enabled else "Disabling"
        elif changes:
            changes["State"] = "Updating"
        if not changes:
            return current
        if not self.store.update_mapping(mapping_uuid, changes, expect_state=current.state):
            raise MappingBusy(f"mapping {mapping_uuid} changed concurrently")
        self._settle_if_unowned(mapping_uuid)
        return self._require(mapping_uuid)

    def delete(self, mapping_uuid: str) -> None:
        current = self._require(mapping_uuid)
        if current.state in TRANSITIONAL_STATES - {"Deleting"}:
            raise MappingBusy(f"mapping {mapping_uuid} is {current.state}")
        self.store.update_mapping(mapping_uuid, {"State": "Deleting"})
        self._settle_if_unowned(mapping_uuid)
        deadline = time.monotonic() + 30
        while self.store.get_mapping_item(mapping_uuid) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"mapping {mapping_uuid} still Deleting")
            time.sleep(self.poll)
            self._settle_if_unowned(mapping_uuid)

    def wait_for_state(self, mapping_uuid: str, state: str, timeout: float = 60.0) -> Mapping:
        deadline = time.monotonic() + timeout
        while True:
            m = self._require(mapping_uuid)
            if m.state == state:
                return m
            if m.state in TRANSITIONAL_STATES:
                self._settle_if_unowned(mapping_uuid)
            if time.monotonic() > deadline:
                raise TimeoutError(f"mapping {mapping_uuid} is {m.state}, not {state}, after {timeout}s")
            time.sleep(self.poll)

    def positions(self, mapping_uuid: str) -> dict[str, Any]:
        """Every shard checkpoint of the mapping (``"<stream ARN>#<shard>" -> sequence number``)."""
        m = self._require(mapping_uuid)
        return {"uuid": m.uuid, "event_source_arn": m.event_source_arn, "starting_position": m.starting_position,
                "checkpoints": {f"{c.stream_arn}#{c.shard_id}": c.sequence_number
                                for c in self.store.checkpoints(mapping_uuid)}}

    def targets(self, mapping: Mapping, function_name: str) -> bool:
        return mapping.function_name == function_name

    def restore_positions(self, mapping_uuid: str, snapshot: dict[str, Any]) -> bool:
        """Write ``snapshot``'s checkpoints back (the mapping is disabled: the runtime reloads them on enable)."""
        m = self._require(mapping_uuid)
        if m.state != "Disabled":
            return False
        existing = {f"{c.stream_arn}#{c.shard_id}": c for c in self.store.checkpoints(mapping_uuid)}
        for key, seq in snapshot.get("checkpoints", {}).items():
            cp = existing.get(key)
            stream_arn, shard_id = key.rsplit("#", 1)
            restored = Checkpoint(stream_arn, shard_id, seq, cp.parent_shard_id if cp else None,
                                  finished=cp.finished if cp else False)
            self.store.put_checkpoint(mapping_uuid, restored, owner=None)
        return True

    # --- helpers ----------------------------------------------------------------------------
    def ensure(self, *, event_source_arn: str, function_name: str, **create_args: Any) -> Mapping:
        """The mapping of this source to this function's name (any colour); created if missing."""
        base, _ = split_function(function_name)
        for m in self.list(event_source_arn=event_source_arn):
            if m.function_base_name == base:
                return m
        return self.create(event_source_arn=event_source_arn, function_name=function_name, **create_args)

    def _require(self, mapping_uuid: str) -> Mapping:
        m = self.get(mapping_uuid)
        if m is None:
            raise MappingNotFound(mapping_uuid)
        return m

    def _settle_if_unowned(self, mapping_uuid: str) -> None:
        if self.store.lease_holder(mapping_uuid) is not None:
            return  # a runtime runs it and settles after its in-flight batch
        m = self.get(mapping_uuid)
        if m is None:
            return
        if m.state == "Deleting":
            self.store.delete_mapping(mapping_uuid)
        elif m.state in ("Creating", "Enabling", "Updating", "Disabling"):
            target = "Enabled" if m.enabled else "Disabled"
            self.store.update_mapping(mapping_uuid, {"State": target}, expect_state=m.state)


def seed_latest_positions(store: ControlStore, streams: Any, ddb: Any, mapping: Mapping) -> int:
    """Checkpoint every shard of the mapping's current streams at its tip (``LATEST``).

    Streams and shards found later start at ``TRIM_HORIZON``: everything in them is newer than
    the mapping. Returns the number of shards seeded.
    """
    seeded = 0
    for arn in discover_streams(ddb, mapping.event_source_arn).values():
        kwargs: dict[str, Any] = {"StreamArn": arn}
        while True:
            desc = streams.describe_stream(**kwargs)["StreamDescription"]
            for sh in desc.get("Shards", []):
                tip, closed = _tip(streams, arn, sh)
                store.put_checkpoint(mapping.uuid, Checkpoint(arn, sh["ShardId"], tip, sh.get("ParentShardId"),
                                                              finished=closed), owner=None)
                seeded += 1
            if not desc.get("LastEvaluatedShardId"):
                break
            kwargs["ExclusiveStartShardId"] = desc["LastEvaluatedShardId"]
    return seeded


def _tip(streams: Any, arn: str, shard: dict[str, Any]) -> tuple[str, bool]:
    """Last sequence number in a shard (its starting number when empty) and whether it is closed."""
    last = shard["SequenceNumberRange"]["StartingSequenceNumber"]
    try:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = streams.get_records(ShardIterator=it, Limit=1000)
            if resp["Records"]:
                last = resp["Records"][-1]["dynamodb"]["SequenceNumber"]
            it = resp.get("NextShardIterator")
            if not resp["Records"]:
                break
    except streams.exceptions.TrimmedDataAccessException:
        pass
    return last, it is None
