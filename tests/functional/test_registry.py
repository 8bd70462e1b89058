"""The projection registry against DynamoDB Local: states, promotion, retire with grace, sweep, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib import keys, search, tables
from chalicelib.registry import DEFAULT_GRACE, ProjectionRegistry, RegistryError
from chalicelib.settings import get_settings
from chalicelib.versions import VIEW_VERSION, active_view_version, set_active_view_version
from streams.writer import FOLD_CODE

ROOT = Path(__file__).resolve().parents[2]


def _states(reg: ProjectionRegistry) -> dict[int, str]:
    return {v.version: v.state for v in reg.list()}


def _stored_serving(ddb: Any, prefix: str) -> list[int]:
    items = ddb.query(TableName=keys.control_table_name(prefix), KeyConditionExpression="pk = :p",
                      ExpressionAttributeValues={":p": {"S": keys.VIEWS_PK}}, ConsistentRead=True)["Items"]
    return [int(i["version"]["N"]) for i in items if i["state"]["S"] == "serving"]


def test_a_stack_from_before_the_registry_lists_its_tables(prefix: str, ddb: Any) -> None:
    tables.ensure_view_table(ddb, prefix, VIEW_VERSION + 1)
    reg = ProjectionRegistry(ddb, prefix)
    listed = {v.version: v for v in reg.list()}
    assert set(listed) == {VIEW_VERSION, VIEW_VERSION + 1}
    serving = listed[VIEW_VERSION]
    assert (serving.state, serving.registered, serving.table_exists) == ("serving", False, True)
    assert serving.created_at is not None and datetime.fromisoformat(serving.created_at) <= datetime.now(UTC)
    assert listed[VIEW_VERSION + 1].state == "building"
    # Counting writes the record (the upgrade path): the inferred state and the table's creation time stay.
    assert reg.count(VIEW_VERSION, exact=True) == 0
    again = reg.get(VIEW_VERSION)
    assert again is not None
    assert (again.registered, again.state, again.item_count, again.created_at) == (True, "serving", 0,
                                                                                   serving.created_at)


def test_promote_demotes_the_serving_version_and_a_rollback_promotes_it_again(prefix: str, ddb: Any) -> None:
    new = VIEW_VERSION + 1
    tables.ensure_view_table(ddb, prefix, new)
    reg = ProjectionRegistry(ddb, prefix)
    reg.register_building(new, FOLD_CODE)
    assert reg.get(new).code_version == FOLD_CODE  # type: ignore[union-attr]
    assert _states(reg) == {VIEW_VERSION: "serving", new: "building"}

    reg.mark_serving(new)
    assert active_view_version(ddb, keys.control_table_name(prefix), cached=False) == new
    assert _states(reg) == {VIEW_VERSION: "building", new: "serving"}
    assert _stored_serving(ddb, prefix) == [new]

    reg.mark_serving(VIEW_VERSION)  # rollback
    assert active_view_version(ddb, keys.control_table_name(prefix), cached=False) == VIEW_VERSION
    assert _states(reg) == {VIEW_VERSION: "serving", new: "building"}
    assert _stored_serving(ddb, prefix) == [VIEW_VERSION]


def test_a_promotion_by_replay_keeps_the_registry_in_step(prefix: str, ddb: Any) -> None:
    # `streamfold replay view --promote` calls versions.set_active_view_version, not the registry.
    new = VIEW_VERSION + 1
    tables.ensure_view_table(ddb, prefix, new)
    set_active_view_version(ddb, keys.control_table_name(prefix), new)
    assert _stored_serving(ddb, prefix) == [new]
    assert _states(ProjectionRegistry(ddb, prefix)) == {VIEW_VERSION: "building", new: "serving"}


def test_a_version_without_a_table_cannot_serve(prefix: str, ddb: Any) -> None:
    with pytest.raises(RegistryError, match="no table"):
        ProjectionRegistry(ddb, prefix).mark_serving(VIEW_VERSION + 5)
    assert active_view_version(ddb, keys.control_table_name(prefix), cached=False) == VIEW_VERSION


def test_retire_refuses_the_serving_version_and_sweep_waits_for_the_grace(prefix: str, ddb: Any) -> None:
    old, new = VIEW_VERSION, VIEW_VERSION + 1
    tables.ensure_view_table(ddb, prefix, new)
    reg = ProjectionRegistry(ddb, prefix)
    reg.register_building(new, FOLD_CODE)
    search.get_indexer(old).index("t1", {"acme": {"name": "Acme Corp"}}, {})
    index_file = get_settings().data_dir / f"search-v{old}.sqlite"
    assert index_file.exists()
    reg.mark_serving(new)

    with pytest.raises(RegistryError, match="serving"):
        reg.retire(new)
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    retired = reg.retire(old, timedelta(hours=2), now=at)
    assert (retired.state, retired.retire_after) == ("retired", (at + timedelta(hours=2)).isoformat())

    assert reg.sweep(at + timedelta(hours=1)) == []
    assert tables.exists(ddb, keys.view_table_name(prefix, old))
    assert reg.sweep(at + timedelta(hours=2)) == [old]
    assert not tables.exists(ddb, keys.view_table_name(prefix, old))
    assert not index_file.exists()
    gone = reg.get(old)
    assert gone is not None
    assert (gone.state, gone.table_exists, gone.item_count) == ("retired", False, 0)
    assert gone.dropped_at == (at + timedelta(hours=2)).isoformat()
    assert reg.sweep(at + timedelta(days=9)) == []  # nothing twice
    with pytest.raises(RegistryError, match="no table"):
        reg.mark_serving(old)
    assert _states(reg) == {old: "retired", new: "serving"}


def test_promoting_a_retired_version_before_the_sweep_un_retires_it(prefix: str, ddb: Any) -> None:
    old, new = VIEW_VERSION, VIEW_VERSION + 1
    tables.ensure_view_table(ddb, prefix, new)
    reg = ProjectionRegistry(ddb, prefix)
    reg.mark_serving(new)
    reg.retire(old)
    reg.mark_serving(old)
    back = reg.get(old)
    assert back is not None and (back.state, back.retire_after) == ("serving", None)
    assert reg.sweep(datetime.now(UTC) + DEFAULT_GRACE * 2) == []
    assert tables.exists(ddb, keys.view_table_name(prefix, old))


def test_built_through_and_counts(prefix: str, ddb: Any) -> None:
    reg = ProjectionRegistry(ddb, prefix)
    table = keys.view_table_name(prefix, VIEW_VERSION)
    for i in range(3):
        ddb.put_item(TableName=table, Item={"pk": {"S": f"t#A#{i}"}, "sk": {"S": "HEAD"}})
    reg.record_built_through(VIEW_VERSION, {f"{prefix}events-20260101/shardId-1": "000000000000000000042"})
    assert reg.count(VIEW_VERSION, exact=True) == 3
    v = reg.get(VIEW_VERSION)
    assert v is not None
    assert v.built_through == {f"{prefix}events-20260101/shardId-1": "000000000000000000042"}
    assert v.item_count == 3 and v.counted_at is not None


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `python -m` from this checkout (the console script may point at another one).
    return subprocess.run([sys.executable, "-m", "tooling.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_projection_cli(ddb_endpoint: str, prefix: str, ddb: Any, tmp_path: Path) -> None:
    env = {"STREAMFOLD_DYNAMODB_ENDPOINT": ddb_endpoint, "STREAMFOLD_TABLE_PREFIX": prefix,
           "STREAMFOLD_DATA_DIR": str(tmp_path)}
    new = VIEW_VERSION + 1
    tables.ensure_view_table(ddb, prefix, new)
    ddb.put_item(TableName=keys.view_table_name(prefix, VIEW_VERSION), Item={"pk": {"S": "x"}, "sk": {"S": "y"}})

    listed = run_cli("projection", "list", "--exact", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["version"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {v: r["state"] for v, r in rows.items()} == {VIEW_VERSION: "serving", new: "building"}
    assert rows[VIEW_VERSION]["item_count"] == 1 and rows[new]["item_count"] == 0
    assert {"version", "code_version", "state", "item_count", "built_through"} <= set(rows[new])

    refused = run_cli("projection", "retire", str(VIEW_VERSION), env=env)
    assert refused.returncode == 2 and "serving" in refused.stderr
    retired = run_cli("projection", "retire", str(new), "--grace-hours", "0", env=env)
    assert retired.returncode == 0, retired.stderr
    assert json.loads(retired.stdout)["state"] == "retired"
    swept = run_cli("projection", "sweep", env=env)
    assert swept.returncode == 0, swept.stderr
    assert json.loads(swept.stdout) == {"dropped": [new]}
    assert not tables.exists(ddb, keys.view_table_name(prefix, new))

    helped = run_cli("projection", "retire", "--help", env=env)
    assert "default 72" in helped.stdout
