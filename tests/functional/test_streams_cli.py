"""`streamfold status | mappings | dlq` and the `streamfold up` component, on DynamoDB Local."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.settings import get_settings
from streams import functions
from streams.functions import FunctionRegistry
from streams.mapping import family_source_arn
from streams.mapping_settings import PROJECTOR_MAPPING
from tests.helpers.echo import EchoHandler, echo_handler
from tests.helpers.streams import FAST, day_table, local_parts, put_events, wait_until
from tooling.cli import local_components, main
from tooling.mappings import LocalMappings

pytestmark = pytest.mark.timeout(60)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[Any]:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out.strip()
    if argv[0] == "status":
        return [json.loads(out)]
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class _Stack:
    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return get_settings()


def test_up_component_ensures_default_projector_mapping(prefix: str) -> None:
    factory = local_components()[0]  # the first thing `streamfold up` starts: the local mappings
    comp = factory(_Stack())
    assert isinstance(comp, LocalMappings)
    comp.options = FAST
    comp.start()
    try:
        m = comp.mapping
        assert m is not None and m.function_name == "projector:blue"
        assert m.event_source_arn == family_source_arn(prefix)
        # The settings AWS uses (one source: streams.mapping_settings), not local-only ones.
        assert (m.starting_position, m.reports_item_failures, m.bisect_batch_on_function_error,
                m.maximum_retry_attempts, m.maximum_record_age_in_seconds, m.batch_size,
                m.maximum_batching_window_in_seconds) == ("TRIM_HORIZON", True, True, 3, 86400, 100, 5)
        assert PROJECTOR_MAPPING.update_args(m) == {}
        store, backend, _, _ = local_parts(prefix)
        wait_until(lambda: backend.get(m.uuid).state == "Enabled")  # type: ignore[union-attr]
    finally:
        comp.stop()
    again = LocalMappings(_Stack(), FAST).start()  # idempotent: the same mapping, not a second one
    again.stop()
    assert again.mapping is not None and again.mapping.uuid == m.uuid
    assert [x.uuid for x in backend.list(function_name="projector")] == [m.uuid]


def test_up_component_brings_an_old_mapping_to_the_shared_settings(prefix: str, ddb: Any) -> None:
    """A mapping kept under .data/ from before (1 s window, no maximum age) is updated in place."""
    store, backend, _, src = local_parts(prefix)
    old = backend.create(event_source_arn=src, function_name="projector:green", maximum_batching_window_in_seconds=1,
                         maximum_record_age_in_seconds=-1, bisect_batch_on_function_error=True,
                         maximum_retry_attempts=3, function_response_types=["ReportBatchItemFailures"])
    comp = LocalMappings(_Stack(), FAST, mapping_overrides={"batch_size": 50}).start()
    comp.stop()
    m = backend.get(old.uuid)
    assert m is not None and comp.mapping is not None and comp.mapping.uuid == old.uuid
    assert m.function_name == "projector:green"  # the live colour is kept
    assert (m.maximum_batching_window_in_seconds, m.maximum_record_age_in_seconds, m.batch_size) == (5, 86400, 50)
    assert [x.uuid for x in backend.list(function_name="projector")] == [old.uuid]


def test_mappings_commands_disable_enable_swap_and_status(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    store, backend, _, src = local_parts(prefix)
    m = backend.create(event_source_arn=src, function_name="projector:blue")
    [listed] = _run(capsys, "mappings", "list")
    assert listed["UUID"] == m.uuid and listed["State"] == "Enabled"
    [disabled] = _run(capsys, "mappings", "disable")
    assert disabled["State"] == "Disabled"
    [enabled] = _run(capsys, "mappings", "enable")
    assert enabled["State"] == "Enabled"
    [swapped] = _run(capsys, "mappings", "swap", "--to", "green")
    assert swapped["FunctionName"] == "projector:green" and swapped["State"] == "Enabled"
    [status] = _run(capsys, "status")
    [entry] = status["mappings"]
    assert entry["uuid"] == m.uuid and entry["function"] == "projector:green" and entry["state"] == "Enabled"
    assert entry["dead_letters"] == 0 and "iterator_age_ms" in entry and "records_behind" in entry


def test_dlq_list_and_redrive(prefix: str, ddb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    failing = EchoHandler(crash=lambda ev: True)
    reg = FunctionRegistry()
    reg.register("echo", failing)
    store, backend, runtime, src = local_parts(prefix, functions=reg)
    m = backend.create(event_source_arn=src, function_name="echo", maximum_retry_attempts=0, batch_size=10)
    keys = [f"d{i}" for i in range(3)]
    put_events(ddb, day_table(prefix), keys)
    with runtime():
        wait_until(lambda: store.dead_letters(m.uuid), message="dead letter")
        wait_until(lambda: sum(len(d.records or []) for d in store.dead_letters(m.uuid)) == 3)
    listed = _run(capsys, "dlq", "list")
    assert {x["mapping"] for x in listed} == {m.uuid}
    assert sum(x["records"] for x in listed) == 3 and all(x["condition"] == "RetryAttemptsExhausted" for x in listed)
    [status] = _run(capsys, "status")
    assert status["mappings"][0]["dead_letters"] == len(listed)
    assert status["mappings"][0]["shards"][0]["checkpoint"] is not None  # the shard moved on
    before = len(echo_handler.handled)
    functions.register("echo", echo_handler)  # the CLI redrives through the default registry
    try:
        [result] = _run(capsys, "dlq", "redrive")  # a working "echo" now handles them fine
    finally:
        functions.registry.unregister("echo")
    assert result["delivered"] == len(listed) and result["failed"] == 0 and result["records"] == 3
    assert [r.dynamodb.keys["pk"] for r in echo_handler.handled[before:]] == keys  # type: ignore[index,union-attr]
    assert store.dead_letters(m.uuid) == []


def test_up_runs_rotation_on_a_timer() -> None:
    names = []
    for factory in local_components()[1:]:
        comp = factory(_Stack())  # type: ignore[arg-type]
        names.append((comp.name, comp.interval))  # type: ignore[attr-defined]
    assert ("rotation", 3600.0) in names
