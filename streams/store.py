"""Persistence of local mappings in the control table: registry, leases, checkpoints, dead letters.

Items (keys from :mod:`chalicelib.keys`)::

    pk = MAPPINGS            sk = <uuid>                  directory entry (Query lists mappings)
    pk = MAPPING#<uuid>      sk = META                    the mapping (AWS field names) + runtime lease
    pk = MAPPING#<uuid>      sk = SHARD#<shard>#<arn>     checkpoint: last sequence number done,
                                                          Finished flag, parent shard, lag gauges
    pk = DLQ#<uuid>          sk = <failed at>#<id>        on-failure record + the failed records

Checkpoints are written in a transaction with a condition on the META item's lease, so a
poller that lost its lease (a zombie after a restart) can never move a checkpoint.
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chalicelib import keys
from chalicelib.db import items
from chalicelib.views import from_ddb as _plain
from chalicelib.views import to_ddb as _item
from streams.mapping import Mapping
from streams.wire import DynamoDBStreamRecord, OnFailureRecord

__all__ = ["MAX_STORED_RECORDS_BYTES", "Checkpoint", "ControlStore", "DeadLetter", "LeaseLost", "dlq_sk"]

# Stay under DynamoDB's 400 KB item limit; larger batches keep only the AWS-style pointer.
MAX_STORED_RECORDS_BYTES = 350 * 1024



class LeaseLost(RuntimeError):
    """This runtime no longer owns the mapping (another runtime took over after a lease expiry)."""


def dlq_sk(failed_at: float, item_id: str) -> str:
    """Sort key of a dead letter: ISO time first, so a Query lists oldest first."""
    iso = datetime.fromtimestamp(failed_at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{iso}#{item_id}"


@dataclass(frozen=True)
class Checkpoint:
    """Position of a mapping in one shard of one stream."""

    stream_arn: str
    shard_id: str
    sequence_number: str | None
    parent_shard_id: str | None = None
    finished: bool = False
    updated_at: float = 0.0
    records_behind: int = 0
    more_behind: bool = False
    iterator_age_ms: int = 0


@dataclass(frozen=True)
class DeadLetter:
    """A batch sent to the on-failure destination."""

    mapping_uuid: str
    sk: str
    failed_at: float
    condition: str
    info: dict[str, Any]
    records: list[DynamoDBStreamRecord] | None
    redrive_attempts: int = 0
    error: str | None = None

    @property
    def id(self) -> str:
        return self.sk


class ControlStore:
    """Typed access to the mapping items of the control table.

    Args:
        client: a low-level ``dynamodb`` client.
        table: the control table name.
    """

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    # --- mappings ---------------------------------------------------------------------------
    def put_mapping(self, mapping: Mapping) -> None:
        """Create a mapping (META + directory entry) atomically; fails if the UUID exists."""
        meta = _item({"pk": keys.mapping_pk(mapping.uuid), "sk": keys.META_SK, **mapping.to_dict()})
        directory = _item({"pk": keys.MAPPINGS_PK, "sk": mapping.uuid, "EventSourceArn": mapping.event_source_arn,
                           "FunctionName": mapping.function_name})
        self._client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self._table, "Item": meta, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"TableName": self._table, "Item": directory}},
        ])

    def get_mapping_item(self, mapping_uuid: str) -> dict[str, Any] | None:
        """The raw META item (with lease attributes), or ``None``."""
        r = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                  Key=_item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}))
        return _plain(r["Item"]) if "Item" in r else None

    def get_mapping(self, mapping_uuid: str) -> Mapping | None:
        item = self.get_mapping_item(mapping_uuid)
        return Mapping.from_dict(item) if item else None

    def list_uuids(self) -> list[str]:
        found = items(self._client, "query", TableName=self._table, KeyConditionExpression="pk = :p",
                      ExpressionAttributeValues=_item({":p": keys.MAPPINGS_PK}), ConsistentRead=True)
        return [_plain(i)["sk"] for i in found]

    def list_mappings(self) -> list[Mapping]:
        found = (self.get_mapping(u) for u in self.list_uuids())
        return [m for m in found if m is not None]

    def update_mapping(self, mapping_uuid: str, changes: dict[str, Any], *,
                       expect_state: str | tuple[str, ...] | None = None) -> bool:
        """Set AWS-named fields on a mapping. Returns ``False`` if ``expect_state`` did not hold."""
        changes = {**changes, "LastModified": time.time()}
        names = {f"#f{i}": k for i, k in enumerate(changes)}
        values = {f":v{i}": v for i, v in enumerate(changes.values())}
        cond = "attribute_exists(pk)"
        if expect_state is not None:
            states = (expect_state,) if isinstance(expect_state, str) else expect_state
            names["#state"] = "State"
            cond += " AND #state IN (" + ", ".join(f":s{i}" for i in range(len(states))) + ")"
            values.update({f":s{i}": s for i, s in enumerate(states)})
        try:
            self._client.update_item(
                TableName=self._table, Key=_item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}),
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))),
                ConditionExpression=cond, ExpressionAttributeNames=names,
                ExpressionAttributeValues=_item(values))
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        if "FunctionName" in changes:
            self._client.update_item(
                TableName=self._table, Key=_item({"pk": keys.MAPPINGS_PK, "sk": mapping_uuid}),
                UpdateExpression="SET FunctionName = :f",
                ExpressionAttributeValues=_item({":f": changes["FunctionName"]}))
        return True

    def delete_mapping(self, mapping_uuid: str) -> None:
        """Delete the mapping, its directory entry and all its checkpoints (dead letters stay)."""
        pk = keys.mapping_pk(mapping_uuid)
        for item in self._query(pk):
            self._client.delete_item(TableName=self._table, Key=_item({"pk": pk, "sk": item["sk"]}))
        self._client.delete_item(TableName=self._table, Key=_item({"pk": keys.MAPPINGS_PK, "sk": mapping_uuid}))

    # --- lease ------------------------------------------------------------------------------
    def acquire_lease(self, mapping_uuid: str, owner: str, seconds: float) -> bool:
        """Take or renew the right to poll a mapping; ``False`` if another live runtime holds it."""
        now = time.time()
        try:
            self._client.update_item(
                TableName=self._table, Key=_item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}),
                UpdateExpression="SET LeaseOwner = :me, LeaseUntil = :until",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(LeaseUntil) "
                                    "OR LeaseUntil < :now OR LeaseOwner = :me)",
                ExpressionAttributeValues=_item({":me": owner, ":until": now + seconds, ":now": now}))
            return True
        except self._client.exceptions.ConditionalCheckFailedException:
            return False

    def take_lease(self, mapping_uuid: str, owner: str, previous: str, seconds: float) -> bool:
        """Take the lease from ``previous`` (a runtime known to be dead) before it expires."""
        try:
            self._client.update_item(
                TableName=self._table, Key=_item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}),
                UpdateExpression="SET LeaseOwner = :me, LeaseUntil = :until",
                ConditionExpression="attribute_exists(pk) AND LeaseOwner = :old",
                ExpressionAttributeValues=_item({":me": owner, ":old": previous, ":until": time.time() + seconds}))
            return True
        except self._client.exceptions.ConditionalCheckFailedException:
            return False

    def release_lease(self, mapping_uuid: str, owner: str) -> None:
        try:
            self._client.update_item(
                TableName=self._table, Key=_item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}),
                UpdateExpression="REMOVE LeaseOwner, LeaseUntil", ConditionExpression="LeaseOwner = :me",
                ExpressionAttributeValues=_item({":me": owner}))
        except self._client.exceptions.ConditionalCheckFailedException:
            pass

    def lease_holder(self, mapping_uuid: str) -> str | None:
        """The owner of a live lease, or ``None`` when no runtime polls the mapping."""
        item = self.get_mapping_item(mapping_uuid) or {}
        if item.get("LeaseOwner") and float(item.get("LeaseUntil", 0)) >= time.time():
            return str(item["LeaseOwner"])
        return None

    # --- checkpoints ------------------------------------------------------------------------
    def checkpoints(self, mapping_uuid: str) -> list[Checkpoint]:
        out = []
        for item in self._query(keys.mapping_pk(mapping_uuid), sk_prefix="SHARD#"):
            out.append(Checkpoint(
                stream_arn=item["StreamArn"], shard_id=item["ShardId"],
                sequence_number=item.get("SequenceNumber"), parent_shard_id=item.get("ParentShardId"),
                finished=bool(item.get("Finished", False)), updated_at=float(item.get("UpdatedAt", 0.0)),
                records_behind=int(item.get("RecordsBehind", 0)), more_behind=bool(item.get("MoreBehind", False)),
                iterator_age_ms=int(item.get("IteratorAgeMs", 0))))
        return out

    def put_checkpoint(self, mapping_uuid: str, cp: Checkpoint, *, owner: str | None) -> None:
        """Write a checkpoint; with ``owner`` only while that runtime holds the lease."""
        item = _item({
            "pk": keys.mapping_pk(mapping_uuid), "sk": keys.shard_sk(cp.shard_id, cp.stream_arn),
            "StreamArn": cp.stream_arn, "ShardId": cp.shard_id, "SequenceNumber": cp.sequence_number,
            "ParentShardId": cp.parent_shard_id, "Finished": cp.finished, "UpdatedAt": time.time(),
            "RecordsBehind": cp.records_behind, "MoreBehind": cp.more_behind, "IteratorAgeMs": cp.iterator_age_ms})
        if owner is None:
            self._client.put_item(TableName=self._table, Item=item)
            return
        try:
            self._client.transact_write_items(TransactItems=[
                {"ConditionCheck": {
                    "TableName": self._table,
                    "Key": _item({"pk": keys.mapping_pk(mapping_uuid), "sk": keys.META_SK}),
                    "ConditionExpression": "LeaseOwner = :me",
                    "ExpressionAttributeValues": _item({":me": owner})}},
                {"Put": {"TableName": self._table, "Item": item}},
            ])
        except self._client.exceptions.TransactionCanceledException as exc:
            raise LeaseLost(mapping_uuid) from exc

    # --- dead letters -----------------------------------------------------------------------
    def put_dead_letter(self, mapping_uuid: str, record: OnFailureRecord, *, failed_at: float | None = None) -> str:
        """Store an on-failure record; its ``Records`` are kept (compressed) when they fit an item."""
        failed_at = time.time() if failed_at is None else failed_at
        sk = dlq_sk(failed_at, uuidlib.uuid4().hex[:12])
        body = {k: v for k, v in record.items() if k != "Records"}
        item: dict[str, Any] = {"pk": keys.dlq_pk(mapping_uuid), "sk": sk, "FailedAt": failed_at,
                                "Condition": record["requestContext"].get("condition", ""),
                                "Info": json.dumps(body), "RedriveAttempts": 0}
        records = record.get("Records")
        if records is not None:
            packed = zlib.compress(json.dumps(records).encode())
            if len(packed) <= MAX_STORED_RECORDS_BYTES:
                item["RecordsZ"] = packed
        self._client.put_item(TableName=self._table, Item=_item(item))
        return sk

    def dead_letters(self, mapping_uuid: str) -> list[DeadLetter]:
        out = []
        for item in self._query(keys.dlq_pk(mapping_uuid)):
            packed = item.get("RecordsZ")
            records = json.loads(zlib.decompress(bytes(packed))) if packed is not None else None
            out.append(DeadLetter(mapping_uuid=mapping_uuid, sk=item["sk"], failed_at=float(item["FailedAt"]),
                                  condition=item.get("Condition", ""), info=json.loads(item["Info"]),
                                  records=records, redrive_attempts=int(item.get("RedriveAttempts", 0)),
                                  error=item.get("LastRedriveError")))
        return out

    def delete_dead_letter(self, mapping_uuid: str, sk: str) -> None:
        self._client.delete_item(TableName=self._table, Key=_item({"pk": keys.dlq_pk(mapping_uuid), "sk": sk}))

    def note_redrive_failure(self, mapping_uuid: str, sk: str, error: str) -> None:
        self._client.update_item(
            TableName=self._table, Key=_item({"pk": keys.dlq_pk(mapping_uuid), "sk": sk}),
            UpdateExpression="ADD RedriveAttempts :one SET LastRedriveError = :e",
            ExpressionAttributeValues=_item({":one": 1, ":e": error[:1000]}))

    # --- helpers ----------------------------------------------------------------------------
    def _query(self, pk: str, sk_prefix: str | None = None) -> Iterator[dict[str, Any]]:
        expr = "pk = :p" + (" AND begins_with(sk, :s)" if sk_prefix else "")
        values = {":p": pk, **({":s": sk_prefix} if sk_prefix else {})}
        for i in items(self._client, "query", TableName=self._table, KeyConditionExpression=expr,
                       ExpressionAttributeValues=_item(values), ConsistentRead=True):
            yield _plain(i)
