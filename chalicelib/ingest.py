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
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
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

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_BATCH_MESSAGES",
    "Ingestor",
    "IngestResult",
    "decode_body",
    "parse_request",
    "normalise",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
MAX_ID_LENGTH = 256
# Events may be back-dated freely, but not dated far into the future (after clock-skew correction).
MAX_FUTURE = timedelta(hours=24)

MessageType = Literal["track", "identify", "group", "page", "screen", "alias"]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


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
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)

    _needs_identity = True

    @field_validator("messageId", "userId", "anonymousId", mode="before")
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
    event: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    properties: dict[str, Any] = Field(default_factory=dict)


class Identify(_Base):
    type: Literal["identify"]
    traits: dict[str, Any] = Field(default_factory=dict)


class Group(_Base):
    type: Literal["group"]
    groupId: Id
    traits: dict[str, Any] = Field(default_factory=dict)

    @field_validator("groupId", mode="before")
    @classmethod
    def _gid(cls, v: Any) -> Any:
        return _coerce_id(v)


class Page(_Base):
    type: Literal["page"]
    name: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
    category: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class Screen(_Base):
    type: Literal["screen"]
    name: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
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
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}", [FieldError("body", str(exc))]) from None


@dataclass(frozen=True)
class ParsedRequest:
    write_key: str | None
    messages: list[BaseModel]
    raw_messages: list[dict[str, Any]]
    batch_sent_at: datetime | None
    is_batch: bool = True


def parse_request(body: Any, kind: str) -> ParsedRequest:
    """Validate a request body for ``/v1/<kind>`` and return its messages.

    Raises:
        ApiError: 400 naming the message index, the field and the limit of every problem.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object",
                       [FieldError("body", "expected an object")])
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
            errors.append(FieldError("type", f"type must be {kind!r} on /v1/{kind}", index, kind))
            continue
        if ctx or integ:
            msg = {**msg, "context": {**ctx, **(msg.get("context") or {})},
                   "integrations": {**integ, **(msg.get("integrations") or {})}}
        try:
            messages.append(_message_adapter.validate_python(msg))
            raw_messages.append(msg)
        except ValidationError as exc:
            for e in exc.errors():
                loc = _field(tuple(e["loc"]))
                limit: Any
                if e["type"] == "union_tag_invalid" or e["type"] == "union_tag_not_found":
                    loc, text, limit = "type", e["msg"], "track|identify|group|page|screen|alias"
                else:
                    text, limit = e["msg"], (e.get("ctx") or {}).get("max_length")
                errors.append(FieldError(f"{where}.{loc}" if where else loc, text, index, limit))
    if errors:
        first = errors[0]
        head = f"message {first.index}: " if first.index is not None else ""
        code = "message_too_large" if first.limit == MAX_MESSAGE_BYTES else "invalid_request"
        raise ApiError(400, code, f"{head}{first.field}: {first.message}", errors)
    return ParsedRequest(write_key, messages, raw_messages, sent_at, kind == "batch")


def _derived_message_id(tenant_id: str, raw: dict[str, Any]) -> str:
    """A stable id for a message sent without one, so a retry of it is recognised."""
    content = {k: v for k, v in raw.items() if k not in ("sentAt", "writeKey")}
    digest = hashlib.sha256((tenant_id + json.dumps(content, sort_keys=True, default=str)).encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def normalise(tenant_id: str, msg: BaseModel, raw: dict[str, Any], received_at: datetime,
              batch_sent_at: datetime | None) -> dict[str, Any]:
    """One validated message -> the stored event (Segment field names, corrected ``timestamp``)."""
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
    group_id = data.get("groupId")
    if group_id is None and data["type"] in ("track", "page", "screen"):
        gid = context.get("groupId")
        if gid is None and isinstance(context.get("traits"), dict):
            gid = None
        group_id = str(gid) if isinstance(gid, (str, int)) and str(gid) else None
    event = {
        "messageId": data.get("messageId") or _derived_message_id(tenant_id, raw),
        "type": data["type"],
        "userId": data.get("userId"),
        "anonymousId": data.get("anonymousId"),
        "groupId": group_id,
        "event": data.get("event"),
        "name": data.get("name"),
        "properties": data.get("properties") or {},
        "traits": data.get("traits") or {},
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


class Ingestor:
    """Appends validated requests to the day table of their arrival (UTC)."""

    def __init__(self, client: Any, prefix: str, clock: Callable[[], datetime] | None = None,
                 ensure_tables: Callable[[Any, str, datetime], None] | None = None,
                 max_future: timedelta = MAX_FUTURE) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock or (lambda: datetime.now(UTC))
        self._ensure_tables = ensure_tables
        self._max_future = max_future

    def ingest(self, tenant_id: str, parsed: ParsedRequest) -> IngestResult:
        received_at = self._clock().astimezone(UTC)
        seen: set[str] = set()
        events = []
        latest = _iso(received_at + self._max_future)
        errors: list[FieldError] = []
        for i, (msg, raw) in enumerate(zip(parsed.messages, parsed.raw_messages, strict=True)):
            ev = normalise(tenant_id, msg, raw, received_at, parsed.batch_sent_at)
            if ev["timestamp"] > latest:
                # One far-future event would otherwise push an account's retention window past its history.
                where = f"batch[{i}].timestamp" if parsed.is_batch else "timestamp"
                errors.append(FieldError(where, f"corrected timestamp {ev['timestamp']} is more than 24 hours "
                                         "after receivedAt", i if parsed.is_batch else None, "receivedAt + 24h"))
            if ev["messageId"] in seen:
                continue  # the same message twice in one request is one message
            seen.add(ev["messageId"])
            events.append(ev)
        if errors:
            raise ApiError(400, "invalid_request", f"{errors[0].field}: {errors[0].message}", errors)
        items = pack_chunks(tenant_id, events, received_at)
        table = keys.events_table_name(self._prefix, received_at)
        already = self._in_previous_day(items, received_at)
        todo = [it for it in items if it["pk"]["S"] not in already]
        units = 0.0
        stored = sum(int(it["n"]["N"]) for it in todo)
        try:
            units += self._append(table, todo)
        except self._client.exceptions.ResourceNotFoundException:
            if self._ensure_tables is None:
                raise
            self._ensure_tables(self._client, self._prefix, received_at)
            units += self._append(table, todo)
        except _AlreadyStored as dup:
            units += dup.units
            stored = 0
        return IngestResult(len(events), stored, len(events) - stored, len(items), units, table)

    def _in_previous_day(self, items: list[dict[str, Any]], received_at: datetime) -> set[str]:
        """Chunk keys already stored in yesterday's table (a retry across UTC midnight)."""
        prev = keys.events_table_name(self._prefix, received_at - timedelta(days=1))
        try:
            found = batch_get(self._client, prev, [{"pk": it["pk"]} for it in items], projection="pk", consistent=True)
        except self._client.exceptions.ResourceNotFoundException:
            return set()
        return {i["pk"]["S"] for i in found}

    def _append(self, table: str, items: list[dict[str, Any]]) -> float:
        if not items:
            return 0.0
        cond = "attribute_not_exists(pk)"
        if len(items) == 1:
            try:
                resp = self._client.put_item(TableName=table, Item=items[0], ConditionExpression=cond,
                                             ReturnConsumedCapacity="TOTAL")
            except self._client.exceptions.ConditionalCheckFailedException:
                raise _AlreadyStored(0.0) from None
            return float(resp.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
        # Several chunks (a large, incompressible request): all or nothing.
        try:
            resp = self._client.transact_write_items(
                TransactItems=[{"Put": {"TableName": table, "Item": it, "ConditionExpression": cond}} for it in items],
                ReturnConsumedCapacity="TOTAL")
        except self._client.exceptions.TransactionCanceledException as exc:
            if any(
                r.get("Code") == "ConditionalCheckFailed"
                for r in exc.response.get("CancellationReasons", [])
            ):
                raise _AlreadyStored(0.0) from None
            raise
        return float(sum(c.get("CapacityUnits", 0.0) for c in resp.get("ConsumedCapacity", [])))


class _AlreadyStored(Exception):
    def __init__(self, units: float) -> None:
        self.units = units
