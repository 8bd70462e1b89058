"""The chunk format: how a request's events are packed into one append-only item.

Used by ingest (:func:`pack_chunks`) and by everything that reads the day tables back
(:func:`unpack_chunk`, :func:`decode_chunk_body`: the stream handler, replay). A chunk is a
zlib-compressed JSON array of normalised events; its key is a digest of the tenant and the sorted
message ids, so a retried request maps to the same keys. Largest item: ``MAX_CHUNK_BODY`` of body plus
~200 bytes of keys.

The item's ``fmt`` attribute is its format (:mod:`projections.formats`): chunks are written in
:data:`CHUNK_FORMAT` and every reader upcasts an older one on read, so that events stored years ago
fold with today's code; a chunk of a newer format than this code knows is refused (``ValueError``:
the handler's poison record, the replay's skipped chunk), never misread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from datetime import UTC, datetime
from typing import Any

from chalicelib import keys
from projections.formats import CHUNK_FORMAT, FormatError, chunk_format, upcast_chunk, upcast_event

__all__ = ["CHUNK_FORMAT", "MAX_CHUNK_BODY", "chunk_digest", "decode_chunk_body", "iso_ts", "pack_chunks",
           "unpack_chunk"]

# Largest compressed body we put in one item (DynamoDB's item limit is 400 KB).
MAX_CHUNK_BODY = 300 * 1024


def iso_ts(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the form every stored timestamp takes."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def chunk_digest(tenant_id: str, message_ids: list[str]) -> str:
    h = hashlib.sha256(tenant_id.encode())
    for mid in sorted(message_ids):
        h.update(b"\x00" + mid.encode())
    return h.hexdigest()[:32]


def pack_chunks(tenant_id: str, events: list[dict[str, Any]], received_at: datetime) -> list[dict[str, Any]]:
    """Pack events into as few items as fit, each a compressed JSON array (DynamoDB JSON items).

    Items are written in :data:`CHUNK_FORMAT`, and so is every event: one handed over in an older format
    (no ``"v"``) is upcast first, so that a format-2 chunk only ever holds format-2 events.

    Raises:
        FormatError: for an event of a format newer than this code (it would be stored under a wrong label).
    """
    chunks: list[list[Any]] = [[upcast_event(e) for e in events]]
    while True:
        bodies = [zlib.compress(json.dumps(c, separators=(",", ":")).encode(), 6) for c in chunks]
        big = [i for i, b in enumerate(bodies) if len(b) > MAX_CHUNK_BODY and len(chunks[i]) > 1]
        if not big:
            break
        i = big[0]
        half = len(chunks[i]) // 2
        chunks[i:i + 1] = [chunks[i][:half], chunks[i][half:]]
    items = []
    for chunk, body in zip(chunks, bodies, strict=True):
        digest = chunk_digest(tenant_id, [e["messageId"] for e in chunk])
        items.append({
            "pk": {"S": keys.chunk_pk(tenant_id, digest)},
            "tenant": {"S": tenant_id},
            "received_at": {"S": iso_ts(received_at)},
            "n": {"N": str(len(chunk))},
            "fmt": {"N": str(CHUNK_FORMAT)},
            "body": {"B": body},
        })
    return items


def decode_chunk_body(body: bytes | str, pk: str | None = None, fmt: Any = None) -> list[dict[str, Any]]:
    """A chunk's ``body`` attribute -> its events, upcast to the current format.

    ``fmt`` is the item's ``fmt`` attribute value (a number, a ``Decimal`` from a stream image, or its
    text from DynamoDB JSON); ``None`` for an item without one, which is format 1. Stream records carry
    binary values as base64 text; boto3 gives bytes. Both work.

    Raises:
        ValueError: on a corrupt body, and :class:`~projections.formats.FormatError` (a ValueError) for a
        chunk format newer than this code reads. The format is checked before the body is opened: a newer
        format may well encode its body differently.
    """
    try:
        version = chunk_format(fmt)
    except FormatError as exc:
        raise FormatError(f"chunk {pk}: {exc}") from None
    try:
        raw = base64.b64decode(body) if isinstance(body, str) else bytes(body)
        events = json.loads(zlib.decompress(raw))
    except (zlib.error, binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"corrupt chunk {pk}: {exc}") from exc
    if not isinstance(events, list):
        raise ValueError(f"corrupt chunk {pk}: body is not a list of events")
    return upcast_chunk(version, events)


def unpack_chunk(image: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A chunk item in DynamoDB JSON (a ``get_item``/``scan`` result) -> ``(tenant_id, events)``, the events
    upcast to the current format.

    Raises:
        KeyError: for an item without ``tenant`` or ``body``; ValueError as :func:`decode_chunk_body`.
    """
    fmt = image.get("fmt")
    # A typed attribute value ({"N": "2"}); whatever its type, the format check judges the value inside.
    fmt_value = next(iter(fmt.values()), None) if isinstance(fmt, dict) else fmt
    return image["tenant"]["S"], decode_chunk_body(image["body"]["B"], image.get("pk", {}).get("S"), fmt_value)
