"""boto3 stream records -> Lambda event records; mapping validation; response rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.decode import to_lambda_record
from streams.mapping import Mapping, MappingValidationError, arn_matches, family_source_arn
from streams.poller import _lowest_failure

EVENTS = Path(__file__).resolve().parents[1] / "events"


def test_binary_and_time_are_encoded_as_lambda_does() -> None:
    raw = {"eventID": "e1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
           "awsRegion": "ddblocal", "dynamodb": {
               "ApproximateCreationDateTime": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
               "Keys": {"pk": {"S": "a"}},
               "NewImage": {"pk": {"S": "a"}, "b": {"B": b"\x00\x01"}, "bs": {"BS": [b"\xff"]},
                            "m": {"M": {"l": {"L": [{"B": b"x"}, {"N": "1"}]}}}},
               "SequenceNumber": "000000000000000000002", "SizeBytes": 9, "StreamViewType": "NEW_IMAGE"}}
    rec = to_lambda_record(raw, "arn:stream")
    assert rec["eventSourceARN"] == "arn:stream"
    assert rec["dynamodb"]["ApproximateCreationDateTime"] == 1767323045.0
    img = rec["dynamodb"]["NewImage"]
    assert img["b"] == {"B": "AAE="} and img["bs"] == {"BS": ["/w=="]}
    assert img["m"]["M"]["l"]["L"] == [{"B": "eA=="}, {"N": "1"}]
    json.dumps(rec)  # JSON-serialisable, like the event Lambda sends


def test_family_pattern_matches_day_tables_only() -> None:
    pattern = family_source_arn("sf-")
    assert arn_matches(pattern, "arn:aws:dynamodb:us-east-1:1:table/sf-events-20260101/stream/2026-01-01T00:00:00.000")
    assert not arn_matches(pattern, "arn:aws:dynamodb:us-east-1:1:table/sf-control/stream/x")
    assert not arn_matches(pattern, "arn:aws:dynamodb:us-east-1:1:table/other-events-20260101/stream/x")


@pytest.mark.parametrize("change", [{"batch_size": 0}, {"maximum_retry_attempts": -2},
                                    {"maximum_record_age_in_seconds": 30}, {"starting_position": "AT_TIMESTAMP"},
                                    {"function_response_types": ("Nope",)}, {"parallelization_factor": 0},
                                    {"parallelization_factor": 11}])
def test_invalid_settings_are_rejected_like_lambda(change: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(MappingValidationError):
        Mapping(uuid="u", event_source_arn="a", function_name="f", **change).validate()


def test_round_trip_in_aws_shape() -> None:
    m = Mapping(uuid="u", event_source_arn="a", function_name="projector:blue", bisect_batch_on_function_error=True,
                function_response_types=("ReportBatchItemFailures",), on_failure_destination="dlq",
                parallelization_factor=4)
    d = m.to_dict()
    assert d["DestinationConfig"] == {"OnFailure": {"Destination": "dlq"}} and d["ParallelizationFactor"] == 4
    assert Mapping.from_dict(d) == m
    assert Mapping.from_dict({k: v for k, v in d.items() if k != "ParallelizationFactor"}).parallelization_factor == 1


def test_batch_item_failure_rules_follow_aws() -> None:
    records = json.loads((EVENTS / "dynamodb_stream_event.json").read_text())["Records"]
    seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
    assert _lowest_failure(None, records) == (None, None)
    assert _lowest_failure({"batchItemFailures": []}, records) == (None, None)
    assert _lowest_failure({"batchItemFailures": [{"itemIdentifier": seqs[2]}, {"itemIdentifier": seqs[1]}]},
                           records) == (1, None)
    for bad in ("", None, "999"):
        idx, err = _lowest_failure({"batchItemFailures": [{"itemIdentifier": bad}]}, records)
        assert idx is None and err is not None  # the whole batch counts as failed
