"""The normalized event as the folds see it, and the frozen JSON values it carries.

Ingest stores every accepted call as a JSON dict with Segment field names (see
``docs``/DESIGN.md). :meth:`Event.from_wire` turns that dict into a frozen, hashable
:class:`Event` (upcasting an old stored format first, :mod:`projections.formats`); :meth:`Event.to_wire`
turns it back, in the current format. JSON objects become :class:`FrozenMap`
and JSON arrays become tuples, so events and the states built from them compare
structurally and can live in sets.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, TypeVar

from projections.formats import EVENT_FORMAT, upcast_event

__all__ = [
    "EVENT_TYPES",
    "USAGE_TYPES",
    "Event",
    "FrozenMap",
    "canonical_json",
    "day_of",
    "format_ts",
    "freeze",
    "json_type",
    "message_digest",
    "parse_ts",
    "thaw",
]

EVENT_TYPES: Final = frozenset({"track", "identify", "group", "page", "screen", "alias"})
"""Segment call types ingest accepts."""

USAGE_TYPES: Final = frozenset({"track", "page", "screen"})
"""Call types that record product usage (as opposed to identity or traits)."""

V = TypeVar("V")


class FrozenMap(Mapping[str, V]):
    """An immutable, hashable mapping with string keys.

    Equality is the ordinary mapping equality, so ``FrozenMap({"a": 1}) == {"a": 1}``.
    Values must be hashable for :func:`hash` to work (everything :func:`freeze` makes is).
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, V] | None = None) -> None:
        self._data: dict[str, V] = dict(data) if data else {}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({dict(sorted(self._data.items()))!r})"


def freeze(value: Any) -> Any:
    """Return a frozen copy of a JSON-like value.

    Objects become :class:`FrozenMap`, arrays become tuples. ``Decimal`` (what boto3 returns
    for DynamoDB numbers) becomes ``int`` when integral, else ``float``.

    Raises:
        ValueError: for non-finite floats, non-string object keys, or non-JSON types.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} is not JSON")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite number {value!r} is not JSON")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
            out[key] = freeze(item)
        return FrozenMap(out)
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain ``dict``/``list`` JSON-compatible values."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


def canonical_json(value: Any) -> str:
    """A canonical JSON text of a (frozen or plain) JSON value; used as a last tie-break."""
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_type(value: Any) -> str:
    """The JSON type name of a value: string, number, boolean, object, array or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"


def message_digest(message_id: str) -> str:
    """16 hex chars: the first 8 bytes of BLAKE2b(messageId). Used to count without repeats."""
    return hashlib.blake2b(message_id.encode("utf-8")).hexdigest()[:16]


def parse_ts(text: str) -> datetime:
    """Parse an ISO-8601 timestamp to an aware UTC datetime truncated to milliseconds.

    A timestamp without an offset is taken as UTC (ingest always writes ``Z``).

    Raises:
        ValueError: if ``text`` is not an ISO-8601 timestamp.
    """
    if not isinstance(text, str):
        raise ValueError(f"timestamp must be a string, got {type(text).__name__}")
    parsed = datetime.fromisoformat(text)
    return _normalise(parsed)


def _normalise(value: datetime) -> datetime:
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # normalised already (every event a fold copies with ``replace``)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@lru_cache(maxsize=1 << 16)
def format_ts(value: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC), the wire format. (Cached: a fold formats
    each event's time about six times.)"""
    value = _normalise(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@lru_cache(maxsize=1 << 16)
def day_of(value: datetime) -> str:
    """The UTC day ``YYYY-MM-DD`` of an aware datetime."""
    return value.astimezone(UTC).date().isoformat()


def _opt_id(wire: Mapping[str, Any], name: str) -> str | None:
    value = wire.get(name)
    if value is None:
        return None
    # Segment libraries sometimes send numeric ids; ingest should normalise, but a number
    # must not poison the projector.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")
    return value or None


def _opt_ts(wire: Mapping[str, Any], name: str) -> datetime | None:
    value = wire.get(name)
    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def _obj(wire: Mapping[str, Any], name: str) -> FrozenMap[Any]:
    value = wire.get(name)
    if value is None:
        return FrozenMap()
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object, got {type(value).__name__}")
    return freeze(value)


@dataclass(frozen=True, slots=True)
class Event:
    """One normalized Segment call, as stored in a day table.

    ``timestamp`` is the corrected event time (aware, UTC, millisecond precision); the
    folds use it and nothing else for time.
    """

    message_id: str
    type: str
    timestamp: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    event: str | None = None
    name: str | None = None
    properties: FrozenMap[Any] = field(default_factory=FrozenMap)
    traits: FrozenMap[Any] = field(default_factory=FrozenMap)
    context: FrozenMap[Any] = field(default_factory=FrozenMap)
    previous_id: str | None = None
    received_at: datetime | None = None
    sent_at: datetime | None = None
    original_timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message_id, str) or not self.message_id:
            raise ValueError("messageId must be a non-empty string")
        if self.type not in EVENT_TYPES:
            raise ValueError(f"type must be one of {sorted(EVENT_TYPES)}, got {self.type!r}")
        for attr in ("timestamp", "received_at", "sent_at", "original_timestamp"):
            value = getattr(self, attr)
            if value is None and attr != "timestamp":
                continue
            if not isinstance(value, datetime):
                raise ValueError(f"{attr} must be a datetime")
            # Normalised so that to_wire/from_wire round-trips exactly.
            object.__setattr__(self, attr, _normalise(value))
        for attr in ("properties", "traits", "context"):
            value = getattr(self, attr)
            if not isinstance(value, FrozenMap):
                object.__setattr__(self, attr, freeze(dict(value)))

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Event:
        """Build an event from the normalized wire dict (Segment field names) in any stored format.

        Every reader of stored events goes through here, so this is where an old format is upcast
        (:func:`projections.formats.upcast_event`; a dict without ``"v"`` is format 1). Unknown keys are
        ignored. Raises ValueError naming the offending field, and
        :class:`~projections.formats.FormatError` (a ValueError) for a format newer than this code.
        """
        if not isinstance(wire, Mapping):
            raise ValueError("event must be an object")
        wire = upcast_event(wire)
        if "timestamp" not in wire or wire["timestamp"] is None:
            raise ValueError("timestamp is required")
        try:
            timestamp = parse_ts(wire["timestamp"])
        except ValueError as exc:
            raise ValueError(f"timestamp: {exc}") from exc
        message_id = wire.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("messageId must be a non-empty string")
        return cls(
            message_id=message_id,
            type=wire.get("type"),  # type: ignore[arg-type]  # validated in __post_init__
            timestamp=timestamp,
            user_id=_opt_id(wire, "userId"),
            anonymous_id=_opt_id(wire, "anonymousId"),
            group_id=_opt_id(wire, "groupId"),
            event=_opt_str(wire, "event"),
            name=_opt_str(wire, "name"),
            properties=_obj(wire, "properties"),
            traits=_obj(wire, "traits"),
            context=_obj(wire, "context"),
            previous_id=_opt_id(wire, "previousId"),
            received_at=_opt_ts(wire, "receivedAt"),
            sent_at=_opt_ts(wire, "sentAt"),
            original_timestamp=_opt_ts(wire, "originalTimestamp"),
        )

    def to_wire(self) -> dict[str, Any]:
        """The normalized wire dict, in the current format; ``Event.from_wire(e.to_wire()) == e``."""
        return {
            "v": EVENT_FORMAT,
            "messageId": self.message_id,
            "type": self.type,
            "userId": self.user_id,
            "anonymousId": self.anonymous_id,
            "groupId": self.group_id,
            "event": self.event,
            "name": self.name,
            "properties": thaw(self.properties),
            "traits": thaw(self.traits),
            "context": thaw(self.context),
            "previousId": self.previous_id,
            "timestamp": format_ts(self.timestamp),
            "receivedAt": None if self.received_at is None else format_ts(self.received_at),
            "sentAt": None if self.sent_at is None else format_ts(self.sent_at),
            "originalTimestamp": (None if self.original_timestamp is None else format_ts(self.original_timestamp)),
        }

    @property
    def digest(self) -> str:
        """:func:`message_digest` of the message id."""
        return message_digest(self.message_id)

    @property
    def day(self) -> str:
        """UTC day (``YYYY-MM-DD``) of the event timestamp."""
        return day_of(self.timestamp)

    @property
    def user_key(self) -> str | None:
        """The user-view key: ``userId``, else ``anonymousId``."""
        return self.user_id or self.anonymous_id

    @property
    def is_usage(self) -> bool:
        """True for track, page and screen calls."""
        return self.type in USAGE_TYPES

    @property
    def display_name(self) -> str | None:
        """The event name of a track call, the page/screen name otherwise."""
        return self.event if self.type == "track" else self.name

    @property
    def catalog_name(self) -> str | None:
        """Name in the tenant event catalog: ``event``, ``page:<name>``, ``screen:<name>``.

        None for calls that are not usage (identify, group, alias).
        """
        if self.type == "track":
            return self.event or ""
        if self.type in ("page", "screen"):
            return f"{self.type}:{self.name or ''}"
        return None


def _opt_str(wire: Mapping[str, Any], name: str) -> str | None:
    value = wire.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")
