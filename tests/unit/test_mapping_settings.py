"""One source of mapping settings: rotation (AWS), deploy and the local runtime agree."""

from __future__ import annotations

import pytest

from streams.mapping import Mapping
from streams.mapping_settings import PROJECTOR_MAPPING, ProjectorMappingSettings
from streams.rotation import MappingSettings
from tooling.mappings import DEFAULT_PROJECTOR_MAPPING


def test_aws_request_and_local_mapping_use_the_same_settings() -> None:
    request = MappingSettings(function_name="projector:blue", on_failure_arn="arn:q").create_request("arn:s")
    args = PROJECTOR_MAPPING.create_args()
    assert {k: request[k] for k in ("BatchSize", "MaximumBatchingWindowInSeconds", "BisectBatchOnFunctionError",
                                    "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "StartingPosition",
                                    "FunctionResponseTypes", "ParallelizationFactor")} == {
        "BatchSize": args["batch_size"], "MaximumBatchingWindowInSeconds": args["maximum_batching_window_in_seconds"],
        "BisectBatchOnFunctionError": args["bisect_batch_on_function_error"],
        "MaximumRetryAttempts": args["maximum_retry_attempts"],
        "MaximumRecordAgeInSeconds": args["maximum_record_age_in_seconds"],
        "StartingPosition": args["starting_position"], "FunctionResponseTypes": args["function_response_types"],
        "ParallelizationFactor": args["parallelization_factor"]}
    assert {k: v for k, v in DEFAULT_PROJECTOR_MAPPING.items() if k != "function_name"} == args
    assert (args["batch_size"], args["maximum_batching_window_in_seconds"], args["maximum_record_age_in_seconds"],
            args["maximum_retry_attempts"], args["bisect_batch_on_function_error"],
            args["parallelization_factor"]) == (100, 5, 86400, 3, True, 1)


def test_overrides_and_differences() -> None:
    fast = PROJECTOR_MAPPING.create_args(maximum_batching_window_in_seconds=0)
    assert fast["maximum_batching_window_in_seconds"] == 0 and fast["batch_size"] == 100
    with pytest.raises(TypeError, match="window"):
        PROJECTOR_MAPPING.create_args(window=1)
    m = Mapping(uuid="u", event_source_arn="arn:s", function_name="projector:blue",
                **PROJECTOR_MAPPING.create_args(batch_size=7, starting_position="LATEST"))  # type: ignore[arg-type]
    assert PROJECTOR_MAPPING.update_args(m) == {"batch_size": 100}  # starting position cannot be updated
    assert PROJECTOR_MAPPING.update_args(m.replace(parallelization_factor=4)) == {"batch_size": 100,
                                                                               "parallelization_factor": 1}
    assert ProjectorMappingSettings(batch_size=7).update_args(m) == {}
