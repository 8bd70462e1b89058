"""The mapping API both backends implement, and the blue/green :func:`swap` built on it."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from streams.mapping import Mapping, split_function

__all__ = ["SETTING_NAMES", "MappingBackend", "MappingBusy", "MappingNotFound", "swap", "to_aws_settings"]

# snake_case keyword -> AWS parameter name of Create/UpdateEventSourceMapping.
SETTING_NAMES: dict[str, str] = {
    "batch_size": "BatchSize",
    "maximum_batching_window_in_seconds": "MaximumBatchingWindowInSeconds",
    "bisect_batch_on_function_error": "BisectBatchOnFunctionError",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age_in_seconds": "MaximumRecordAgeInSeconds",
    "function_response_types": "FunctionResponseTypes",
    "on_failure_destination": "DestinationConfig",
}


class MappingNotFound(LookupError):
    """No mapping with that UUID."""


class MappingBusy(RuntimeError):
    """The mapping is in a transitional state (AWS: ``ResourceInUseException``)."""


def to_aws_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword settings as AWS request parameters (``DestinationConfig`` built from a destination)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if v is None:
            continue
        if k not in SETTING_NAMES:
            raise TypeError(f"unknown mapping setting {k!r}")
        if k == "on_failure_destination":
            out["DestinationConfig"] = {"OnFailure": {"Destination": v}}
        elif k == "function_response_types":
            out["FunctionResponseTypes"] = list(v)
        else:
            out[SETTING_NAMES[k]] = v
    return out


@runtime_checkable
class MappingBackend(Protocol):
    """Create and operate event source mappings (local runtime or AWS Lambda)."""

    def create(self, *, event_source_arn: str, function_name: str, starting_position: str = "TRIM_HORIZON",
               enabled: bool = True, **settings: Any) -> Mapping:
        """Create a mapping; it starts in ``Creating`` and becomes ``Enabled``/``Disabled``."""
        ...

    def get(self, mapping_uuid: str) -> Mapping | None:
        """The mapping, or ``None`` if it does not exist."""
        ...

    def list(self, *, function_name: str | None = None, event_source_arn: str | None = None) -> list[Mapping]:
        """Mappings, optionally only those of a function (base name or name:qualifier) or a source."""
        ...

    def update(self, mapping_uuid: str, *, function_name: str | None = None, enabled: bool | None = None,
               **settings: Any) -> Mapping:
        """Change target function, enabled flag or settings (state goes Updating/Enabling/Disabling)."""
        ...

    def delete(self, mapping_uuid: str) -> None:
        """Delete the mapping (its position is gone: a re-created mapping starts at StartingPosition)."""
        ...

    def wait_for_state(self, mapping_uuid: str, state: str, timeout: float = 60.0) -> Mapping:
        """Poll until the mapping is in ``state``; ``TimeoutError`` otherwise."""
        ...


def swap(backend: MappingBackend, mapping_uuid: str, to: str, *, timeout: float = 60.0) -> Mapping:
    """Blue/green retarget keeping the stream position.

    disable -> wait ``Disabled`` (the in-flight batch finishes and is checkpointed) -> point
    ``FunctionName`` at ``<name>:<to>`` -> enable -> wait ``Enabled``. The next batch starts at
    the first record not yet processed, so nothing is skipped and nothing re-delivered.
    """
    current = backend.get(mapping_uuid)
    if current is None:
        raise MappingNotFound(mapping_uuid)
    name, _ = split_function(current.function_name)
    target = f"{name}:{to}"
    if current.state not in ("Disabled", "Disabling"):
        backend.update(mapping_uuid, enabled=False)
    backend.wait_for_state(mapping_uuid, "Disabled", timeout)
    backend.update(mapping_uuid, function_name=target)
    backend.wait_for_state(mapping_uuid, "Disabled", timeout)
    backend.update(mapping_uuid, enabled=True)
    return backend.wait_for_state(mapping_uuid, "Enabled", timeout)
