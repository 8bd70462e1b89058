"""Concurrent batches of one tenant through the real projector and the local runtime: nothing lost, nothing
counted twice, at ``ParallelizationFactor`` 1 and 4 (``tooling.parallel.measure_parallel``, which the bench
runs at 1, 2 and 4). Throughput is reported, never asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chalicelib import db, keys, tables
from chalicelib.chunks import unpack_chunk
from chalicelib.versions import VIEW_VERSION
from chalicelib.views import ViewStore
from projections.account import DayActivity
from projections.events import Event
from projections.usage import attribute
from tests.helpers.fold import claimed_digests
from tooling.parallel import ParallelWorkload, measure_parallel
from tooling.stack import use_endpoint

pytestmark = pytest.mark.timeout(600)

WORKLOAD = ParallelWorkload(accounts=30, users_per_account=2, events=800, per_request=10)


def _stored_events(client: Any, prefix: str, tenant: str) -> list[Event]:
    out: list[Event] = []
    for _day, table in tables.list_event_tables(client, prefix):
        for item in db.items(client, "scan", TableName=table, ConsistentRead=True):
            t, wire = unpack_chunk(item)
            if t == tenant:
                out += [Event.from_wire(e) for e in wire]
    return out


def _view_usage(store: ViewStore, tenant: str, accounts: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for acct in sorted(accounts):
        blobs, _ = store.query_prefix(keys.account_pk(tenant, acct), keys.DAY_PREFIX)
        days = {b.sk[len(keys.DAY_PREFIX):]: DayActivity.from_dict(b.data) for b in blobs}
        if days:
            out[acct] = {d: {"counts": dict(a.counts), "users": len(a.users)} for d, a in days.items()}
    return out


def test_concurrent_batches_of_one_tenant_count_every_event_once(ddb_endpoint: str, output_dir: Path) -> None:
    result = measure_parallel(ddb_endpoint, (1, 4), workload=WORKLOAD, keep_tables=True)
    (output_dir / "parallel.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({f: {k: r["runs"][0][k] for k in ("events_per_s", "seconds", "invocations", "max_concurrent",
                                                       "wcu_per_event", "conflicts")}
                      for f, r in result["by_factor"].items()}))
    use_endpoint(ddb_endpoint)
    client = db.get_client()
    try:
        for factor, r in result["by_factor"].items():
            [run] = r["runs"]
            assert run["exact"], run["problems"]
            assert run["usage_events_stored"] == WORKLOAD.events and run["dead_letters"] == 0
            if int(factor) > 1:
                assert run["max_concurrent"] >= 2, run  # the shard's batches really ran at the same time
            # Checked again here, independently of the tooling: every acknowledged event counted once.
            events = _stored_events(client, run["prefix"], run["tenant"])
            store = ViewStore(client, keys.view_table_name(run["prefix"], VIEW_VERSION))
            expected = attribute(events)
            assert _view_usage(store, run["tenant"], {e.group_id for e in events if e.group_id}) == expected
            usage = {e.digest for e in events if e.is_usage}
            assert len(usage) == WORKLOAD.events
            assert set(claimed_digests(store, run["tenant"])) == usage
    finally:
        for r in result["by_factor"].values():
            for run in r["runs"]:
                for name in list(db.table_names(client)):
                    if name.startswith(run["prefix"]):
                        client.delete_table(TableName=name)
