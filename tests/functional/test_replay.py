"""Replay: upgrade a stack whose active view is version 1 to version 2 while ingest continues —
rebuild, compare (live == replay), promote — and afterwards every acknowledged event counts once."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from chalicelib import db, keys, services, tables
from chalicelib.db import items
from chalicelib.ingest import Ingestor, parse_request
from chalicelib.versions import active_view_version
from chalicelib.views import Blob, ViewStore
from projections.account import DayActivity
from projections.events import Event
from projections.usage import attribute
from streams import handler as stream_handler
from streams import replay
from streams.writer import FOLD_CODE
from tests.functional.test_projector import start_projector_mapping
from tests.helpers.events import stored_events
from tests.helpers.streams import kill_replay_midway, wait_until
from tooling import spread
from tooling.cli import main

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
    client = db.get_client()
    # The stack holds a version 1 view: it stays active until promotion (never promoted = v1 if present).
    tables.ensure_view_table(client, prefix, 1)
    assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 1
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
    # Built as an operator builds it: rebuilt, indexed, caught up, then kept current by the projector.
    built = replay.build(client, prefix, 2, stream_handler.new_writer(2), delay=0)
    assert built["rebuild"]["events"] == sent and built["rebuild"]["poison"] == 0
    result = replay.compare(client, prefix, 1, 2)
    assert result.items_a > 0 and result.equal, result.to_dict()

    # A damaged live view is noticed.
    victim = next(i for i in client.scan(TableName=keys.view_table_name(prefix, 1))["Items"]
                  if "#A#" in i["pk"]["S"] and i["sk"]["S"].startswith(keys.DAY_PREFIX))  # an account day
    client.delete_item(TableName=keys.view_table_name(prefix, 1), Key={"pk": victim["pk"], "sk": victim["sk"]})
    damaged = replay.compare(client, prefix, 1, 2)
    assert not damaged.equal and damaged.only_b == [f"{victim['pk']['S']}|{victim['sk']['S']}"]

    # Ingest continues during the upgrade: the running projector still writes the active version 1, and version 2
    # beside it (current: each with its own fold code).
    late = [{"type": "group", "messageId": "late-g", "userId": "late-u", "groupId": "acct0"}] + \
        [{"type": "track", "messageId": f"late-{i}", "userId": "late-u", "event": "Late"} for i in range(5)]
    r = requests.post(f"{server}/v1/batch", json={"batch": late}, auth=(tenant["write_key"], ""), timeout=30)
    assert r.status_code == 200, r.text
    v1 = ViewStore(client, keys.view_table_name(prefix, 1))

    def late_in_v1() -> bool:
        blobs, _ = v1.query_prefix(keys.account_pk(tenant["tenant_id"], "acct0"), keys.DAY_PREFIX)
        return sum(DayActivity.from_dict(b.data).count("Late") for b in blobs) == 5

    with runtime:
        wait_until(late_in_v1, timeout=60, message="the late batch folded into the active version 1")
    # Promotion: the API now reads version 2 (which still has the item v1 lost). Nothing to catch up: the
    # projector wrote the late batch into both versions, and nothing twice.
    assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 1
    assert replay.promote(client, prefix, 2) == {"version": 2, "previous": 1}
    everything = stored_events(ddb, prefix)
    expected = attribute([Event.from_wire(e) for e in everything])
    v2 = ViewStore(client, keys.view_table_name(prefix, 2))
    for acct, days in expected.items():
        blobs, _ = v2.query_prefix(keys.account_pk(tenant["tenant_id"], acct), keys.DAY_PREFIX)
        got = {b.sk[len(keys.DAY_PREFIX):]: DayActivity.from_dict(b.data) for b in blobs}
        assert {d: {"counts": dict(a.counts), "users": len(a.users)} for d, a in got.items()} == days, acct
    assert sum(n for days in expected.values() for d in days.values() for n in d["counts"].values()) == \
        sum(1 for e in everything if e["type"] == "track")
    assert active_view_version(client, keys.control_table_name(prefix), cached=False) == 2
    assert services.query().table == keys.view_table_name(prefix, 2)
    acct = victim["pk"]["S"].split("#A#", 1)[1]
    day = victim["sk"]["S"][len(keys.DAY_PREFIX):]
    usage = requests.get(f"{server}/api/accounts/{acct}/usage", params={"days": 30},
                         headers={"Authorization": f"Bearer {tenant['api_token']}"}, timeout=30).json()
    assert day in usage["days"] and usage["totals"][usage["days"].index(day)] > 0
    assert replay.compare(client, prefix, 1, 2).only_b  # v1 still damaged; v2 is what users see


def test_cli_upgrades_a_stack_holding_version_1_items(tenant: dict[str, str], prefix: str, ddb: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`streamfold replay view --version 2 --compare --promote` on a stack whose active view holds items
    in the version 1 shape (digest sets): the diff is reported, promotion goes ahead, and version 2
    counts every stored event once with membership attribution (which version 1 could not do)."""
    stream_handler.get_writer.cache_clear()
    tid = tenant["tenant_id"]
    tables.ensure_view_table(ddb, prefix, 1)
    now = datetime.now(UTC)
    batch = [{"type": "group", "messageId": "g", "userId": "ada", "groupId": "acme"}] + \
        [{"type": "track", "messageId": f"t{i}", "userId": "ada", "event": "Export",
          "timestamp": (now - timedelta(days=i % 3)).isoformat()} for i in range(12)]
    Ingestor(ddb, prefix).ingest(tid, parse_request({"batch": batch}, "batch"))
    # What version 1 stored for that traffic: only events carrying context.groupId counted, so nothing
    # for acme's tracks; its HEAD listed the user (the item shape of view version 1).
    v1_head = {"account_id": "acme", "traits": {}, "first_seen": None, "last_seen": None, "users": ["ada"],
               "event_spans": {}}
    ViewStore(ddb, keys.view_table_name(prefix, 1)).put(Blob(keys.account_pk(tid, "acme"), keys.HEAD_SK), v1_head)

    assert main(["replay", "view", "--version", "2", "--compare", "--promote"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["active_before"] == 1 and out["active_after"] == 2
    # Version 1's table was written before fold codes were recorded: the difference is not classified as
    # damage (which would block the promotion), and it is not called the upgrade without evidence either.
    assert not out["compare"]["equal"] and out["compare"]["verdict"].startswith("unknown fold code")
    assert out["compare"]["codes_a"] == [] and out["compare"]["codes_b"] == [FOLD_CODE]
    assert active_view_version(ddb, keys.control_table_name(prefix), cached=False) == 2
    v2 = ViewStore(ddb, keys.view_table_name(prefix, 2))
    blobs, _ = v2.query_prefix(keys.account_pk(tid, "acme"), keys.DAY_PREFIX)
    assert sum(DayActivity.from_dict(b.data).count("Export") for b in blobs) == 12
    # Version 1 items are still readable by this code (upcast on read) for as long as v1 is kept.
    head = ViewStore(ddb, keys.view_table_name(prefix, 1)).get_many([(keys.account_pk(tid, "acme"), keys.HEAD_SK)])
    assert head[(keys.account_pk(tid, "acme"), keys.HEAD_SK)].data["users"] == ["ada"]


def _mixed_traffic(rng: random.Random, now: datetime, n: int) -> list[dict[str, Any]]:
    """Segment traffic of every kind a view folds: identify/group, tracks with and without a group id,
    anonymous tracks later aliased to a user, pages, re-sent messages (same id, another batch)."""
    out: list[dict[str, Any]] = []
    for u in range(12):
        out.append({"type": "identify", "messageId": f"id{u}", "userId": f"u{u}", "traits": {"email": f"u{u}@x.io"}})
        out.append({"type": "group", "messageId": f"gr{u}", "userId": f"u{u}", "groupId": f"acct{u % 5}",
                    "traits": {"name": f"Account {u % 5}", "seats": 4}})
    for i in range(n):
        when = (now - timedelta(days=rng.randrange(10), minutes=rng.randrange(600))).isoformat()
        u = rng.randrange(14)  # u12, u13: anonymous until aliased
        e: dict[str, Any] = {"type": rng.choice(["track", "track", "page"]), "messageId": f"m{i}",
                             "event": f"E{rng.randrange(6)}", "name": "Home", "timestamp": when,
                             "originalTimestamp": when}
        if u >= 12:
            e["anonymousId"] = f"anon{u}"
        else:
            e["userId"] = f"u{u}"
        if rng.random() < 0.4:
            e["context"] = {"groupId": f"acct{rng.randrange(5)}"}
        out.append(e)
        if i == n // 2:
            out += [{"type": "alias", "messageId": "al12", "userId": "u12", "previousId": "anon12"},
                    {"type": "identify", "messageId": "id13", "userId": "u13", "anonymousId": "anon13"},
                    {"type": "group", "messageId": "gr12", "userId": "u12", "groupId": "acct1"}]
    out += rng.sample(out, n // 10)  # re-sent in other batches: counted once
    return out


def test_in_memory_rebuild_equals_the_item_by_item_rebuild(tenant: dict[str, str], prefix: str, ddb: Any) -> None:
    """The rebuild of an inactive version folds in memory and writes each item once per flush: it must
    give exactly the view the live store's item-by-item writes give for the same batches — also when it
    forgets what it holds every few dozen items (many flushes, reads back from the table), and when run
    twice — and other batches give the same view too, aliased anonymous ids included (an anonymous id's history
    merged by ``alias``/``identify`` leaves the items it would have left had the merge come first: docs/RELIABILITY.md,
    "Identity merges, in any order")."""
    rng = random.Random(11)
    traffic = _mixed_traffic(rng, datetime.now(UTC), 1000)
    ingestor = Ingestor(ddb, prefix)
    for i in range(0, len(traffic), 50):
        ingestor.ingest(tenant["tenant_id"], parse_request({"batch": traffic[i:i + 50]}, "batch"))
    # Versions 11-18: one fold (the newest: fold_for(N) for N >= 3), so every table must be equal.
    item_by_item = replay.rebuild(ddb, prefix, 11, batch_events=150, buffered=False)  # as the active one is
    assert not item_by_item.buffered
    small = replay.rebuild(ddb, prefix, 12, batch_events=150, max_items=40)
    assert small.buffered and small.flushes > 5 and small.events == item_by_item.events == len(traffic)
    result = replay.compare(ddb, prefix, 11, 12)
    assert result.items_a > 100 and result.equal
    again = replay.rebuild(ddb, prefix, 12, batch_events=150)  # into a table that holds the view already
    assert again.buffered and replay.compare(ddb, prefix, 11, 12).equal
    # Once in one flush, at the default bound.
    once = replay.rebuild(ddb, prefix, 13, batch_events=150)
    assert once.flushes == 1 and replay.compare(ddb, prefix, 11, 13).equal
    # Same batches: each item written once, not once a batch. (The ratio to the item-by-item writes depends
    # on how many items only one batch touches, which moves with the time of day the traffic spans.)
    stored = sum(1 for _ in items(ddb, "scan", TableName=keys.view_table_name(prefix, 13)))
    assert once.writes <= stored < item_by_item.writes
    # Partitioned (the default of an in-memory rebuild): events cut by the accounts and users they are
    # about, here into partitions far smaller than the traffic's components, and one component bigger
    # than a partition's cut (folded in several batches).
    # Other batches than the item-by-item rebuild's (the aliases folded before or after their anonymous events):
    # equal, item for item.
    parts = replay.rebuild(ddb, prefix, 15, partition_events=60, partition_entities=4)
    assert parts.buffered and parts.batches > 5 and parts.events == item_by_item.events
    assert replay.compare(ddb, prefix, 11, 15).equal
    whole = replay.rebuild(ddb, prefix, 16)
    assert whole.batches == 1 and whole.events == item_by_item.events
    result = replay.compare(ddb, prefix, 11, 16)
    assert result.equal, result.to_dict()
    # The anonymous ids' own day items went with their merge, whichever came first.
    left = [i for i in items(ddb, "scan", TableName=keys.view_table_name(prefix, 11)) if "#U#anon1" in i["pk"]["S"]]
    assert left and all(not i["sk"]["S"].startswith(keys.USER_DAY_PREFIX) for i in left)
    assert whole.writes <= sum(1 for _ in items(ddb, "scan", TableName=keys.view_table_name(prefix, 16)))
    # And the same batches give the same view, item for item: two partitioned rebuilds.
    replay.rebuild(ddb, prefix, 17)
    assert replay.compare(ddb, prefix, 16, 17).equal
    # Two worker processes over small partitions (the catalog shared through the table).
    two = replay.rebuild(ddb, prefix, 18, partition_events=60, partition_entities=4, workers=2)
    assert two.workers == 2 and two.events == item_by_item.events and len(two.worker_rss_mb) == 2
    assert replay.compare(ddb, prefix, 15, 18).equal
    # Batches cut by the accounts and users they name (the working-set bound), not by events.
    few = replay.rebuild(ddb, prefix, 14, batch_events=150, batch_entities=3)
    assert few.batches > 2 * item_by_item.batches and few.events == item_by_item.events
    # And what each holds is what the events say (attribution by membership and alias included).
    expected = attribute([Event.from_wire(e) for e in stored_events(ddb, prefix)])
    for v in (12, 13, 14):
        store = ViewStore(ddb, keys.view_table_name(prefix, v))
        for acct, days in expected.items():
            blobs, _ = store.query_prefix(keys.account_pk(tenant["tenant_id"], acct), keys.DAY_PREFIX)
            got = {b.sk[len(keys.DAY_PREFIX):]: DayActivity.from_dict(b.data) for b in blobs}
            assert {d: {"counts": dict(a.counts), "users": len(a.users)} for d, a in got.items()} == days, acct


def test_compare_calls_a_difference_damage_when_the_same_fold_code_built_both(
        tenant: dict[str, str], prefix: str, ddb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Replay == live is an invariant: two versions built by the same fold code must be equal, so a
    difference between them is reported as damage (and blocks a promotion), never as "the upgrade"."""
    stream_handler.get_writer.cache_clear()
    tid = tenant["tenant_id"]
    now = datetime.now(UTC)
    batch = [{"type": "group", "messageId": "g", "userId": "ada", "groupId": "acme"}] + \
        [{"type": "track", "messageId": f"t{i}", "userId": "ada", "event": "Export",
          "timestamp": (now - timedelta(hours=i)).isoformat()} for i in range(6)]
    Ingestor(ddb, prefix).ingest(tid, parse_request({"batch": batch}, "batch"))
    replay.rebuild(ddb, prefix, 4)  # versions 3 and 4: one fold (fold_for)
    assert main(["replay", "view", "--version", "3", "--compare", "--against", "4"]) == 0
    out = json.loads(capsys.readouterr().out)["compare"]
    assert out["equal"] and out["same_code"] and out["verdict"] == "equal"
    # Damage version 3: one day counter lost.
    v3 = ViewStore(ddb, keys.view_table_name(prefix, 3))
    day, = v3.query_prefix(keys.account_pk(tid, "acme"), keys.DAY_PREFIX)[0][:1]
    ddb.delete_item(TableName=v3.table, Key={"pk": {"S": day.pk}, "sk": {"S": day.sk}})
    assert main(["replay", "view", "--version", "3", "--no-rebuild", "--compare", "--against", "4",
                 "--promote"]) == 1
    out = json.loads(capsys.readouterr().out)["compare"]
    assert out["same_code"] and out["verdict"].startswith("damage")
    assert out["only_a"] == [f"{day.pk}|{day.sk}"] and f"{day.pk}|{day.sk}" in out["samples"]
    assert active_view_version(ddb, keys.control_table_name(prefix), cached=False) == 2


def test_a_rebuild_killed_midway_resumes_from_its_last_done_partition(
        tenant: dict[str, str], prefix: str, ddb: Any) -> None:
    """``kill -9`` of ``streamfold replay view`` in the middle of its fold, then the same command again: it
    resumes from the partitions it had not finished (its plan and spool kept in the data directory), never
    counting an event twice, and ends with the view an uninterrupted rebuild gives."""
    now = datetime.now(UTC)
    traffic = spread.identity_events(300, now - timedelta(hours=2)) + spread.track_events(1500, 300, now)
    ingestor = Ingestor(ddb, prefix)
    for i in range(0, len(traffic), 100):
        ingestor.ingest(tenant["tenant_id"], parse_request({"batch": traffic[i:i + 100]}, "batch"))
    args = ["--partition-events", "30", "--partition-entities", "8", "--no-progress"]
    reference = replay.rebuild(ddb, prefix, 4, partition_events=30, partition_entities=8)
    assert reference.partitions >= 60 and reference.events == len(traffic)

    job = replay.job_dir(prefix, 3)
    finished = kill_replay_midway(["replay", "view", "--version", "3", *args], job, 10, timeout=300)
    assert 10 <= finished < reference.partitions

    out = subprocess.run([sys.executable, "-m", "tooling.cli", "replay", "view", "--version", "3", *args],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ), check=True)
    resumed = json.loads(out.stdout)["rebuild"]
    assert resumed["resumed_partitions"] >= finished and resumed["partitions"] == reference.partitions
    assert resumed["events"] == len(traffic)
    assert not job.exists()  # done: nothing left to resume
    result = replay.compare(ddb, prefix, 4, 3)
    assert result.items_a > 1000 and result.equal, result.to_dict()
