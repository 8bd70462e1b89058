"""Whatever a client sends, validation answers with a 4xx ApiError or accepts it — never a crash."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.chunks import pack_chunks, unpack_chunk
from chalicelib.errors import ApiError
from chalicelib.ingest import decode_body, normalise, parse_request
from projections.formats import CHUNK_FORMAT, EVENT_FORMAT

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
FIELDS = ["type", "userId", "anonymousId", "event", "groupId", "previousId", "name", "messageId", "timestamp",
          "sentAt", "properties", "traits", "context"]
message_like = st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(
    ["track", "identify", "group", "page", "screen", "alias", "2026-11-01T10:00:00Z"]), max_size=8)
KINDS = ["batch", "track", "identify", "group", "page", "screen", "alias"]


def _check(body: Any, kind: str) -> None:
    try:
        parsed = parse_request(body, kind)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        out = exc.body()
        assert out["success"] is False and out["code"] and out["message"]
        json.dumps(out)  # the error itself is always serialisable
        return
    now = datetime(2026, 11, 22, tzinfo=UTC)
    events = [normalise("t1", m, r, now, parsed.batch_sent_at) for m, r in zip(parsed.messages, parsed.raw_messages,
                                                                                 strict=True)]
    assert all(e["v"] == EVENT_FORMAT for e in events)  # normalised into the current event format
    for item in pack_chunks("t1", events, now):
        assert item["fmt"] == {"N": str(CHUNK_FORMAT)}
        assert unpack_chunk(item)[1] == events  # what is accepted can be stored and read back as it was


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), message_like)
def test_single_messages_never_crash(kind: str, msg: dict[str, Any]) -> None:
    _check(msg, kind)


@settings(max_examples=200, deadline=None)
@given(st.lists(message_like | json_values, max_size=5), json_values)
def test_batches_never_crash(batch: list[Any], sent_at: Any) -> None:
    _check({"batch": batch, "sentAt": sent_at}, "batch")


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_body_never_crashes(body: Any) -> None:
    for kind in ("batch", "track"):
        _check(body, kind)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([None, "gzip", "identity", "br"]))
def test_any_bytes_never_crash(raw: bytes, encoding: str | None) -> None:
    for data in (raw, gzip.compress(raw)):
        try:
            decode_body(data, encoding)
        except ApiError as exc:
            assert exc.status == 400
