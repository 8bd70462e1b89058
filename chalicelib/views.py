"""Reading and writing view items (one single table per projection version).

Folded states are stored as zlib-compressed JSON in a binary ``body`` attribute with a
``ver`` counter. Writes are optimistic: ``attribute_not_exists(pk) OR ver = :seen``, so two
projector invocations (different shards touching one account) never lose each other's work;
the loser re-reads, merges (every state is a join-semilattice) and writes again. A state
that did not change is not written at all, which is what makes a re-delivered batch free.
"""

from __future__ import annotations

import json
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from chalicelib.db import batch_get
from chalicelib.keys import MEMBERS_SK

__all__ = ["Blob", "ViewStore", "WriteStats", "encode_body", "decode_body", "to_ddb", "from_ddb"]

_ser = TypeSerializer()
_de = TypeDeserializer()


def encode_body(data: Any) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":"), sort_keys=True).encode(), 6)


def decode_body(raw: Any) -> Any:
    if hasattr(raw, "value"):  # boto3 Binary
        raw = raw.value
    return json.loads(zlib.decompress(raw))


def to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(_ddb_safe(v)) for k, v in item.items() if v is not None}


def from_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def _ddb_safe(v: Any) -> Any:

    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, dict):
        return {str(k): _ddb_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_ddb_safe(x) for x in v]
    return v


def _plain(v: Any) -> Any:


    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, Binary):
        return v.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, set, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass
class Blob:
    """A stored state: decoded ``data``, its ``ver`` (0 = absent) and any extra attributes."""

    pk: str
    sk: str
    data: Any = None
    ver: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class WriteStats:
    reads: int = 0
    writes: int = 0
    skipped: int = 0
    conflicts: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: float) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class ConflictError(Exception):
    """The item changed between read and write."""


class ViewStore:
    """Item access for one view table."""

    def __init__(self, client: Any, table: str, *, workers: int = 8) -> None:
        self.client = client
        self.table = table
        # Two pools: `run` tasks may call get_many/query_many, whose requests go to the inner pool,
        # so a task never waits on work queued behind itself (no nested-pool deadlock).
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="view")
        self._io = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="view-io")
        self.stats = WriteStats()

    # --- reads ---------------------------------------------------------------------------------

    def get_many(self, keys: Iterable[tuple[str, str]], *, consistent: bool = True) -> dict[tuple[str, str], Blob]:
        """Blobs for many keys (absent keys come back with ``ver=0``, ``data=None``)."""
        wanted = list(dict.fromkeys(keys))
        out = {k: Blob(k[0], k[1]) for k in wanted}
        chunks = [wanted[i:i + 100] for i in range(0, len(wanted), 100)]
        for items in self._io.map(lambda c: self._batch_get(c, consistent), chunks):
            for it in items:
                b = self._blob(it)
                out[(b.pk, b.sk)] = b
        return out

    def _batch_get(self, chunk: list[tuple[str, str]], consistent: bool) -> list[dict[str, Any]]:
        def count(resp: dict[str, Any]) -> None:
            self.stats.add(reads=1, read_units=sum(c.get("CapacityUnits", 0) for c in resp.get("ConsumedCapacity", [])))

        return batch_get(self.client, self.table, [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in chunk],
                         consistent=consistent, on_response=count)

    def query_prefix(self, pk: str, sk_prefix: str, *, consistent: bool = True, newest_first: bool = False,
                     limit: int | None = None, start: dict[str, Any] | None = None,
                     sk_from: str | None = None, sk_to: str | None = None) -> tuple[list[Blob], dict[str, Any] | None]:
        """Items of one partition whose sort key starts with ``sk_prefix`` (or lies in a range)."""
        values: dict[str, Any] = {":pk": {"S": pk}}
        if sk_from is not None and sk_to is not None:
            cond = "pk = :pk AND sk BETWEEN :a AND :b"
            values.update({":a": {"S": sk_from}, ":b": {"S": sk_to}})
        else:
            cond = "pk = :pk AND begins_with(sk, :p)"
            values[":p"] = {"S": sk_prefix}
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": cond,
                                  "ExpressionAttributeValues": values, "ConsistentRead": consistent,
                                  "ScanIndexForward": not newest_first, "ReturnConsumedCapacity": "TOTAL"}
        if start:
            kwargs["ExclusiveStartKey"] = start
        out: list[Blob] = []
        while True:
            if limit is not None:
                kwargs["Limit"] = limit - len(out)
            resp = self.client.query(**kwargs)
            self.stats.add(reads=1, read_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
            out += [self._blob(i) for i in resp["Items"]]
            last = resp.get("LastEvaluatedKey")
            if not last or (limit is not None and len(out) >= limit):
                return out, last
            kwargs["ExclusiveStartKey"] = last

    def query_keys(self, pk: str, sk_prefix: str, attrs: tuple[str, ...] = (), *,
                   consistent: bool = True) -> list[dict[str, Any]]:
        """The sort keys (and the plain ``attrs``) of one partition's items whose sort key starts with ``sk_prefix``,
        without their bodies (``chalicelib.pages.PageCache``: which pending pages exist, to fetch only new ones).
        Reads the table: a write-back store's held items are not in it."""
        names = {f"#a{i}": a for i, a in enumerate(("pk", "sk", *attrs))}
        kwargs: dict[str, Any] = {"TableName": self.table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                                  "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": sk_prefix}},
                                  "ExpressionAttributeNames": names, "ProjectionExpression": ", ".join(names),
                                  "ConsistentRead": consistent, "ReturnConsumedCapacity": "TOTAL"}
        out: list[dict[str, Any]] = []
        while True:
            resp = self.client.query(**kwargs)
            self.stats.add(reads=1, read_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
            out += [from_ddb(i) for i in resp["Items"]]
            if not (last := resp.get("LastEvaluatedKey")):
                return out
            kwargs["ExclusiveStartKey"] = last

    def query_many(self, requests: list[tuple[str, str]]) -> list[list[Blob]]:
        """Several prefix queries in parallel (e.g. all day items of each touched account)."""
        return list(self._io.map(lambda r: self.query_prefix(r[0], r[1])[0], requests))

    @staticmethod
    def _blob(item: dict[str, Any]) -> Blob:
        plain = from_ddb(item)
        body = plain.pop("body", None)
        return Blob(plain.pop("pk"), plain.pop("sk"), None if body is None else decode_body(body),
                    int(plain.pop("ver", 0)), plain)

    # --- writes --------------------------------------------------------------------------------

    def put(self, blob: Blob, data: Any, attrs: dict[str, Any] | None = None) -> Blob:
        """Write ``data`` if ``blob`` is still the stored version; raises :class:`ConflictError`."""
        item = {"pk": blob.pk, "sk": blob.sk, "ver": blob.ver + 1, **(attrs or {})}
        ddb_item = to_ddb(item)
        if data is not None:
            ddb_item["body"] = {"B": encode_body(data)}
        if blob.ver == 0:
            cond, values = "attribute_not_exists(pk)", None
        else:
            cond, values = "ver = :v", {":v": {"N": str(blob.ver)}}
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": ddb_item, "ConditionExpression": cond,
                                  "ReturnConsumedCapacity": "TOTAL"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            resp = self.client.put_item(**kwargs)
        except self.client.exceptions.ConditionalCheckFailedException:
            self.stats.add(conflicts=1)
            raise ConflictError(f"{blob.pk}/{blob.sk}") from None
        self.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        return Blob(blob.pk, blob.sk, data, blob.ver + 1, attrs or {})

    def upsert(self, key: tuple[str, str], update: Callable[[Blob], tuple[Any, dict[str, Any] | None] | None],
               *, current: Blob | None = None, attempts: int = 8) -> Blob | None:
        """Read-modify-write with optimistic retries.

        ``update(blob)`` returns ``(data, attrs)`` to write, or ``None`` when nothing changed
        (then nothing is written). It must be a pure join of the stored value and the new input,
        so re-running it after a conflict is safe.
        """
        blob = current
        for _ in range(attempts):
            if blob is None:
                blob = self.get_many([key])[key]
            change = update(blob)
            if change is None:
                self.stats.add(skipped=1)
                return None
            try:
                return self.put(blob, change[0], change[1])
            except ConflictError:
                blob = None
        raise ConflictError(f"gave up on {key} after {attempts} conflicting writes")

    def put_many(self, items: list[dict[str, Any]]) -> None:
        """Unconditional puts of plain items (``BatchWriteItem``, 25 per request, in parallel; unprocessed
        items retried with backoff). For items that are written once and never updated (claims)."""
        chunks = [items[i:i + 25] for i in range(0, len(items), 25)]
        list(self._io.map(self._batch_put, chunks))

    def _batch_put(self, chunk: list[dict[str, Any]]) -> None:
        self.batch_write_raw([to_ddb(it) for it in chunk])

    def delete_many(self, item_keys: list[tuple[str, str]]) -> None:
        """Delete items with ``BatchWriteItem`` (25 per request)."""
        for i in range(0, len(item_keys), 25):
            self.batch_write_raw([{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in item_keys[i:i + 25]], delete=True)

    def batch_write_raw(self, chunk: list[dict[str, Any]], *, delete: bool = False) -> None:
        """One ``BatchWriteItem`` of up to 25 items in DynamoDB's attribute-value form (unprocessed items
        retried with backoff); ``delete``: the items are keys to delete."""
        request = {self.table: [{"DeleteRequest": {"Key": it}} if delete else {"PutRequest": {"Item": it}}
                                for it in chunk]}
        for attempt in range(10):
            if attempt:
                time.sleep(random.uniform(0, 0.05 * 2 ** attempt))
            resp = self.client.batch_write_item(RequestItems=request, ReturnConsumedCapacity="TOTAL")
            done = len(request[self.table]) - len((resp.get("UnprocessedItems") or {}).get(self.table, []))
            self.stats.add(writes=done, write_units=sum(c.get("CapacityUnits", 0)
                                                        for c in resp.get("ConsumedCapacity", [])))
            request = resp.get("UnprocessedItems") or {}
            if not request:
                return
        raise RuntimeError(f"BatchWriteItem on {self.table}: items still unprocessed")

    def put_link(self, pk: str, sk: str, link: dict[str, Any], user_ver: int, *, create: bool) -> bool:
        """Write a user link (plain item, no ``ver``); True if this call created it (exactly once, by
        condition). An existing link is replaced only by a newer version of its user (``user_ver``)."""
        item = to_ddb({"pk": pk, "sk": sk, "user_ver": user_ver, **link})
        if create:
            try:
                resp = self.client.put_item(TableName=self.table, Item=item, ReturnConsumedCapacity="TOTAL",
                                            ConditionExpression="attribute_not_exists(pk)")
                self.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
                return True
            except self.client.exceptions.ConditionalCheckFailedException:
                pass  # created concurrently: update it below
        try:
            resp = self.client.put_item(
                TableName=self.table, Item=item, ReturnConsumedCapacity="TOTAL",
                ConditionExpression="attribute_exists(pk) AND user_ver < :v",
                ExpressionAttributeValues={":v": {"N": str(user_ver)}})
            self.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # a newer version of the user already wrote its link: nothing to do
        return False

    def add_members(self, added: dict[str, int]) -> None:
        """Add to the ``n`` counter of each account partition's ``MEMBERS`` item (``ADD``, one write each)."""
        def one(item: tuple[str, int]) -> None:
            resp = self.client.update_item(
                TableName=self.table, Key={"pk": {"S": item[0]}, "sk": {"S": MEMBERS_SK}},
                UpdateExpression="ADD n :n", ExpressionAttributeValues={":n": {"N": str(item[1])}},
                ReturnConsumedCapacity="TOTAL")
            self.stats.add(writes=1, write_units=resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0))

        self.run(one, sorted(added.items()))

    def get_plain(self, keys: Iterable[tuple[str, str]], projection: str | None = None,
                  consistent: bool = True) -> dict[tuple[str, str], dict[str, Any]]:
        """Plain items (no body decoding) for many keys; absent keys are missing from the result."""
        wanted = list(dict.fromkeys(keys))
        chunks = [wanted[i:i + 100] for i in range(0, len(wanted), 100)]

        def one(chunk: list[tuple[str, str]]) -> list[dict[str, Any]]:
            def count(resp: dict[str, Any]) -> None:
                self.stats.add(reads=1, read_units=sum(c.get("CapacityUnits", 0)
                                                       for c in resp.get("ConsumedCapacity", [])))
            return batch_get(self.client, self.table, [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in chunk],
                             projection=projection, consistent=consistent, on_response=count)

        out: dict[tuple[str, str], dict[str, Any]] = {}
        for found in self._io.map(one, chunks):
            for raw in found:
                plain = from_ddb(raw)
                out[(plain["pk"], plain["sk"])] = plain
        return out

    def run(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """Apply ``fn`` to items on the store's thread pool (I/O bound writes in parallel)."""
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        """Let the thread pools' idle threads end (a store built for a while, not for the process)."""
        self._pool.shutdown(wait=False)
        self._io.shutdown(wait=False)
