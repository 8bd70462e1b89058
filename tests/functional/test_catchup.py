"""A building version's catch-up (``streams.catchup``) on DynamoDB Local: the positions the projector records while
the version is ``replaying``, folded once, in order, by key (no day-table scan); a catch-up killed midway and run
again counts nothing twice; the projector writes a ``current`` version and only records for a ``replaying`` one."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib import db, keys, tables
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.registry import ProjectionRegistry
from chalicelib.versions import forget, live_versions
from chalicelib.views import ViewStore
from projections.account import DayActivity
from streams import catchup, handler
from tests.helpers.events import scan_chunks

pytestmark = pytest.mark.timeout(300)

VERSION = 3


def _records(prefix: str, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stream records as the mapping hands them to the projector (INSERT, new image, sequence numbers)."""
    table = keys.events_table_name(prefix, tables.utc_today())
    arn = f"arn:aws:dynamodb:ddblocal:000000000000:table/{table}/stream/2026-12-07T00:00:00.000"
    return [{"eventID": str(i), "eventName": "INSERT", "eventSource": "aws:dynamodb", "eventSourceARN": arn,
             "dynamodb": {"Keys": {"pk": c["pk"]}, "NewImage": c, "SequenceNumber": f"{1000 + i:021d}",
                          "StreamViewType": "NEW_IMAGE"}} for i, c in enumerate(chunks)]


def _counts(prefix: str, tenant: str, accounts: list[str]) -> Counter[str]:
    store = ViewStore(db.get_client(), keys.view_table_name(prefix, VERSION))
    out: Counter[str] = Counter()
    for a in accounts:
        blobs, _ = store.query_prefix(keys.account_pk(tenant, a), keys.DAY_PREFIX)
        out[a] = sum(DayActivity.from_dict(b.data).count() for b in blobs)
    return out


class Killed(Exception):
    pass


def test_catch_up_folds_recorded_positions_once_and_resumes_after_a_kill(
        tenant: dict[str, str], prefix: str, ddb: Any) -> None:
    tid = tenant["tenant_id"]
    accounts = [f"acct{i}" for i in range(6)]
    ingestor = Ingestor(ddb, prefix)
    for i, a in enumerate(accounts):
        batch = [{"type": "group", "messageId": f"g{i}", "userId": f"u{i}", "groupId": a}]
        batch += [{"type": "track", "messageId": f"t{i}-{k}", "userId": f"u{i}", "event": "Export"}
                  for k in range(i + 1)]
        ingestor.ingest(tid, parse_request({"batch": batch}, "batch"))
    records = _records(prefix, scan_chunks(ddb, prefix))
    assert len(records) == len(accounts)
    tables.ensure_view_table(ddb, prefix, VERSION)
    registry = ProjectionRegistry(ddb, prefix)
    registry.register_building(VERSION, "v3:test", phase="replaying")
    forget()
    assert live_versions(ddb, keys.control_table_name(prefix)) == {2: "serving", VERSION: "replaying"}

    # The projector, while version 3 replays: version 2 written, version 3's positions recorded (one item a batch;
    # the retried second batch records again).
    for part in (records[:2], records[2:4], records[2:4], records[4:]):
        handler.handle_batch(part)
    assert _counts(prefix, tid, accounts) == Counter()  # nothing written to a replaying version
    recorded = ddb.query(TableName=keys.view_table_name(prefix, VERSION), KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": {"S": catchup.CATCHUP_PK}}, ConsistentRead=True)["Items"]
    assert len(recorded) == 4

    # A catch-up killed after folding its first recorded batch, then run again.
    writer = handler.new_writer(VERSION)
    real, calls = writer.record, []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args, **kwargs)

    writer.record = dying  # type: ignore[method-assign]
    with pytest.raises(Killed):
        catchup.catch_up(ddb, prefix, VERSION, writer, wait=0.1)
    assert registry.phase(VERSION)[0] == "replaying"
    writer.record = real  # type: ignore[method-assign]
    done = catchup.catch_up(ddb, prefix, VERSION, writer, wait=0.1)
    assert done.batches == 3 and done.chunks == 6  # the first (2 chunks) was applied and deleted before the kill
    assert done.positions and registry.phase(VERSION)[0] == "current"
    expected = Counter({a: i + 1 for i, a in enumerate(accounts)})
    assert _counts(prefix, tid, accounts) == expected

    # Current: the projector writes version 3 itself now; a re-delivered batch counts nothing twice.
    forget()
    assert live_versions(ddb, keys.control_table_name(prefix))[VERSION] == "current"
    handler.handle_batch(records[4:])
    handler.handle_batch(records)
    assert _counts(prefix, tid, accounts) == expected
    assert catchup.catch_up(ddb, prefix, VERSION, writer, wait=0.1).batches == 0  # nothing recorded since
