"""A building version's catch-up: from the stream positions recorded since its rebuild started, not by
re-scanning day tables; then the live projector keeps it current until it is promoted or retired.

While a version is ``replaying`` (:mod:`chalicelib.registry`), the live projector does not write it (a rebuild
holds its items in memory and writes them whole: a second writer would be overwritten), but records, for every
batch it handles, the positions of its records — stream ARN, sequence number and the day-table key of the
chunk — in the version's own table (:func:`record_positions`: one item per batch, ``pk = CATCHUP``). The
rebuild scans the day tables only once every projector has seen the phase (:data:`RECORDING_DELAY`), so each
stored chunk is in the scan, in the recorded positions, or in both.

:func:`catch_up` then folds the recorded chunks in the order they were handled, with the live projector's
writer and chunk ids (a chunk folded by the rebuild too counts once: its messages are claimed), moves the
version to phase ``current`` (the projector writes it from its next batch on) and folds what batches that read
the old phase recorded, until a pass finds nothing. Each applied record is deleted; ``caught_up_to`` in the
registry says how far it got, so a catch-up killed midway goes on from there.

:func:`reindex` rebuilds a version's search index from its table (a rebuild writes no index documents).
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib import db, keys
from chalicelib.chunks import decode_chunk_body
from chalicelib.registry import ProjectionRegistry
from chalicelib.search import get_indexer
from chalicelib.versions import TTL_SECONDS
from chalicelib.view_items import user_link
from chalicelib.views import decode_body, from_ddb
from projections import user
from projections.events import Event
from streams.writer import ViewWriter

__all__ = ["CATCHUP_PK", "RECORDING_DELAY", "REBUILT", "CatchUp", "catch_up", "record_positions", "reindex",
           "stream_table"]

CATCHUP_PK = "CATCHUP"
"""Partition key of the recorded positions in a building version's table (never view content)."""
REBUILT = "0"
"""``caught_up_to`` of a version whose rebuild is done and whose catch-up has not applied anything yet (every
recorded sort key, a 20-digit time, sorts after it): a build run again goes on with the catch-up."""
RECORDING_DELAY = TTL_SECONDS + 1.0
"""Seconds between a version entering ``replaying`` and its rebuild's scan: every projector re-reads the live
versions within :data:`chalicelib.versions.TTL_SECONDS`, so from then on every batch handled is recorded."""


def stream_table(arn: str) -> str:
    """The table of a stream ARN (``arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>``)."""
    return arn.split(":table/", 1)[1].split("/stream/", 1)[0]


def _newer(a: str | None, b: str) -> bool:
    return a is None or (int(b) > int(a) if a.isdigit() and b.isdigit() else b > a)


def positions_of(records: Iterable[Mapping[str, Any]]) -> tuple[list[list[str]], dict[str, str]]:
    """``([[stream arn, chunk pk], ...], {stream arn: newest sequence number})`` of stream records
    (inserts and modifies: what the projector folds)."""
    chunks: list[list[str]] = []
    newest: dict[str, str] = {}
    for r in records:
        if r.get("eventName") not in ("INSERT", "MODIFY"):
            continue
        ddb = r.get("dynamodb") or {}
        pk = ((ddb.get("Keys") or {}).get("pk") or {}).get("S")
        arn = str(r.get("eventSourceARN") or "")
        if not pk or ":table/" not in arn:
            continue
        chunks.append([arn, pk])
        seq = str(ddb.get("SequenceNumber") or "")
        if seq and _newer(newest.get(arn), seq):
            newest[arn] = seq
    return chunks, newest


def record_positions(client: Any, prefix: str, version: int, records: Iterable[Mapping[str, Any]]) -> int:
    """Record the positions of one batch's records for ``version``'s catch-up (one item; a retried batch records
    them again, which the catch-up folds once). Returns the chunks recorded."""
    chunks, newest = positions_of(records)
    if not chunks:
        return 0
    sk = f"{time.time_ns():020d}#{uuid.uuid4().hex[:8]}"
    client.put_item(TableName=keys.view_table_name(prefix, version), Item={
        "pk": {"S": CATCHUP_PK}, "sk": {"S": sk},
        "body": {"B": zlib.compress(json.dumps(chunks, separators=(",", ":")).encode(), 6)},
        "positions": {"M": {arn: {"S": seq} for arn, seq in newest.items()}},
        "n": {"N": str(len(chunks))}})
    return len(chunks)


@dataclass
class CatchUp:
    """What a catch-up did: recorded batches and chunks applied, events folded, passes, stream positions."""

    version: int
    batches: int = 0
    chunks: int = 0
    events: int = 0
    poison: int = 0
    passes: int = 0
    seconds: float = 0.0
    caught_up_to: str | None = None
    positions: dict[str, str] = field(default_factory=dict)


def _recorded(client: Any, table: str, after: str | None) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True,
                              "KeyConditionExpression": "pk = :p" + (" AND sk > :a" if after else ""),
                              "ExpressionAttributeValues": {":p": {"S": CATCHUP_PK},
                                                            **({":a": {"S": after}} if after else {})}}
    yield from db.items(client, "query", **kwargs)


def _get_chunks(client: Any, refs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The day-table items of ``(table, pk)`` refs (strongly consistent, in batches of 100)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    todo = list(dict.fromkeys(refs))
    for i in range(0, len(todo), 100):
        request: dict[str, Any] = {}
        for table, pk in todo[i:i + 100]:
            request.setdefault(table, {"Keys": [], "ConsistentRead": True})["Keys"].append({"pk": {"S": pk}})
        while request:
            resp = client.batch_get_item(RequestItems=request)
            for table, got in resp.get("Responses", {}).items():
                for item in got:
                    found[(table, item["pk"]["S"])] = item
            request = resp.get("UnprocessedKeys") or {}
    return found


def _apply(client: Any, prefix: str, version: int, writer: ViewWriter, done: CatchUp) -> int:
    """Fold every recorded batch after ``done.caught_up_to``, oldest first; returns the batches applied."""
    table = keys.view_table_name(prefix, version)
    registry = ProjectionRegistry(client, prefix)
    applied = 0
    for rec in _recorded(client, table, done.caught_up_to):
        chunks = json.loads(zlib.decompress(rec["body"]["B"]))
        refs = [(stream_table(arn), pk) for arn, pk in chunks]
        items = _get_chunks(client, refs)
        work: dict[str, list[tuple[str, list[Event]]]] = {}
        for (arn, pk), ref in zip(chunks, refs, strict=True):
            item = items.get(ref)
            if item is None:  # a day table dropped since (retention): its events are in no table any more
                continue
            events: list[Event] = []
            for wire in decode_chunk_body(item["body"]["B"], pk, item.get("fmt", {}).get("N")):
                try:
                    events.append(Event.from_wire(wire))
                except (ValueError, KeyError, TypeError):
                    done.poison += 1  # dead-lettered by the live projector; never folded
            if events:
                # The live projector's chunk id: a chunk it folds again later is a re-delivery, not new events.
                work.setdefault(item["tenant"]["S"], []).append((f"{arn}|{pk}", events))
                done.events += len(events)
        if work:
            writer.record(None, datetime.now(UTC), chunks=work)
        for arn, seq in (rec.get("positions", {}).get("M") or {}).items():
            if _newer(done.positions.get(arn), seq["S"]):
                done.positions[arn] = seq["S"]
        done.caught_up_to = rec["sk"]["S"]
        done.chunks += len(chunks)
        done.batches += 1
        applied += 1
        client.delete_item(TableName=table, Key={"pk": {"S": CATCHUP_PK}, "sk": rec["sk"]})
        if applied % 20 == 0:  # how far a killed catch-up got (it goes on from there)
            registry.set_phase(version, registry.phase(version)[0] or "replaying",
                               caught_up_to=done.caught_up_to, positions=done.positions)
    return applied


def catch_up(client: Any, prefix: str, version: int, writer: ViewWriter, *, wait: float = RECORDING_DELAY,
             quiet_passes: int = 1) -> CatchUp:
    """Fold the positions recorded while ``version`` was replaying, then make it ``current``.

    ``writer``: the live projector's writer of that version (``streams.handler.new_writer``). After the switch,
    batches that read the old phase may still record positions for up to ``wait`` seconds: passes go on until
    ``quiet_passes`` in a row find nothing.
    """
    registry = ProjectionRegistry(client, prefix)
    started = time.monotonic()
    phase, after = registry.phase(version)
    done = CatchUp(version, caught_up_to=after)
    built = registry.get(version)
    if built is not None:
        done.positions = dict(built.built_through)
    _apply(client, prefix, version, writer, done)
    done.passes = 1
    if phase != "current":
        registry.set_phase(version, "current", caught_up_to=done.caught_up_to, positions=done.positions)
    quiet = 0
    while quiet < quiet_passes:
        time.sleep(wait)
        done.passes += 1
        quiet = 0 if _apply(client, prefix, version, writer, done) else quiet + 1
    registry.set_phase(version, "current", caught_up_to=done.caught_up_to, positions=done.positions)
    done.seconds = round(time.monotonic() - started, 3)
    return done


def reindex(client: Any, prefix: str, version: int, *, batch: int = 500) -> dict[str, int]:
    """Rebuild ``version``'s search index from its table: every account ``SUMMARY`` and every user ``HEAD``
    (documents replace earlier ones; idempotent). Returns the documents indexed by kind."""
    table = keys.view_table_name(prefix, version)
    index = get_indexer(version)
    accounts: dict[str, dict[str, dict[str, Any]]] = {}
    users: dict[str, dict[str, dict[str, Any]]] = {}
    counted = {"accounts": 0, "users": 0}

    def flush() -> None:
        for tenant in sorted(set(accounts) | set(users)):
            index.index(tenant, accounts.get(tenant, {}), users.get(tenant, {}))
        accounts.clear()
        users.clear()

    held = 0
    for item in db.items(client, "scan", TableName=table, ConsistentRead=True):
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        parts = pk.split("#", 2)
        if len(parts) != 3 or parts[1] not in ("A", "U"):
            continue
        tenant, kind, entity = parts
        if kind == "A" and sk == keys.SUMMARY_SK:
            attrs = from_ddb({k: v for k, v in item.items() if k != "body"})
            accounts.setdefault(tenant, {})[entity] = attrs
            counted["accounts"] += 1
        elif kind == "U" and sk == keys.HEAD_SK and "body" in item:
            state = user.UserState.from_dict(decode_body(item["body"]["B"]))
            users.setdefault(tenant, {})[entity] = {**user_link(state), "accounts": sorted(state.accounts)}
            counted["users"] += 1
        else:
            continue
        held += 1
        if held >= batch:
            flush()
            held = 0
    flush()
    return counted
