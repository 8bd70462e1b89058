"""Helpers to read what ingest stored."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from chalicelib import keys
from chalicelib.chunks import unpack_chunk
from chalicelib.db import items


def scan_chunks(client: Any, prefix: str, day: date | datetime | None = None) -> list[dict[str, Any]]:
    table = keys.events_table_name(prefix, day or datetime.now(UTC))
    return list(items(client, "scan", TableName=table, ConsistentRead=True))


def stored_events(client: Any, prefix: str, day: date | datetime | None = None) -> list[dict[str, Any]]:
    out = []
    for item in scan_chunks(client, prefix, day):
        tenant, events = unpack_chunk(item)
        out += [{**e, "_tenant": tenant} for e in events]
    return out
