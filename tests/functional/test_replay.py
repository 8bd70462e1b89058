"""Replay: rebuild a view version from the day tables, compare (live == replay), promote."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from chalicelib import db, keys, services
from chalicelib.versions import active_view_version
from streams import handler as stream_handler
from streams import replay
from tests.functional.test_projector import start_projector_mapping
from tests.helpers.events import stored_events

pytestmark = pytest.mark.timeout(120)


def _send(server: str, key: str, n_batches: int = 4) -> int:
    now = datetime.now(UTC)
    sent = 0
    for b in range(n_batches):
        batch = [{"type": "group", "messageId": f"g{b}", "userId": f"u{b}", "groupId": f"acct{b % 3}",
                  "traits": {"name": f"Account {b % 3}", "plan": "pro", "seats": 5}, "timestamp":
                  (now - timedelta(days=5)).isoformat()}]
        batch += [{"type": "track", "messageId": f"t{b}-{i}", "userId": f"u{(b + i) % 4}", "event": f"E{i % 5}",
                   "context": {"groupId": f"acct{(b + i) % 3}"}, "properties": {"i": i},
                   "timestamp": (now - timedelta(days=i % 9, minutes=b)).isoformat()} for i in range(40)]
        r = requests.post(f"{server}/v1/batch", json={"batch": batch}, auth=(key, ""), timeout=30)
        assert r.status_code == 200, r.text
        sent += len(batch)
    return sent


def test_live_view_equals_replay_and_promotion_switches_the_api(server: str, tenant: dict[str, str],
                                                                 prefix: str, ddb: Any) -> None:
    stream_handler.get_writer.cache_clear()
    sent = _send(server, tenant["write_key"])
    assert len(stored_events(ddb, prefix)) == sent
    store, mapping, runtime = start_projector_mapping(prefix)
    with runtime:
        # Live projection through the local event source mapping until every event is folded.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = services.query().account_ids(tenant["tenant_id"])
            if len(ids) == 3 and all(c.records_behind == 0 for c in store.checkpoints(mapping.uuid)) \
                    and store.checkpoints(mapping.uuid):
                time.sleep(1.0)
                break
            time.sleep(0.2)
    client = db.get_client()
    stats = replay.rebuild(client, prefix, 2)
    assert stats.events == sent and stats.poison == 0
    result = replay.compare(client, prefix, 1, 2)
    assert result.items_a > 0 and result.equal, result.to_dict()

    # A damaged live view is noticed.
    victim = next(i for i in client.scan(TableName=keys.view_table_name(prefix, 1))["Items"]
                  if "#A#" in i["pk"]["S"] and i["sk"]["S"].startswith(keys.DAY_PREFIX))  # an account day
    client.delete_item(TableName=keys.view_table_name(prefix, 1), Key={"pk": victim["pk"], "sk": victim["sk"]})
    damaged = replay.compare(client, prefix, 1, 2)
    assert not damaged.equal and damaged.only_b == [f"{victim['pk']['S']}|{victim['sk']['S']}"]

    # Promotion: the API now reads version 2 (which still has the item v1 lost).
    assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 1
    caught_up = replay.promote(client, prefix, 2)
    assert caught_up.events == sent  # catch-up re-folds the newest day tables; nothing changes
    assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 2
    assert services.query().table == keys.view_table_name(prefix, 2)
    acct = victim["pk"]["S"].split("#A#", 1)[1]
    day = victim["sk"]["S"][len(keys.DAY_PREFIX):]
    usage = requests.get(f"{server}/api/accounts/{acct}/usage", params={"days": 30},
                         headers={"Authorization": f"Bearer {tenant['api_token']}"}, timeout=30).json()
    assert day in usage["days"] and usage["totals"][usage["days"].index(day)] > 0
    assert replay.compare(client, prefix, 1, 2).only_b  # v1 still damaged; v2 is what users see
