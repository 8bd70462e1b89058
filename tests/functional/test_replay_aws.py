"""The replay on AWS: its Lambda tasks invoked as the state machine ``<stack>-replay`` invokes them.

Events are ingested into the real DynamoDB Local; the spool is an S3 bucket (moto). Each step gets the payload
the state machine's definition (``cfn.generate.replay_state_machine``) gives it: ``prepare`` the execution's
input and name; ``ids`` and ``spool`` one batch per segment of ``segments.json`` and the fold one batch per
``fold_batch`` partitions of ``manifest.json``, each as a Distributed Map's ``ItemBatcher`` sends a batch
(``{"Items": [...], "BatchInput": {...}}``: docs.aws.amazon.com/step-functions/latest/dg/input-output-itembatcher.html),
through JSON as Lambda passes it, the fold batches in parallel threads. One fold batch fails midway (after its
first partition is in the table) and is run again, as a retry or a redrive runs it; one is delivered twice.
The view built this way equals, item for item, the one ``streamfold replay view`` builds on one machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

import app as app_module
from cfn import generate
from chalicelib import keys
from chalicelib.db import items
from chalicelib.ingest import Ingestor, parse_request
from streams import replay, replay_task
from tooling import spread

pytestmark = pytest.mark.timeout(240)

REGION = "us-east-1"
BUCKET = "streamfold-replay-spool"
PARTITION_EVENTS, PARTITION_ENTITIES = 40, 10


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        monkeypatch.setattr(replay_task, "_s3", client)
        monkeypatch.setenv(replay_task.SPOOL_ENV, f"s3://{BUCKET}/replay")
        yield client


def _invoke(function: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A Lambda invocation: the payload and the result through JSON."""
    result: dict[str, Any] = json.loads(json.dumps(function(json.loads(json.dumps(payload)), None)))
    return result


def _read_items(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """What a Distributed Map's ``ItemReader`` (``s3:getObject``, ``InputType: JSON``) reads: a JSON array."""
    data: list[dict[str, Any]] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return data


def _batches(items_: list[dict[str, Any]], size: int, batch_input: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"Items": items_[i:i + size], "BatchInput": batch_input} for i in range(0, len(items_), size)]


def _map_state(definition: dict[str, Any], name: str) -> dict[str, Any]:
    state: dict[str, Any] = definition["States"][name]
    return state


def test_the_lambda_tasks_rebuild_the_view_the_local_replay_builds(
        tenant: dict[str, str], prefix: str, ddb: Any, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    traffic = spread.identity_events(120, now - timedelta(hours=2)) + spread.track_events(900, 120, now)
    ingestor = Ingestor(ddb, prefix)
    for i in range(0, len(traffic), 50):
        ingestor.ingest(tenant["tenant_id"], parse_request({"batch": traffic[i:i + 50]}, "batch"))
    definition = generate.replay_state_machine()

    # Prepare: the execution's input, as `aws stepfunctions start-execution --input` gives it, and its name.
    execution_input = {"version": 3, "prefix": prefix, "partition_events": PARTITION_EVENTS,
                       "partition_entities": PARTITION_ENTITIES, "fold_batch": 3, "segments": 3}
    assert _map_state(definition, "Prepare")["Parameters"]["Payload"] == {
        "step": "prepare", "input.$": "$", "run.$": "$$.Execution.Name"}
    prepared = _invoke(app_module.replay_plan, {"step": "prepare", "input": execution_input, "run": "exec-1"})
    job = prepared["job"]
    assert prepared["bucket"] == BUCKET and job["spool"] == f"s3://{BUCKET}/replay"
    segments = _read_items(s3, prepared["bucket"], prepared["segments_key"])
    assert len(segments) == prepared["segments"] >= 3 and {s["total"] for s in segments} == {3}

    # The two segment maps, one segment per batch (their ItemBatcher), then the assign step.
    for step, state in (("ids", "ScanIds"), ("spool", None)):
        if state:
            batcher = _map_state(definition, state)["ItemBatcher"]
            assert batcher["MaxItemsPerBatch"] == 1 and batcher["BatchInput"]["step"] == step
        if step == "spool":
            assigned = _invoke(app_module.replay_plan, {"step": "assign", "job": job})
            assert assigned["events"] == len(traffic) and assigned["partitions"] >= 20
        with ThreadPoolExecutor(max_workers=3) as pool:
            outs = list(pool.map(lambda b: _invoke(app_module.replay_plan, b),
                                 _batches(segments, 1, {"step": step, "job": job})))
        assert sum(s["events"] for o in outs for s in o["segments"]) == len(traffic)

    # The fold map: the manifest read as its ItemReader reads it, cut as its ItemBatcher cuts it.
    manifest = _read_items(s3, prepared["bucket"], prepared["manifest_key"])
    assert len(manifest) == assigned["partitions"]
    batches = _batches(manifest, prepared["fold_batch"], {"job": job})
    assert len(batches) >= 6

    # One task dies after its first partition is in the table (its done marker written), before its second is.
    real_mark = replay_task._mark_done
    marked: list[int] = []

    def dies_on_the_second(spool: Any, run: str, p: int, events: int) -> None:
        if marked:
            raise RuntimeError("Lambda killed (timeout)")
        marked.append(p)
        real_mark(spool, run, p, events)

    monkeypatch.setattr(replay_task, "_mark_done", dies_on_the_second)
    with pytest.raises(RuntimeError, match="killed"):
        _invoke(app_module.replay_fold, batches[0])
    monkeypatch.setattr(replay_task, "_mark_done", real_mark)
    assert marked == [batches[0]["Items"][0]["partition"]]

    # Every batch in parallel (the failed one re-run, as a Retry or a redrive runs it), then one delivered again.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda b: _invoke(app_module.replay_fold, b), batches))
    assert results[0]["skipped"] == 1 and len(results[0]["folded"]) == len(batches[0]["Items"]) - 1
    assert all(r["skipped"] == 0 for r in results[1:])
    again = _invoke(app_module.replay_fold, batches[1])
    assert again["skipped"] == len(batches[1]["Items"]) and again["folded"] == []

    finished = _invoke(app_module.replay_plan, {"step": "finish", "job": job})
    assert finished["partitions"] == len(manifest) and finished["events"] == len(traffic)

    # The same events rebuilt on one machine, with the same partition sizes: the same view, item for item.
    local = replay.rebuild(ddb, prefix, 4, partition_events=PARTITION_EVENTS, partition_entities=PARTITION_ENTITIES)
    assert local.partitions == len(manifest) and local.events == len(traffic)
    result = replay.compare(ddb, prefix, 4, 3)
    assert result.items_a > 500 and result.equal, result.to_dict()
    stored = sum(1 for _ in items(ddb, "scan", TableName=keys.view_table_name(prefix, 3)))
    assert stored >= result.items_b


def test_a_new_execution_refuses_a_table_another_run_wrote(
        tenant: dict[str, str], prefix: str, ddb: Any, s3: Any) -> None:
    """Another run's partitions may be in a non-empty table (other batch tags): folding on top could count an
    event twice. Resuming is a redrive of the execution that built it (same run, same spool)."""
    Ingestor(ddb, prefix).ingest(tenant["tenant_id"], parse_request(
        {"batch": spread.identity_events(3, datetime.now(UTC))}, "batch"))
    replay.rebuild(ddb, prefix, 5)
    with pytest.raises(RuntimeError, match="not empty"):
        _invoke(app_module.replay_plan, {"step": "prepare", "input": {"version": 5, "prefix": prefix}, "run": "x"})
