"""Event source mappings as data: the settings Lambda's ``CreateEventSourceMapping`` takes.

A local mapping's source is a *table family*: every day table ``<prefix>events-YYYYMMDD``.
On AWS the rotation function creates one Event Source Mapping per day table; locally one
logical mapping carries an ``EventSourceArn`` *pattern* (``fnmatch`` syntax, see
:func:`family_source_arn`) and the runtime discovers each day table's stream (including
tables created later) and keeps checkpoints per (stream ARN, shard). A concrete stream ARN
works too (then the pattern matches one stream).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from chalicelib import keys

__all__ = [
    "REPORT_BATCH_ITEM_FAILURES",
    "STATES",
    "TRANSITIONAL_STATES",
    "Mapping",
    "MappingState",
    "MappingValidationError",
    "StartingPosition",
    "arn_matches",
    "family_source_arn",
    "split_function",
    "table_name_of",
]

MappingState = Literal["Creating", "Enabled", "Disabling", "Disabled", "Enabling", "Updating", "Deleting"]
StartingPosition = Literal["TRIM_HORIZON", "LATEST"]
STATES: tuple[str, ...] = ("Creating", "Enabled", "Disabling", "Disabled", "Enabling", "Updating", "Deleting")
TRANSITIONAL_STATES = frozenset({"Creating", "Disabling", "Enabling", "Updating", "Deleting"})
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


class MappingValidationError(ValueError):
    """A setting outside what Lambda accepts (same ranges as ``CreateEventSourceMapping``)."""


def family_source_arn(prefix: str) -> str:
    """The ``EventSourceArn`` pattern of every day table's stream for a table prefix."""
    return f"arn:aws:dynamodb:*:*:table/{keys.events_table_name(prefix, _PATTERN_DAY)}/stream/*"


class _PatternDay:
    """Formats as ``*`` so :func:`chalicelib.keys.events_table_name` yields a table pattern."""

    def strftime(self, _fmt: str) -> str:
        return "*"


_PATTERN_DAY: Any = _PatternDay()


def table_name_of(stream_arn: str) -> str:
    """Table name inside a stream ARN (or ARN pattern): ``...:table/<name>/stream/<label>``."""
    rest = stream_arn.split(":table/", 1)[1]
    return rest.split("/stream/", 1)[0]


def arn_matches(pattern: str, stream_arn: str) -> bool:
    """Whether a stream ARN belongs to a mapping's source (exact ARN or family pattern)."""
    return fnmatch.fnmatchcase(stream_arn, pattern)


def split_function(function_name: str) -> tuple[str, str | None]:
    """``"projector:blue"`` -> ``("projector", "blue")``; ``"echo"`` -> ``("echo", None)``."""
    name, _, qualifier = function_name.partition(":")
    return name, (qualifier or None)


def _num(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


@dataclass(frozen=True)
class Mapping:
    """One event source mapping (AWS field names in :meth:`to_dict`)."""

    uuid: str
    event_source_arn: str
    function_name: str
    batch_size: int = 100
    maximum_batching_window_in_seconds: int = 0
    starting_position: StartingPosition = "TRIM_HORIZON"
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1
    maximum_record_age_in_seconds: int = -1
    function_response_types: tuple[str, ...] = ()
    parallelization_factor: int = 1
    on_failure_destination: str | None = None
    state: MappingState = "Creating"
    state_transition_reason: str = "USER_INITIATED"
    last_modified: float = 0.0
    created: float = 0.0
    enabled: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    # --- AWS ranges -------------------------------------------------------------------------
    def validate(self) -> Mapping:
        """Raise :class:`MappingValidationError` for values Lambda would reject."""
        if not 1 <= self.batch_size <= 10000:
            raise MappingValidationError("BatchSize must be between 1 and 10000")
        if not 0 <= self.maximum_batching_window_in_seconds <= 300:
            raise MappingValidationError("MaximumBatchingWindowInSeconds must be between 0 and 300")
        if self.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise MappingValidationError("StartingPosition must be TRIM_HORIZON or LATEST")
        if not (self.maximum_retry_attempts == -1 or 0 <= self.maximum_retry_attempts <= 10000):
            raise MappingValidationError("MaximumRetryAttempts must be -1 or between 0 and 10000")
        if not (self.maximum_record_age_in_seconds == -1 or 60 <= self.maximum_record_age_in_seconds <= 604800):
            raise MappingValidationError("MaximumRecordAgeInSeconds must be -1 or between 60 and 604800")
        if not 1 <= self.parallelization_factor <= 10:
            raise MappingValidationError("ParallelizationFactor must be between 1 and 10")
        for t in self.function_response_types:
            if t != REPORT_BATCH_ITEM_FAILURES:
                raise MappingValidationError(f"unknown FunctionResponseType {t!r}")
        if self.state not in STATES:
            raise MappingValidationError(f"unknown State {self.state!r}")
        if not self.function_name:
            raise MappingValidationError("FunctionName is required")
        return self

    @property
    def reports_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def function_base_name(self) -> str:
        return split_function(self.function_name)[0]

    def replace(self, **changes: Any) -> Mapping:
        return dataclasses.replace(self, **changes)

    # --- AWS shape --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The mapping as ``GetEventSourceMapping`` returns it (AWS field names)."""
        d: dict[str, Any] = {
            "UUID": self.uuid,
            "EventSourceArn": self.event_source_arn,
            "FunctionName": self.function_name,
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.maximum_batching_window_in_seconds,
            "StartingPosition": self.starting_position,
            "BisectBatchOnFunctionError": self.bisect_batch_on_function_error,
            "MaximumRetryAttempts": self.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": self.maximum_record_age_in_seconds,
            "FunctionResponseTypes": list(self.function_response_types),
            "ParallelizationFactor": self.parallelization_factor,
            "DestinationConfig": {"OnFailure": {"Destination": self.on_failure_destination}}
            if self.on_failure_destination else {},
            "State": self.state,
            "StateTransitionReason": self.state_transition_reason,
            "LastModified": self.last_modified,
            "Created": self.created,
            "Enabled": self.enabled,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mapping:
        """Inverse of :meth:`to_dict` (also accepts boto3 ``lambda`` responses and stored items)."""
        d = {k: _num(v) for k, v in d.items()}
        on_failure = ((d.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        last_modified = d.get("LastModified", 0.0)
        if hasattr(last_modified, "timestamp"):
            last_modified = last_modified.timestamp()
        known = {"UUID", "EventSourceArn", "FunctionName", "FunctionArn", "BatchSize",
                 "MaximumBatchingWindowInSeconds", "StartingPosition", "BisectBatchOnFunctionError",
                 "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "FunctionResponseTypes",
                 "ParallelizationFactor", "DestinationConfig", "State", "StateTransitionReason", "LastModified",
                 "Created", "Enabled",
                 "ResponseMetadata", "pk", "sk", "LeaseOwner", "LeaseUntil"}
        function_name = d.get("FunctionName") or _function_from_arn(d.get("FunctionArn", ""))
        state = d.get("State", "Creating")
        return cls(
            uuid=d["UUID"],
            event_source_arn=d["EventSourceArn"],
            function_name=function_name,
            batch_size=int(d.get("BatchSize", 100)),
            maximum_batching_window_in_seconds=int(d.get("MaximumBatchingWindowInSeconds", 0)),
            starting_position=d.get("StartingPosition", "TRIM_HORIZON"),
            bisect_batch_on_function_error=bool(d.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=int(d.get("MaximumRetryAttempts", -1)),
            maximum_record_age_in_seconds=int(d.get("MaximumRecordAgeInSeconds", -1)),
            function_response_types=tuple(d.get("FunctionResponseTypes") or ()),
            parallelization_factor=int(d.get("ParallelizationFactor") or 1),
            on_failure_destination=on_failure,
            state=state,
            state_transition_reason=d.get("StateTransitionReason", "USER_INITIATED"),
            last_modified=float(last_modified or 0.0),
            created=float(d.get("Created", 0.0) or 0.0),
            enabled=bool(d.get("Enabled", state in ("Enabled", "Enabling", "Creating", "Updating"))),
            extra={k: v for k, v in d.items() if k not in known},
        )


def _function_from_arn(arn: str) -> str:
    # arn:aws:lambda:region:acct:function:name[:qualifier]
    parts = arn.split(":")
    if len(parts) >= 7 and parts[5] == "function":
        return ":".join(parts[6:])
    return arn
