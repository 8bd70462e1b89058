"""Stored formats of the day tables' chunks and events, and the pure upcasters of the old ones.

Events are kept forever and read by code written years later (a replay folds every day table), so every
stored chunk and event says which format it is in, and old formats are upgraded on read, one step at a
time, by a pure function per old format (as eventsourcing's ``upcast_v1_v2``): the writers only ever write
the current format, and the readers only ever see it.

Formats
-------
Chunk (a day-table item, :mod:`chalicelib.chunks`): the item attribute ``fmt``.

* ``1`` — ``{pk, tenant, received_at, n, fmt: 1, body}``, ``body`` a zlib-compressed JSON array of
  format-1 events. Ingest wrote ``fmt: 1`` from the start; an item without ``fmt`` is read as format 1 too.
* ``2`` — the same layout with ``fmt: 2``; every event of its body is a format-2 event.

Event (one element of a chunk body, :meth:`projections.events.Event.from_wire`): the key ``"v"``.

* ``1`` — the normalised Segment dict (``messageId``, ``type``, ``userId``, ``anonymousId``, ``groupId``,
  ``event``, ``name``, ``properties``, ``traits``, ``context``, ``previousId``, ``timestamp``,
  ``originalTimestamp``, ``sentAt``, ``receivedAt``), without ``"v"``.
* ``2`` — format 1 plus ``"v": 2``. No field changed meaning: ingest's normalisation (numeric ids as
  strings, ``context.groupId`` copied to ``groupId`` for usage calls, ``context.traits`` stored as
  ``traits``, a page's ``category`` in its properties) is the same, so :func:`upcast_event_v1` only
  stamps the version.

A format newer than this code knows is refused with ``ValueError`` (never guessed at): the stream
handler fails the record (retried, then dead-lettered) and a replay skips the chunk and counts it as
poison, so code that is rolled back never folds what it would misread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "CHUNK_FORMAT",
    "CHUNK_UPCASTERS",
    "EVENT_FORMAT",
    "EVENT_UPCASTERS",
    "FormatError",
    "chunk_format",
    "event_format",
    "upcast_chunk",
    "upcast_chunk_v1",
    "upcast_event",
    "upcast_event_v1",
]

CHUNK_FORMAT: Final = 2
"""The chunk format ingest writes (the item attribute ``fmt``)."""

EVENT_FORMAT: Final = 2
"""The event format ingest writes (``"v"`` in each stored event)."""


class FormatError(ValueError):
    """A stored format this code cannot read: newer than it knows, or not a format number at all.

    A ``ValueError``, so every reader's poison path takes it (the handler's failed record, the replay's
    skipped chunk)."""


def _version(value: Any, what: str, current: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # DynamoDB numbers reach us as Decimal (a stream image) or text (DynamoDB JSON): integral ones only.
        try:
            number = int(str(value))
        except ValueError:
            raise FormatError(f"{what} format {value!r} is not a format number") from None
        value = number
    if value < 1:
        raise FormatError(f"{what} format {value} is not a format number")
    if value > current:
        raise FormatError(f"{what} format {value} is newer than this code reads (up to {current}): "
                          f"refused rather than misread")
    return value


def chunk_format(fmt: Any) -> int:
    """The chunk format of an item's ``fmt`` attribute value (``None``: an item without one, format 1).

    Raises:
        FormatError: for a format newer than :data:`CHUNK_FORMAT` or a value that is not a format number.
    """
    return 1 if fmt is None else _version(fmt, "chunk", CHUNK_FORMAT)


def event_format(wire: Mapping[str, Any]) -> int:
    """The format of a stored event (its ``"v"``; format 1 has none).

    Raises:
        FormatError: for a format newer than :data:`EVENT_FORMAT` or a ``"v"`` that is not a format number.
    """
    v = wire.get("v")
    return 1 if v is None else _version(v, "event", EVENT_FORMAT)


def upcast_event_v1(wire: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 event -> format 2: the same fields, stamped ``"v": 2``."""
    return {**wire, "v": 2}


def upcast_chunk_v1(events: Sequence[Any]) -> list[Any]:
    """A format-1 chunk body (its list of events) -> format 2: every event upcast with :func:`upcast_event_v1`.

    An element that is not an object is kept as it is, so that :meth:`~projections.events.Event.from_wire`
    rejects that one event (a poison event) rather than the whole chunk.
    """
    return [upcast_event_v1(e) if isinstance(e, Mapping) and e.get("v") is None else e for e in events]


EVENT_UPCASTERS: Final[Mapping[int, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {1: upcast_event_v1}
"""Old event format -> the pure function that upgrades it by one step."""

CHUNK_UPCASTERS: Final[Mapping[int, Callable[[Sequence[Any]], list[Any]]]] = {1: upcast_chunk_v1}
"""Old chunk format -> the pure function that upgrades its body by one step."""


def upcast_event(wire: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored event in any known format -> the current format (the same object when it is already current).

    Raises:
        FormatError: for a format newer than :data:`EVENT_FORMAT`.
    """
    v = event_format(wire)
    while v < EVENT_FORMAT:
        wire = EVENT_UPCASTERS[v](wire)
        v += 1
    return wire


def upcast_chunk(fmt: Any, events: Sequence[Any]) -> list[Any]:
    """A chunk body's events in chunk format ``fmt`` (an item's ``fmt`` value, ``None`` when it has none) ->
    the current format's.

    Raises:
        FormatError: for a format newer than :data:`CHUNK_FORMAT`.
    """
    v = chunk_format(fmt)
    out = list(events)
    while v < CHUNK_FORMAT:
        out = CHUNK_UPCASTERS[v](out)
        v += 1
    return out
