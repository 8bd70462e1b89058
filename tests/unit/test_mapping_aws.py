"""The AWS MappingBackend against moto's Lambda control plane, and swap() over it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from chalicelib.settings import reset_settings
from streams.aws_backend import AwsMappingBackend
from streams.backend import MappingBackend, MappingBusy, SwapFailed, swap, swap_verified
from streams.mapping_settings import PROJECTOR_MAPPING
from streams.status import mapping_status
from tooling.cli import main

REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="projector", AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        versions = []
        for body in ("v1", "v2"):  # two deployments of the projector: blue -> 1, green -> 2
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("h.py", f"def handler(event, context):\n    return {{'v': '{body}'}}\n")
            if not versions:
                lam.create_function(FunctionName="projector", Runtime="python3.11", Role=role, Handler="h.handler",
                                    Code={"ZipFile": buf.getvalue()})
            else:
                lam.update_function_code(FunctionName="projector", ZipFile=buf.getvalue())
            versions.append(lam.publish_version(FunctionName="projector")["Version"])
        lam.create_alias(FunctionName="projector", Name="blue", FunctionVersion=versions[0])
        lam.create_alias(FunctionName="projector", Name="green", FunctionVersion=versions[1])
        ddb = boto3.client("dynamodb", region_name=REGION)
        table = ddb.create_table(
            TableName="streamfold-events-20260101", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})["TableDescription"]
        yield {"lambda": lam, "stream_arn": table["LatestStreamArn"], "versions": versions}


def _qualifier(aws: dict[str, Any], uuid: str) -> str:
    return aws["lambda"].get_event_source_mapping(UUID=uuid)["FunctionArn"].rsplit(":", 1)[1]


def test_create_get_list_update_delete(aws: dict[str, Any]) -> None:
    backend = AwsMappingBackend(aws["lambda"], poll=0.01)
    assert isinstance(backend, MappingBackend)
    m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue", batch_size=50,
                       bisect_batch_on_function_error=True, maximum_retry_attempts=3,
                       function_response_types=["ReportBatchItemFailures"], parallelization_factor=2)
    assert m.uuid and m.event_source_arn == aws["stream_arn"]
    assert (m.batch_size, m.bisect_batch_on_function_error, m.maximum_retry_attempts) == (50, True, 3)
    assert m.parallelization_factor == 2
    assert m.reports_item_failures and m.starting_position == "TRIM_HORIZON"
    got = backend.wait_for_state(m.uuid, "Enabled", timeout=5)
    assert got.uuid == m.uuid and got.function_base_name == "projector"
    assert [x.uuid for x in backend.list(function_name="projector")] == [m.uuid]
    assert [x.uuid for x in backend.list(event_source_arn=aws["stream_arn"])] == [m.uuid]
    assert backend.list(function_name="other") == []
    updated = backend.update(m.uuid, batch_size=10, maximum_retry_attempts=5, parallelization_factor=10)
    assert (updated.batch_size, updated.maximum_retry_attempts, updated.parallelization_factor) == (10, 5, 10)
    disabled = backend.update(m.uuid, enabled=False)
    assert backend.wait_for_state(disabled.uuid, "Disabled", timeout=5).state == "Disabled"
    backend.delete(m.uuid)
    assert backend.get(m.uuid) is None


def test_swap_retargets_blue_to_green_and_back(aws: dict[str, Any]) -> None:
    backend = AwsMappingBackend(aws["lambda"], poll=0.01)
    m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue")
    blue_version, green_version = aws["versions"]
    # moto resolves an alias to its version in FunctionArn (AWS keeps the alias); compare versions.
    assert _qualifier(aws, m.uuid) == blue_version
    swapped = swap(backend, m.uuid, to="green", timeout=5)
    assert swapped.state == "Enabled" and swapped.uuid == m.uuid
    assert _qualifier(aws, m.uuid) == green_version
    assert backend.get(m.uuid).batch_size == m.batch_size  # type: ignore[union-attr]
    swap(backend, m.uuid, to="blue", timeout=5)
    assert _qualifier(aws, m.uuid) == blue_version


def test_verified_swap_reports_what_it_did(aws: dict[str, Any]) -> None:
    backend = AwsMappingBackend(aws["lambda"], poll=0.01)
    m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue")
    said: list[str] = []
    report = swap_verified(backend, m.uuid, "green", timeout=5, say=said.append)
    assert report.rolled_back is False and report.error is None
    assert (report.from_function, report.to_function) == ("projector:" + aws["versions"][0], "projector:green")
    assert report.before["uuid"] == report.after["uuid"] == m.uuid
    assert report.before["event_source_arn"] == aws["stream_arn"]
    assert report.verified == ["uuid unchanged", "event_source_arn unchanged", "starting_position unchanged",
                               "function resolves to projector:green"]
    assert [s.split(":", 1)[0] for s in report.steps][:2] == ["disable requested", "Disabled"]
    assert said == [f"{m.uuid}: {s}" for s in report.steps]
    assert report.mapping is not None and report.mapping.state == "Enabled"
    assert _qualifier(aws, m.uuid) == aws["versions"][1]


class FailingEnable(AwsMappingBackend):
    """Lambda refuses the first enable after the retarget (e.g. a throttled control plane)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, poll=0.01)
        self.retargeted = False
        self.refused = 0

    def update(self, mapping_uuid: str, **kw: Any):  # type: ignore[no-untyped-def]
        if "function_name" in kw:
            self.retargeted = True
        elif kw.get("enabled") is True and self.retargeted and not self.refused:
            self.refused += 1
            raise MappingBusy("TooManyRequestsException: rate exceeded")
        return super().update(mapping_uuid, **kw)


def test_failed_swap_is_rolled_back_to_the_original_colour(aws: dict[str, Any]) -> None:
    backend = FailingEnable(aws["lambda"])
    m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue")
    with pytest.raises(SwapFailed, match="rolled back") as err:
        swap_verified(backend, m.uuid, "green", timeout=5)
    report = err.value.report
    assert report.rolled_back and "rate exceeded" in (report.error or "")
    assert report.steps[-2:] == ["rollback: FunctionName -> projector:" + aws["versions"][0], "rollback: Enabled"]
    after = backend.get(m.uuid)
    assert after is not None and after.uuid == m.uuid and after.state == "Enabled"
    assert _qualifier(aws, m.uuid) == aws["versions"][0]  # blue again, same mapping (same position)


def test_swap_to_a_missing_alias_fails_and_keeps_the_mapping(aws: dict[str, Any]) -> None:
    backend = AwsMappingBackend(aws["lambda"], poll=0.01)
    m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue")
    aws["lambda"].delete_alias(FunctionName="projector", Name="green")
    with pytest.raises(SwapFailed) as err:
        swap_verified(backend, m.uuid, "green", timeout=5)
    assert err.value.report.rolled_back
    after = backend.get(m.uuid)
    assert after is not None and after.state == "Enabled" and _qualifier(aws, m.uuid) == aws["versions"][0]


def test_cli_swaps_and_reports_aws_mappings(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`streamfold mappings swap --to green` and `streamfold status` on AWS (STREAMFOLD_STAGE set)."""
    monkeypatch.setenv("STREAMFOLD_STAGE", "dev")
    monkeypatch.setenv("STREAMFOLD_PROJECTOR_FUNCTION", "projector")
    monkeypatch.setenv("STREAMFOLD_TABLE_PREFIX", "streamfold-")
    monkeypatch.delenv("STREAMFOLD_DYNAMODB_ENDPOINT", raising=False)
    reset_settings()
    try:
        backend = AwsMappingBackend(aws["lambda"], poll=0.01)
        m = backend.create(event_source_arn=aws["stream_arn"], function_name="projector:blue",
                           **PROJECTOR_MAPPING.create_args())
        assert main(["mappings", "swap", "--to", "green", "--poll", "0.01", "--timeout", "5"]) == 0
        out, err = capsys.readouterr()
        [line] = out.strip().splitlines()
        swapped = json.loads(line)
        assert swapped["UUID"] == m.uuid and swapped["State"] == "Enabled"
        assert swapped["Swap"]["to_function"] == "projector:green" and swapped["Swap"]["rolled_back"] is False
        assert f"{m.uuid}: disable requested" in err and "verified: uuid unchanged" in err
        assert _qualifier(aws, m.uuid) == aws["versions"][1]

        assert main(["mappings", "swap", "--to", "green", "--poll", "0.01"]) == 0  # already green: no-op
        assert "already targets green" in capsys.readouterr().err

        assert main(["status"]) == 0
        report = json.loads(capsys.readouterr().out)
        [entry] = report["mappings"]
        assert report["backend"] == "aws" and entry["uuid"] == m.uuid
        assert entry["table"] == "streamfold-events-20260101" and entry["runtime"] == "aws-lambda"
        assert (entry["batch_size"], entry["batching_window_s"], entry["maximum_record_age_s"]) == (100, 5, 86400)
        assert mapping_status() == report["mappings"]  # what /api/status reports on AWS
    finally:
        monkeypatch.undo()
        reset_settings()
