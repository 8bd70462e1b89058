"""The Segment-compatible ingest path: validate, normalise, pack, append.

Layout and cost
---------------
A request's messages are normalised, de-duplicated by ``messageId`` and packed into as few
*chunk* items as possible (a zlib-compressed JSON array, in the manner of Equinox's
DynamoStore, which packs events into items). A chunk's key is a digest of its tenant and its
sorted message ids, so a retried request maps to the same keys:

* the put is conditional (``attribute_not_exists(pk)``): events are appended, never updated,
  and a retry that lands the same day is a no-op;
* a retry that lands after UTC midnight is caught by a (cheap, read-unit) ``BatchGetItem`` for
  the same keys in yesterday's table, which covers Segment's 24-hour window;
* a message re-sent inside a *different* batch has a different chunk key and is stored again;
  the folds count by message-id digest, so it is still never counted twice downstream.

A 300-byte event in a 100-message batch then costs a small fraction of a write unit
(see ``docs/PERFORMANCE.md``, measured with ``ReturnConsumedCapacity``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from chalicelib import keys
from chalicelib.chunks import iso_ts, pack_chunks
from chalicelib.db import batch_get
from chalicelib.errors import ApiError, FieldError
from projections.events import Event, canonical_json, thaw
from projections.formats import EVENT_FORMAT
from projections.registers import MAX_TRAIT_KEY, MAX_TRAIT_VALUE, MAX_TRAITS

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_STORED_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_DEPTH",
    "MAX_EVENT_NAMES",
    "MAX_ID_BYTES",
    "MAX_PROPERTY_KEYS",
    "MAX_TRAITS_BYTES",
    "CatalogCaps",
    "check_json_values",
    "loads_json",
    "Ingestor",
    "IngestResult",
    "TRAIT_CALLS",
    "decode_body",
    "message_traits",
    "parse_request",
    "normalise",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
# Every request is also checked on what will be *stored*: the normalised events, with the envelope's
# `context`/`integrations` merged into each message, must stay under this many bytes of JSON in total.
MAX_STORED_BYTES = 1024 * 1024
# Ids and names are keys of view items (DynamoDB: partition key <= 2048 bytes, sort key <= 1024 bytes),
# so their limit is counted in UTF-8 bytes, not characters.
MAX_ID_BYTES = 256
MAX_ID_LENGTH = MAX_ID_BYTES
# JSON nesting depth of a request body (DynamoDB maps nest at most 32 levels; Python recursion is finite).
MAX_DEPTH = 32
# Numbers must be storable as DynamoDB numbers: 38 significant digits, magnitude 1e-130 .. 9.99e125.
MAX_INT_DIGITS = 38
MAX_FLOAT = 9.99e125
MIN_FLOAT = 1e-130
# Per-tenant caps on the catalog (documented defaults; an Ingestor can be built with others).
MAX_EVENT_NAMES = 1000
MAX_PROPERTY_KEYS = 2000
# Traits are copied onto user and account items: capped per message (JSON bytes).
MAX_TRAITS_BYTES = 16 * 1024
# Events may be back-dated, down to the Unix epoch, but not dated far into the future (after clock-skew
# correction).
MAX_FUTURE = timedelta(hours=24)
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# What normalisation adds to a message (ids, corrected timestamps, receivedAt, nulls): far below this.
_NORMALISED_OVERHEAD = 2048

MessageType = Literal["track", "identify", "group", "page", "screen", "alias"]
# Calls whose traits are read from `traits`, else from `context.traits` (see :func:`message_traits`).
TRAIT_CALLS = frozenset({"identify", "group", "track"})


def _id_bytes(v: str) -> str:
    try:
        n = len(v.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode (lone surrogate)") from None
    if n > MAX_ID_BYTES:
        raise ValueError(f"is {n} bytes in UTF-8; the limit is {MAX_ID_BYTES} bytes")
    return v


Id = Annotated[str, Field(min_length=1), AfterValidator(_id_bytes)]
Name = Annotated[str, AfterValidator(_id_bytes)]


class _Bad:
    """A JSON token that parsed but cannot be stored (NaN, Infinity, 1e999, a 39-digit integer)."""

    __slots__ = ("text", "reason")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text if len(text) <= 24 else text[:20] + "..."
        self.reason = reason


def _parse_constant(text: str) -> _Bad:
    return _Bad(text, f"{text} is not a JSON number")


def _parse_float(text: str) -> float | _Bad:
    value = float(text)
    if not math.isfinite(value):
        return _Bad(text, "number overflows a 64-bit float")
    return value


def _parse_int(text: str) -> int | _Bad:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _Bad(text, f"integer has {len(text.lstrip('-'))} digits; the limit is {MAX_INT_DIGITS}")
    return int(text)


def loads_json(data: bytes | str) -> Any:
    """Parse JSON without ever raising anything but :class:`ApiError` (400), keeping numbers that
    cannot be stored as markers for :func:`check_json_values` to report with their field."""
    try:
        return json.loads(data, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except RecursionError:
        raise ApiError(400, "too_deep", f"JSON nesting is deeper than {MAX_DEPTH} levels",
                       [FieldError("body", "nested too deeply", limit=MAX_DEPTH)]) from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}", [FieldError("body", str(exc))]) from None


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def check_json_values(value: Any, root: str = "") -> list[FieldError]:
    """Every value a client sent that cannot be stored and folded: non-finite or out-of-range numbers,
    integers over 38 digits, lone surrogates in strings or keys, nesting deeper than ``MAX_DEPTH``.
    Iterative (no recursion), at most 50 errors."""
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack and len(errors) < 50:
        v, where, depth = stack.pop()
        field = where or "body"
        if isinstance(v, _Bad):
            errors.append(FieldError(field, f"{v.reason} ({v.text})",
                                     limit=f"finite numbers, integers of at most {MAX_INT_DIGITS} digits"))
        elif isinstance(v, float):
            if v != 0 and not MIN_FLOAT <= abs(v) <= MAX_FLOAT:
                errors.append(FieldError(field, f"number {v!r} is outside the storable range",
                                         limit=f"{MIN_FLOAT:g} <= |x| <= {MAX_FLOAT:g}"))
        elif isinstance(v, str):
            if not _utf8(v):
                errors.append(FieldError(field, "string is not valid Unicode (lone surrogate)", limit="UTF-8"))
        elif isinstance(v, (dict, list)):
            if depth >= MAX_DEPTH:
                errors.append(FieldError(field, f"nested deeper than {MAX_DEPTH} levels", limit=MAX_DEPTH))
                continue
            if isinstance(v, dict):
                for k, x in v.items():
                    if not _utf8(k):
                        errors.append(FieldError(field, "object key is not valid Unicode (lone surrogate)",
                                                 limit="UTF-8"))
                        continue
                    stack.append((x, _path(where, k), depth + 1))
            else:
                stack.extend((x, _path(where, i), depth + 1) for i, x in enumerate(v))
    return errors


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _coerce_id(v: Any) -> Any:
    # Segment accepts numeric ids and stringifies them.
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return str(v)
    return v


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)

    messageId: Id | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    groupId: Id | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)

    _needs_identity = True

    @field_validator("messageId", "userId", "anonymousId", "groupId", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        return _coerce_id(v)

    @model_validator(mode="after")
    def _identity(self) -> _Base:
        if self._needs_identity and self.userId is None and self.anonymousId is None:
            raise ValueError("userId or anonymousId is required")
        return self


class Track(_Base):
    type: Literal["track"]
    event: Annotated[str, Field(min_length=1), AfterValidator(_id_bytes)]
    properties: dict[str, Any] = Field(default_factory=dict)


class Identify(_Base):
    type: Literal["identify"]
    traits: dict[str, Any] = Field(default_factory=dict)


class Group(_Base):
    type: Literal["group"]
    groupId: Id  # type: ignore[assignment]
    traits: dict[str, Any] = Field(default_factory=dict)


class Page(_Base):
    type: Literal["page"]
    name: Name | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Screen(_Base):
    type: Literal["screen"]
    name: Name | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Alias(_Base):
    type: Literal["alias"]
    previousId: Id
    userId: Id  # type: ignore[assignment]

    @field_validator("previousId", mode="before")
    @classmethod
    def _pid(cls, v: Any) -> Any:
        return _coerce_id(v)


Message = Annotated[Track | Identify | Group | Page | Screen | Alias, Field(discriminator="type")]
_message_adapter: TypeAdapter[Any] = TypeAdapter(Message)


class BatchEnvelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[Any]
    sentAt: datetime | None = None
    writeKey: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)


_iso = iso_ts


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("track", "identify", "group", "page", "screen", "alias") and not out:
            continue  # the discriminator tag pydantic puts first in union errors
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def decode_body(raw: bytes | str | None, content_encoding: str | None) -> Any:
    """Bytes of a request body -> JSON value, enforcing the request size limit and gzip."""
    raw = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    enc = (content_encoding or "").strip().lower()
    if enc == "gzip" and not raw.startswith(b"\x1f\x8b") and raw.lstrip()[:1] in (b"{", b"["):
        # Already decompressed in front of the app (API Gateway's request decompression keeps the header).
        enc = "identity"
    if enc == "gzip":
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = d.decompress(raw, MAX_REQUEST_BYTES + 1)
            if len(data) > MAX_REQUEST_BYTES or d.unconsumed_tail:
                raise ApiError(400, "request_too_large",
                               f"decompressed request body exceeds {MAX_REQUEST_BYTES} bytes",
                               [FieldError("body", "request too large", limit=MAX_REQUEST_BYTES)])
            if not d.eof:
                raise zlib.error("truncated gzip stream")
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise ApiError(400, "invalid_gzip", f"body is not valid gzip: {exc}",
                           [FieldError("Content-Encoding", "invalid gzip body")]) from None
    elif enc in ("", "identity"):
        data = raw
    else:
        raise ApiError(400, "unsupported_encoding", f"Content-Encoding {enc!r} is not supported (use gzip)",
                       [FieldError("Content-Encoding", "unsupported", limit="gzip|identity")])
    if len(data) > MAX_REQUEST_BYTES:
        raise ApiError(400, "request_too_large", f"request body is {len(data)} bytes; the limit is "
                       f"{MAX_REQUEST_BYTES}", [FieldError("body", "request too large", limit=MAX_REQUEST_BYTES)])
    if not data.strip():
        raise ApiError(400, "invalid_json", "request body is empty", [FieldError("body", "empty body")])
    body = loads_json(data)
    errors = check_json_values(body)
    if errors:
        raise ApiError(400, "invalid_value", f"{errors[0].field}: {errors[0].message}", errors)
    return body


@dataclass(frozen=True)
class ParsedRequest:
    write_key: str | None
    messages: list[BaseModel]
    raw_messages: list[dict[str, Any]]
    batch_sent_at: datetime | None
    is_batch: bool = True
    envelope_bytes: int = 0  # size of the batch's context + integrations, copied into every message


def parse_request(body: Any, kind: str, path: str | None = None) -> ParsedRequest:
    """Validate a request body for ``/v1/<kind>`` (or its short form ``path``) and return its messages.

    The write key may come in the body: the batch's ``writeKey``, else its messages' (analytics.js repeats it
    in every message), or a single message's ``writeKey``. ``sentAt`` and ``_metadata`` are accepted (the
    latter, like every unknown member, is not stored).

    Raises:
        ApiError: 400 naming the message index, the field and the limit of every problem.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object",
                       [FieldError("body", "expected an object")])
    bad_values = check_json_values(body)
    if bad_values:
        raise ApiError(400, "invalid_value", f"{bad_values[0].field}: {bad_values[0].message}", bad_values)
    if kind == "batch":
        try:
            env = BatchEnvelope.model_validate(body)
        except ValidationError as exc:
            errs = [FieldError(_field(e["loc"]), e["msg"]) for e in exc.errors()]
            raise ApiError(400, "invalid_request", errs[0].field + ": " + errs[0].message, errs) from None
        if len(env.batch) > MAX_BATCH_MESSAGES:
            raise ApiError(400, "too_many_messages",
                           f"batch has {len(env.batch)} messages; the limit is {MAX_BATCH_MESSAGES}",
                           [FieldError("batch", "too many messages", limit=MAX_BATCH_MESSAGES)])
        if not env.batch:
            raise ApiError(400, "invalid_request", "batch is empty", [FieldError("batch", "empty batch", limit=1)])
        raw = env.batch
        write_key, sent_at, ctx, integ = env.writeKey, env.sentAt, env.context, env.integrations
        if write_key is None:
            write_key = next((m["writeKey"] for m in raw if isinstance(m, dict) and isinstance(m.get("writeKey"), str)
                              and m["writeKey"]), None)
        prefix = "batch"
    else:
        body = dict(body)
        body.setdefault("type", kind)
        raw = [body]
        write_key = body.get("writeKey") if isinstance(body.get("writeKey"), str) else None
        sent_at, ctx, integ = None, {}, {}
        prefix = ""
    errors: list[FieldError] = []
    messages: list[BaseModel] = []
    raw_messages: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        index = i if kind == "batch" else None
        where = f"{prefix}[{i}]" if kind == "batch" else ""
        if not isinstance(msg, dict):
            errors.append(FieldError(where or "body", "message must be a JSON object", index))
            continue
        size = len(json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_MESSAGE_BYTES:
            errors.append(FieldError(where or "body", f"message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}",
                                     index, MAX_MESSAGE_BYTES))
            continue
        if kind != "batch" and msg.get("type") != kind:
            errors.append(FieldError("type", f"type must be {kind!r} on {path or '/v1/' + kind}", index, kind))
            continue
        bad = _object_fields(msg, where, index)
        if bad:
            errors += bad
            continue
        if ctx or integ:
            # What is stored is the merged message: check its size, not the size the client sent.
            msg = {**msg, "context": {**ctx, **(msg.get("context") or {})},
                   "integrations": {**integ, **(msg.get("integrations") or {})}}
            size = _json_bytes(msg)
            if size > MAX_MESSAGE_BYTES:
                errors.append(FieldError(where or "body", f"message is {size} bytes once the batch's context and "
                                         f"integrations are merged into it; the limit is {MAX_MESSAGE_BYTES}",
                                         index, MAX_MESSAGE_BYTES))
                continue
        try:
            messages.append(_message_adapter.validate_python(msg))
            raw_messages.append(msg)
        except ValidationError as exc:
            for e in exc.errors():
                loc = _field(tuple(e["loc"]))
                limit: Any
                if e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
                    loc, text, limit = "type", e["msg"], "track|identify|group|page|screen|alias"
                elif "bytes in UTF-8" in e["msg"]:
                    text, limit = e["msg"], MAX_ID_BYTES
                else:
                    text, limit = e["msg"], (e.get("ctx") or {}).get("max_length")
                errors.append(FieldError(f"{where}.{loc}" if where else loc, text, index, limit))
    if errors:
        first = errors[0]
        head = f"message {first.index}: " if first.index is not None else ""
        code = "message_too_large" if first.limit == MAX_MESSAGE_BYTES else "invalid_request"
        raise ApiError(400, code, f"{head}{first.field}: {first.message}", errors)
    envelope = _json_bytes(ctx) + _json_bytes(integ) - 4 if (ctx or integ) else 0
    return ParsedRequest(write_key, messages, raw_messages, sent_at, kind == "batch", envelope)


_OBJECT_FIELDS = ("context", "integrations", "properties", "traits")


def _object_fields(msg: dict[str, Any], where: str, index: int | None) -> list[FieldError]:
    """Fields that must be JSON objects (checked before anything merges into them), and ``context.groupId``,
    which is an id like any other."""
    out = []
    for name in _OBJECT_FIELDS:
        v = msg.get(name)
        if v is not None and not isinstance(v, dict):
            out.append(FieldError(_path(where, name), f"must be an object, not {_json_type(v)}", index, "object"))
    ctx = msg.get("context")
    if _trait_call(msg) and isinstance(ctx, dict) and ctx.get("traits") is not None \
            and not isinstance(ctx["traits"], dict):
        out.append(FieldError(_path(where, "context.traits"), f"must be an object, not {_json_type(ctx['traits'])}",
                              index, "object"))
    gid = ctx.get("groupId") if isinstance(ctx, dict) else None
    if gid is not None and gid != "":
        field = _path(where, "context.groupId")
        if isinstance(gid, bool) or not isinstance(gid, (str, int, float)):
            out.append(FieldError(field, f"must be a string or a number, not {_json_type(gid)}", index,
                                  f"string of 1..{MAX_ID_BYTES} bytes"))
        else:
            try:
                _id_bytes(str(_coerce_id(gid)))
            except ValueError as exc:
                out.append(FieldError(field, str(exc), index, MAX_ID_BYTES))
    return out


def message_traits(msg: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A message's traits and the field they are read from.

    ``traits`` when the message has that member (an object, even empty); else, for identify, group and track
    (:data:`TRAIT_CALLS`), ``context.traits``: RudderStack's SDKs put identify traits there, and the Segment
    spec lets any call carry the user's traits there. The root wins when both are present (a RudderStack
    browser ``group`` carries the account's traits at the root and the *user's* under ``context``).
    """
    root = msg.get("traits")
    if isinstance(root, dict):
        return root, "traits"
    ctx = msg.get("context")
    if _trait_call(msg) and isinstance(ctx, dict) and isinstance(ctx.get("traits"), dict):
        return ctx["traits"], "context.traits"
    return {}, "traits"


def _trait_call(msg: Mapping[str, Any]) -> bool:
    kind = msg.get("type")
    return isinstance(kind, str) and kind in TRAIT_CALLS


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}.get(type(v), type(v).__name__)


def _derived_message_id(tenant_id: str, raw: dict[str, Any]) -> str:
    """A stable id for a message sent without one, so a retry of it is recognised."""
    content = {k: v for k, v in raw.items() if k not in ("sentAt", "writeKey")}
    digest = hashlib.sha256((tenant_id + json.dumps(content, sort_keys=True, default=str)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _trait_caps(event: Event, where: str, index: int | None) -> list[FieldError]:
    """What the user and account views keep of identify/group traits, said at ingest (a 4xx) rather than
    cut silently: at most :data:`~projections.registers.MAX_TRAITS` names of at most
    :data:`~projections.registers.MAX_TRAIT_KEY` characters, values of at most
    :data:`~projections.registers.MAX_TRAIT_VALUE` characters of JSON."""
    if len(event.traits) > MAX_TRAITS:
        return [FieldError(where, f"{len(event.traits)} traits in one call; the limit is {MAX_TRAITS}", index,
                           MAX_TRAITS)]
    for name, value in event.traits.items():
        if len(name) > MAX_TRAIT_KEY:
            return [FieldError(where, f"trait name of {len(name)} characters; the limit is {MAX_TRAIT_KEY}", index,
                               MAX_TRAIT_KEY)]
        text = value if isinstance(value, str) else canonical_json(thaw(value))
        if len(text) > MAX_TRAIT_VALUE:
            return [FieldError(_path(where, name), f"trait value of {len(text)} characters (as JSON); the limit is "
                               f"{MAX_TRAIT_VALUE}", index, MAX_TRAIT_VALUE)]
    return []


def normalise(tenant_id: str, msg: BaseModel, raw: dict[str, Any], received_at: datetime,
              batch_sent_at: datetime | None) -> dict[str, Any]:
    """One validated message -> the stored event (Segment field names, corrected ``timestamp``), in the current
    event format (``"v"``, :mod:`projections.formats`)."""
    data = msg.model_dump(mode="python", exclude_none=False)
    original = data.get("timestamp") or data.get("originalTimestamp")
    sent_at = data.get("sentAt") or batch_sent_at
    if original is not None and original.tzinfo is None:
        original = original.replace(tzinfo=UTC)
    if sent_at is not None and sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    if original is not None and sent_at is not None:
        # Segment's clock-skew correction: keep the client's relative offset, anchor on our clock.
        timestamp = received_at - (sent_at - original)
    elif original is not None:
        timestamp = original
    else:
        timestamp = received_at
    context = data.get("context") or {}
    traits, source = message_traits({**data, "traits": raw.get("traits"), "context": context})
    if source == "context.traits":
        # Stored once, as the event's traits (not twice: the stored message stays within its size limit).
        context = {k: v for k, v in context.items() if k != "traits"}
    group_id = data.get("groupId")
    if group_id is None and data["type"] in ("track", "page", "screen"):
        gid = _coerce_id(context.get("groupId"))
        group_id = gid if isinstance(gid, str) and gid else None
    event = {
        "v": EVENT_FORMAT,
        "messageId": data.get("messageId") or _derived_message_id(tenant_id, raw),
        "type": data["type"],
        "userId": data.get("userId"),
        "anonymousId": data.get("anonymousId"),
        "groupId": group_id,
        "event": data.get("event"),
        "name": data.get("name"),
        "properties": data.get("properties") or {},
        "traits": traits,
        "context": context,
        "previousId": data.get("previousId"),
        "timestamp": _iso(timestamp),
        "originalTimestamp": _iso(original) if original else None,
        "sentAt": _iso(sent_at) if sent_at else None,
        "receivedAt": _iso(received_at),
    }
    if data["type"] in ("page", "screen") and data.get("category"):
        event["properties"] = {"category": data["category"], **event["properties"]}
    return json.loads(json.dumps(event, default=str))  # JSON-safe (datetimes inside properties etc.)


@dataclass
class IngestResult:
    accepted: int
    stored: int
    duplicates: int
    chunks: int
    write_units: float
    table: str


class CatalogCaps:
    """Per-tenant caps on distinct event names and property keys, counted exactly in the control table.

    Each admitted name is an item (``TENANT#<t>`` / ``CATALOG#N#<name>``, property keys ``CATALOG#P#<key>``)
    and a counter item (``CATALOG#COUNT``) holds how many there are; new names are registered in one
    transaction with the counter (``count + new <= cap``), so concurrent requests never over- or
    under-count. A process remembers the names it has seen admitted, so a known name costs nothing.
    """

    def __init__(self, client: Any, control_table: str, max_event_names: int = MAX_EVENT_NAMES,
                 max_property_keys: int = MAX_PROPERTY_KEYS) -> None:
        self._client = client
        self._table = control_table
        self.limits = {"N": max_event_names, "P": max_property_keys}
        self._known: dict[tuple[str, str], set[str]] = {}

    def admit(self, tenant_id: str, names: dict[str, str], props: dict[str, str]) -> None:
        """Register the new names (``name -> field that sent it``) or raise a 400 naming the first over the cap."""
        for kind, wanted in (("N", names), ("P", props)):
            known = self._known.setdefault((tenant_id, kind), set())
            new = [n for n in wanted if n not in known]
            if new:
                self._register(tenant_id, kind, new, wanted, known)

    def _key(self, tenant_id: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": keys.tenant_pk(tenant_id)}, "sk": {"S": sk}}

    def _register(self, tenant_id: str, kind: str, new: list[str], fields: dict[str, str], known: set[str]) -> None:
        prefix = keys.catalog_cap_prefix(kind)
        found = batch_get(self._client, self._table, [self._key(tenant_id, prefix + n) for n in new],
                          projection="sk", consistent=True)
        known.update(f["sk"]["S"][len(prefix):] for f in found)
        missing = [n for n in new if n not in known]
        cap = self.limits[kind]
        attr = "names" if kind == "N" else "property_keys"
        while missing:
            part = missing[:99]  # TransactWriteItems takes 100 items: the counter and 99 names
            ops: list[dict[str, Any]] = [{"Update": {
                "TableName": self._table, "Key": self._key(tenant_id, keys.CATALOG_COUNT_SK),
                "UpdateExpression": "ADD #c :n", "ConditionExpression": "attribute_not_exists(#c) OR #c <= :room",
                "ExpressionAttributeNames": {"#c": attr},
                "ExpressionAttributeValues": {":n": {"N": str(len(part))}, ":room": {"N": str(cap - len(part))}}}}]
            ops += [{"Put": {"TableName": self._table, "Item": {**self._key(tenant_id, prefix + n), "name": {"S": n}},
                             "ConditionExpression": "attribute_not_exists(pk)"}} for n in part]
            try:
                self._client.transact_write_items(TransactItems=ops)
            except self._client.exceptions.TransactionCanceledException as exc:
                reasons = exc.response.get("CancellationReasons", [])
                codes = [r.get("Code") for r in reasons]
                if not any(c == "ConditionalCheckFailed" for c in codes):
                    raise
                raced = {part[i - 1] for i, c in enumerate(codes) if i and c == "ConditionalCheckFailed"}
                if raced:  # registered meanwhile by another request: known, not new
                    known.update(raced)
                    missing = [n for n in missing if n not in raced]
                    continue
                what = "event names" if kind == "N" else "property keys"
                first = part[0]
                raise ApiError(400, "too_many_event_names" if kind == "N" else "too_many_property_keys",
                               f"{fields[first]}: {first!r} would be a new distinct {what[:-1]}; this tenant already "
                               f"has the maximum of {cap} distinct {what}",
                               [FieldError(fields[first], f"too many distinct {what}", limit=cap)]) from None
            known.update(part)
            missing = missing[len(part):]


RETRY_CLOCK_MARGIN = timedelta(minutes=10)
"""How far a corrected client timestamp may sit after the moment its request was first received (the
clock-skew correction is exact up to the request's time in flight)."""


def _may_be_a_retry_from_yesterday(events: list[dict[str, Any]], received_at: datetime) -> bool:
    """Could an earlier attempt of this request have been stored in yesterday's table?

    A retry re-sends the same events with the same client timestamps; their corrected times are when the
    events happened, which is before the first attempt was received. If every event carries a client
    timestamp corrected to at least :data:`RETRY_CLOCK_MARGIN` after today's UTC midnight, no attempt of
    it was received yesterday, and the read of yesterday's table is skipped. An event without a client
    timestamp (its time is its arrival) keeps the read. Were a drifting clock without ``sentAt`` to fool
    this, the chunk would be stored twice and still counted once (the projector's claims).
    """
    midnight = received_at.replace(hour=0, minute=0, second=0, microsecond=0)
    floor = _iso(midnight + RETRY_CLOCK_MARGIN)
    return any(e["originalTimestamp"] is None or e["timestamp"] < floor for e in events)


class Ingestor:
    """Appends validated requests to the day table of their arrival (UTC)."""

    def __init__(self, client: Any, prefix: str, clock: Callable[[], datetime] | None = None,
                 ensure_tables: Callable[[Any, str, datetime], None] | None = None,
                 max_future: timedelta = MAX_FUTURE, caps: CatalogCaps | None = None) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ensure_tables = ensure_tables
        self._max_future = max_future
        self.caps = caps or CatalogCaps(client, keys.control_table_name(prefix))

    def ingest(self, tenant_id: str, parsed: ParsedRequest) -> IngestResult:
        received_at = self._clock().astimezone(UTC)
        seen: set[str] = set()
        events = []
        latest = _iso(received_at + self._max_future)
        earliest = _iso(MIN_TIMESTAMP)
        errors: list[FieldError] = []
        names: dict[str, str] = {}
        props: dict[str, str] = {}
        total = 0
        for i, (msg, raw) in enumerate(zip(parsed.messages, parsed.raw_messages, strict=True)):
            index = i if parsed.is_batch else None
            where = f"batch[{i}]" if parsed.is_batch else ""
            ts_field = _path(where, "timestamp")
            try:
                ev = normalise(tenant_id, msg, raw, received_at, parsed.batch_sent_at)
            except OverflowError:
                errors.append(FieldError(ts_field, "timestamp, sentAt and originalTimestamp are too far apart to "
                                         "correct clock skew", index, f"{earliest} .. receivedAt + 24h"))
                continue
            if ev["timestamp"] > latest:
                # One far-future event would otherwise push an account's retention window past its history.
                errors.append(FieldError(ts_field, f"corrected timestamp {ev['timestamp']} is more than 24 hours "
                                         "after receivedAt", index, "receivedAt + 24h"))
            elif ev["timestamp"] < earliest:
                errors.append(FieldError(ts_field, f"corrected timestamp {ev['timestamp']} is before {earliest}",
                                         index, earliest))
            size = _json_bytes(ev)
            total += size
            if size > MAX_MESSAGE_BYTES + _NORMALISED_OVERHEAD:
                errors.append(FieldError(where or "body", f"message is {size} bytes as stored; the limit is "
                                         f"{MAX_MESSAGE_BYTES}", index, MAX_MESSAGE_BYTES))
            try:
                folded = Event.from_wire(ev)  # exactly what the projector will do with it
            except ValueError as exc:
                errors.append(FieldError(where or "body", f"cannot be stored: {exc}", index))
                continue
            traits_field = _path(where, message_traits(raw)[1])
            if folded.traits and _json_bytes(ev["traits"]) > MAX_TRAITS_BYTES:
                errors.append(FieldError(traits_field, f"traits are {_json_bytes(ev['traits'])} bytes; the "
                                         f"limit is {MAX_TRAITS_BYTES}", index, MAX_TRAITS_BYTES))
            elif folded.type in TRAIT_CALLS:
                errors += _trait_caps(folded, traits_field, index)
            name = folded.catalog_name
            if name is not None:
                names.setdefault(name, _path(where, "event" if folded.type == "track" else "name"))
                for k in folded.properties:
                    if len(k.encode("utf-8")) > MAX_ID_BYTES:
                        errors.append(FieldError(_path(where, "properties"), f"property key of {len(k.encode())} "
                                                 f"bytes; the limit is {MAX_ID_BYTES} bytes", index, MAX_ID_BYTES))
                        break
                    props.setdefault(k, _path(_path(where, "properties"), k))
            if ev["messageId"] in seen:
                continue  # the same message twice in one request is one message
            seen.add(ev["messageId"])
            events.append(ev)
        if total > MAX_STORED_BYTES:
            ctx = bool(parsed.raw_messages and parsed.is_batch and parsed.envelope_bytes)
            field = "context" if ctx else "body"
            errors.insert(0, FieldError(field, f"the request would be stored as {total} bytes of events"
                                        + (" (the batch's context is copied into every message)" if ctx else "")
                                        + f"; the limit is {MAX_STORED_BYTES}", None, MAX_STORED_BYTES))
        if errors:
            code = "request_too_large" if errors[0].limit == MAX_STORED_BYTES else "invalid_request"
            raise ApiError(400, code, f"{errors[0].field}: {errors[0].message}", errors)
        self.caps.admit(tenant_id, names, props)
        items = pack_chunks(tenant_id, events, received_at)
        table = keys.events_table_name(self._prefix, received_at)
        already = self._in_previous_day(items, received_at) if _may_be_a_retry_from_yesterday(events, received_at) \
            else set()
        todo = [it for it in items if it["pk"]["S"] not in already]
        try:
            units, stored = self._append(table, todo)
        except self._client.exceptions.ResourceNotFoundException:
            if self._ensure_tables is None:
                raise
            self._ensure_tables(self._client, self._prefix, received_at)
            units, stored = self._append(table, todo)
        return IngestResult(len(events), stored, len(events) - stored, len(items), units, table)

    def _in_previous_day(self, items: list[dict[str, Any]], received_at: datetime) -> set[str]:
        """Chunk keys already stored in yesterday's table (a retry across UTC midnight)."""
        prev = keys.events_table_name(self._prefix, received_at - timedelta(days=1))
        try:
            found = batch_get(self._client, prev, [{"pk": it["pk"]} for it in items], projection="pk", consistent=True)
        except self._client.exceptions.ResourceNotFoundException:
            return set()
        return {i["pk"]["S"] for i in found}

    def _append(self, table: str, items: list[dict[str, Any]]) -> tuple[float, int]:
        """Write every chunk that is not stored yet; returns (write units, events newly stored).

        A chunk key is a digest of its message ids, so an existing key holds exactly these messages.
        When some chunks already exist (a retry, or an earlier request whose ids are exactly one of
        this request's chunks) the others are still written: the request ends up stored whole.
        """
        cond = "attribute_not_exists(pk)"
        pending = list(items)
        units, stored = 0.0, 0
        while pending:
            if len(pending) == 1:
                try:
                    resp = self._client.put_item(TableName=table, Item=pending[0], ConditionExpression=cond,
                                                 ReturnConsumedCapacity="TOTAL")
                except self._client.exceptions.ConditionalCheckFailedException:
                    break
                units += float(resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
                stored += int(pending[0]["n"]["N"])
                break
            # Several chunks (a large, incompressible request): all or nothing.
            try:
                resp = self._client.transact_write_items(
                    TransactItems=[{"Put": {"TableName": table, "Item": it, "ConditionExpression": cond}}
                                   for it in pending],
                    ReturnConsumedCapacity="TOTAL")
            except self._client.exceptions.TransactionCanceledException as exc:
                codes = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                done = {i for i, c in enumerate(codes) if c == "ConditionalCheckFailed"}
                if not done:
                    raise
                pending = [it for i, it in enumerate(pending) if i not in done]
                continue
            units += float(sum(c.get("CapacityUnits", 0.0) for c in resp.get("ConsumedCapacity", [])))
            stored += sum(int(it["n"]["N"]) for it in pending)
            break
        return units, stored
