"""Stored formats on DynamoDB Local: a day table holding a chunk written before versioning (format 1) is
replayed and projected by today's code; a chunk or an event of a format newer than the code is poison — the
stream handler fails its record (the mapping retries, then dead-letters it) and a replay skips and counts it —
while the rest of the batch lands."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from chalicelib import db, keys
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from projections.account import DayActivity
from projections.formats import CHUNK_FORMAT, EVENT_FORMAT
from projections.usage import attribute
from streams import handler, replay
from streams.decode import to_lambda_record
from tests.helpers.fold import fold_items, writer_for
from tests.helpers.streams import day_table
from tests.unit.test_formats import EXPECTED, format1_item, stored_body

pytestmark = pytest.mark.timeout(120)

FIXTURE_TENANT = "tenant-fixture"


def scan(client: Any, table: str) -> dict[str, dict[str, Any]]:
    return {i["pk"]["S"]: i for i in db.items(client, "scan", TableName=table, ConsistentRead=True)}


def records_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream records of the items in Lambda's shape, as the mapping delivers them (sequence numbers 1, 2, ...)."""
    return [dict(to_lambda_record({
        "eventID": f"e{i}", "eventName": "INSERT",
        "dynamodb": {"ApproximateCreationDateTime": datetime.now(UTC), "Keys": {"pk": item["pk"]}, "NewImage": item,
                     "SequenceNumber": f"{i + 1:021d}", "SizeBytes": 100, "StreamViewType": "NEW_IMAGE"}},
        "arn:aws:dynamodb:local:000000000000:table/x/stream/1")) for i, item in enumerate(items)]


def account_days(prefix: str, tenant_id: str, account_id: str) -> dict[str, dict[str, Any]]:
    store = ViewStore(db.get_client(), keys.view_table_name(prefix, VIEW_VERSION))
    blobs, _ = store.query_prefix(keys.account_pk(tenant_id, account_id), keys.DAY_PREFIX)
    got = {b.sk[len(keys.DAY_PREFIX):]: DayActivity.from_dict(b.data) for b in blobs}
    return {d: {"counts": dict(a.counts), "users": len(a.users)} for d, a in got.items()}


def test_a_format_1_day_table_is_replayed_and_projected_by_todays_code(prefix: str, ddb: Any) -> None:
    table = day_table(prefix)
    ddb.put_item(TableName=table, Item=format1_item())
    (stored,) = scan(ddb, table).values()
    assert stored == format1_item()  # the fixture is what a scan of a format-1 day table returns

    stats = replay.ReplayStats(version=VIEW_VERSION)
    ((tenant, _, events),) = list(replay.iter_chunks(ddb, prefix, stats=stats))
    assert (tenant, events) == (FIXTURE_TENANT, EXPECTED)
    assert (stats.chunks, stats.events, stats.poison) == (1, len(EXPECTED), 0)

    response, _, decoded = fold_items(prefix, [stored])
    assert response == {"batchItemFailures": []} and decoded == len(EXPECTED)
    # What the view counts for the account is Segment attribution of the old events: the track naming it, the
    # page and screen of its member, the anonymous track aliased into that member, the track with a derived id.
    assert account_days(prefix, FIXTURE_TENANT, "acct-1") == attribute(EXPECTED)["acct-1"] == {"2026-12-06": {
        "counts": {"Report Created": 1, "page:Dashboard": 1, "screen:Settings": 1, "Pricing Viewed": 1,
                   "Export Finished": 1}, "users": 1}}


def test_newer_formats_are_poison_for_the_handler_and_for_replay(prefix: str, ddb: Any,
                                                                 tenant: dict[str, str]) -> None:
    tid = tenant["tenant_id"]
    table = day_table(prefix)
    Ingestor(ddb, prefix).ingest(tid, parse_request({"batch": [
        {"type": "group", "messageId": "g-1", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}},
        {"type": "track", "messageId": "t-1", "userId": "u1", "event": "Report Created"}]}, "batch"))
    (good,) = scan(ddb, table).values()
    assert good["fmt"] == {"N": str(CHUNK_FORMAT)} and {e["v"] for e in stored_body(good)} == {EVENT_FORMAT}

    # A chunk a newer release wrote (format 99) and a format-2 chunk holding one event of format 99.
    newer_chunk = {**format1_item(), "pk": {"S": keys.chunk_pk(tid, "format-99")}, "tenant": {"S": tid},
                   "fmt": {"N": "99"}}
    newer_event = {**good, "pk": {"S": keys.chunk_pk(tid, "event-format-99")}, "n": {"N": "2"},
                   "body": {"B": zlib.compress(json.dumps([
                       {**stored_body(good)[1], "messageId": "t-2"},
                       {**stored_body(good)[1], "messageId": "t-99", "v": 99}]).encode())}}
    ddb.put_item(TableName=table, Item=newer_chunk)
    ddb.put_item(TableName=table, Item=newer_event)

    # The projector: both poison records fail alone (reported for the mapping to retry and dead-letter), the good
    # chunk lands, and so does the good event beside the one of format 99.
    items = [good, newer_chunk, newer_event]
    response, _ = handler.handle_batch(records_of(items), writer=writer_for(prefix))
    assert response == {"batchItemFailures": [{"itemIdentifier": f"{2:021d}"}, {"itemIdentifier": f"{3:021d}"}]}
    assert account_days(prefix, tid, "acme")[datetime.now(UTC).date().isoformat()]["counts"] == {
        "Report Created": 2}
    for record, says in zip(records_of(items)[1:], ["chunk format 99 is newer", "event format 99 is newer"],
                            strict=True):
        with pytest.raises(ValueError, match=says):
            handler.decode_record(DynamoDBRecord(record))

    # A replay skips both chunks and counts them as poison, and folds the rest.
    stats = replay.ReplayStats(version=VIEW_VERSION)
    chunks = list(replay.iter_chunks(ddb, prefix, stats=stats))
    assert [(t, [e.message_id for e in evs]) for t, _, evs in chunks] == [(tid, ["g-1", "t-1"])]
    assert (stats.chunks, stats.poison) == (1, 2)
    rebuilt = replay.rebuild(ddb, prefix, VIEW_VERSION)
    assert (rebuilt.chunks, rebuilt.events, rebuilt.poison) == (1, 2, 2)
