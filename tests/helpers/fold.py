"""Ingest requests and fold what was stored, as the stream handler does, on DynamoDB Local."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chalicelib import db, keys
from chalicelib.chunks import unpack_chunk
from chalicelib.ingest import Ingestor, IngestResult, parse_request
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore, decode_body
from projections.events import Event
from streams import handler
from streams.alerts import Outbox
from streams.decode import to_lambda_record
from streams.writer import ViewWriter, WriteReport

__all__ = ["claimed_digests", "cut_chunks", "fold_items", "ingest_body", "project_requests", "view_content",
           "writer_for"]


def writer_for(prefix: str) -> ViewWriter:
    client = db.get_client()
    control = keys.control_table_name(prefix)
    return ViewWriter(ViewStore(client, keys.view_table_name(prefix, VIEW_VERSION)), ScoreModelStore(client, control),
                      Outbox(client, control))


def ingest_body(ingestor: Ingestor, tenant_id: str, body: Any, kind: str = "batch") -> IngestResult:
    return ingestor.ingest(tenant_id, parse_request(body, kind))


def fold_items(prefix: str, items: list[dict[str, Any]], writer: ViewWriter | None = None,
               now: datetime | None = None) -> tuple[dict[str, Any], WriteReport, int]:
    """Decode stored chunk items (``Event.from_wire`` on every event) and run them through the real stream
    handler with a real view writer; returns (partial-batch response, write report, events decoded)."""
    decoded = 0
    for item in items:
        _, events = unpack_chunk(item)
        decoded += len([Event.from_wire(e) for e in events])
    records = [dict(to_lambda_record({
        "eventID": f"e{i}", "eventName": "INSERT",
        "dynamodb": {"ApproximateCreationDateTime": datetime.now(UTC), "Keys": {"pk": item["pk"]},
                     "NewImage": item, "SequenceNumber": f"{i + 1:021d}", "SizeBytes": 100,
                     "StreamViewType": "NEW_IMAGE"}}, "arn:aws:dynamodb:local:000000000000:table/x/stream/1"))
        for i, item in enumerate(items)]
    response, report = handler.handle_batch(records, writer=writer or writer_for(prefix), now=now)
    return response, report, decoded


def project_requests(tenant_id: str, prefix: str, bodies: list[Any]) -> WriteReport:
    """Ingest each batch body and fold the chunks it stored (no mapping runtime needed)."""
    client = db.get_client()
    ing = Ingestor(client, prefix)
    table = keys.events_table_name(prefix, datetime.now(UTC))
    before = {i["pk"]["S"] for i in db.items(client, "scan", TableName=table, ConsistentRead=True)}
    for body in bodies:
        ingest_body(ing, tenant_id, body)
    new = [i for i in db.items(client, "scan", TableName=table, ConsistentRead=True) if i["pk"]["S"] not in before]
    response, report, _ = fold_items(prefix, new)
    assert not response.get("batchItemFailures"), response
    return report


def claimed_digests(store: ViewStore, tenant_id: str) -> dict[str, str]:
    """Every message digest the view claimed for a tenant, with its owner (source and chunk tag):
    the claim pages, read with a scan (tests only)."""
    out: dict[str, str] = {}
    prefix = keys.claim_page_pk(tenant_id, "")
    for raw in db.items(store.client, "scan", TableName=store.table):
        if raw["pk"]["S"].startswith(prefix) and raw["sk"]["S"].startswith(keys.CLAIM_PAGE_PREFIX):
            for owner, digests in decode_body(raw["body"]["B"]).items():
                for i in range(0, len(digests), 16):
                    out[digests[i:i + 16]] = owner
    return out


def view_content(store: ViewStore) -> dict[str, Any]:
    """Every item of a view table but the delta pages' own (pages and their bucket counters): what a
    re-delivered batch must leave unchanged (it rewrites its pages, then settles nothing new)."""
    return {f"{raw['pk']['S']}|{raw['sk']['S']}": raw
            for raw in db.items(store.client, "scan", TableName=store.table, ConsistentRead=True)
            if "#P#" not in raw["pk"]["S"]}


def cut_chunks(stream: Sequence[Event], cuts: list[int]) -> list[tuple[str, list[Event]]]:
    """``stream`` cut into chunks ``chunk-<n>`` of the sizes in ``cuts``, cycled (the unit of re-delivery)."""
    chunks: list[tuple[str, list[Event]]] = []
    at = 0
    for n, size in enumerate(itertools.cycle(cuts)):
        if at >= len(stream):
            break
        chunks.append((f"chunk-{n}", list(stream[at:at + size])))
        at += size
    return chunks
