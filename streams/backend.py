"""The mapping API both backends implement, and the blue/green :func:`swap` built on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from streams.mapping import Mapping, split_function

__all__ = ["SETTING_NAMES", "MappingBackend", "MappingBusy", "MappingNotFound", "PositionSnapshot", "SwapFailed",
           "SwapReport", "swap", "swap_verified", "to_aws_settings"]

# snake_case keyword -> AWS parameter name of Create/UpdateEventSourceMapping.
SETTING_NAMES: dict[str, str] = {
    "batch_size": "BatchSize",
    "maximum_batching_window_in_seconds": "MaximumBatchingWindowInSeconds",
    "bisect_batch_on_function_error": "BisectBatchOnFunctionError",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age_in_seconds": "MaximumRecordAgeInSeconds",
    "function_response_types": "FunctionResponseTypes",
    "parallelization_factor": "ParallelizationFactor",
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

    def positions(self, mapping_uuid: str) -> PositionSnapshot:
        """What can be observed of the mapping's stream position (see :data:`PositionSnapshot`)."""
        ...

    def targets(self, mapping: Mapping, function_name: str) -> bool:
        """Whether ``mapping`` invokes ``function_name`` (``name:alias``; AWS may report the version)."""
        ...

    def restore_positions(self, mapping_uuid: str, snapshot: PositionSnapshot) -> bool:
        """Put a disabled mapping's checkpoints back to ``snapshot``; ``False`` where that is impossible."""
        ...


PositionSnapshot = dict[str, Any]
"""What a backend can observe of a mapping's stream position (:meth:`MappingBackend.positions`).

Locally: ``{"checkpoints": {"<stream ARN>#<shard>": "<sequence number>" | None}}``. On AWS a mapping
has no checkpoint API, so the snapshot holds what identifies the position instead (UUID, source,
starting position, ``LastProcessingResult``): the position lives inside the mapping, and it is kept
as long as the same mapping (UUID) is retargeted and never re-created.
"""


class SwapFailed(RuntimeError):
    """A swap failed; ``report`` says what was done and whether it was rolled back."""

    def __init__(self, message: str, report: SwapReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class SwapReport:
    """What :func:`swap_verified` did to one mapping."""

    uuid: str
    from_function: str
    to_function: str
    steps: list[str] = field(default_factory=list)
    before: PositionSnapshot = field(default_factory=dict)
    after: PositionSnapshot = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)
    rolled_back: bool = False
    error: str | None = None
    mapping: Mapping | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mapping"] = None if self.mapping is None else self.mapping.to_dict()
        return d


def _compare_checkpoints(before: dict[str, str | None], now: dict[str, str | None], *, exact: bool) -> list[str]:
    """Differences between two checkpoint maps: a shard missing, moved back, or (``exact``) moved at all."""
    problems = []
    for shard, seq in before.items():
        if shard not in now:
            problems.append(f"shard {shard}: checkpoint gone (was {seq})")
        elif now[shard] != seq and (exact or _behind(now[shard], seq)):
            problems.append(f"shard {shard}: checkpoint {seq} -> {now[shard]}")
    return problems


def _behind(now: str | None, before: str | None) -> bool:
    return before is not None and (now is None or int(now) < int(before))


def _verify(report: SwapReport, snapshot: PositionSnapshot, *, exact: bool) -> list[str]:
    before = report.before
    problems: list[str] = []
    for key in ("uuid", "event_source_arn", "starting_position"):
        if key in before and snapshot.get(key) != before[key]:
            problems.append(f"{key} changed: {before[key]} -> {snapshot.get(key)}")
    if "checkpoints" in before:
        problems += _compare_checkpoints(before["checkpoints"], snapshot.get("checkpoints", {}), exact=exact)
    return problems


def swap_verified(backend: MappingBackend, mapping_uuid: str, to: str, *, timeout: float = 60.0,
                  say: Callable[[str], None] | None = None) -> SwapReport:
    """Blue/green retarget keeping the stream position, verified, rolled back on any failure.

    1. disable and wait for ``Disabled``: locally the runtime settles that state only after its
       in-flight batch is checkpointed; on AWS ``Disabled`` means no new batch is read;
    2. snapshot the position (:meth:`MappingBackend.positions`);
    3. point ``FunctionName`` at ``<name>:<to>`` and wait for ``Disabled`` again;
    4. verify: same UUID and source, and every shard's checkpoint exactly where it was;
    5. enable and wait for ``Enabled``; verify the function resolves to the target and no shard's
       checkpoint went back or disappeared (under traffic the new colour may already have moved on).

    Any failure (an API error, a timeout, a failed check) restores the original function and
    enabled state, and :class:`SwapFailed` carries the report. ``say`` is told every step.
    """
    started = time.monotonic()
    current = backend.get(mapping_uuid)
    if current is None:
        raise MappingNotFound(mapping_uuid)
    name, _ = split_function(current.function_name)
    target = f"{name}:{to}"
    report = SwapReport(uuid=mapping_uuid, from_function=current.function_name, to_function=target)

    def step(text: str) -> None:
        report.steps.append(text)
        if say is not None:
            say(f"{mapping_uuid}: {text}")

    was_enabled = current.state not in ("Disabled", "Disabling")
    try:
        if was_enabled:
            backend.update(mapping_uuid, enabled=False)
            step("disable requested")
        backend.wait_for_state(mapping_uuid, "Disabled", timeout)
        step("Disabled: no batch in flight")
        report.before = backend.positions(mapping_uuid)
        step(f"position before: {_describe(report.before)}")
        backend.update(mapping_uuid, function_name=target)
        step(f"FunctionName {current.function_name} -> {target}")
        backend.wait_for_state(mapping_uuid, "Disabled", timeout)
        problems = _verify(report, backend.positions(mapping_uuid), exact=True)
        if problems:
            raise RuntimeError("position moved while disabled: " + "; ".join(problems))
        step("verified while disabled: " + ", ".join(_checked(report.before)))
        if was_enabled:
            backend.update(mapping_uuid, enabled=True)
            step("enable requested")
            final = backend.wait_for_state(mapping_uuid, "Enabled", timeout)
            step("Enabled")
        else:
            final = backend.wait_for_state(mapping_uuid, "Disabled", timeout)
        report.after = backend.positions(mapping_uuid)
        problems = _verify(report, report.after, exact=False)
        if not backend.targets(final, target):
            problems.append(f"mapping targets {final.function_name}, not {target}")
        if problems:
            raise RuntimeError("verification after enable failed: " + "; ".join(problems))
        report.verified = _checked(report.before) + [f"function resolves to {target}"]
        step("verified: " + ", ".join(report.verified))
        report.mapping = final
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        step(f"FAILED: {report.error}; rolling back")
        _roll_back(backend, mapping_uuid, current, was_enabled, timeout, step, report.before)
        report.rolled_back = True
        report.mapping = backend.get(mapping_uuid)
        report.seconds = round(time.monotonic() - started, 3)
        raise SwapFailed(f"swap of {mapping_uuid} to {target} failed and was rolled back: {report.error}",
                         report) from exc
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _roll_back(backend: MappingBackend, mapping_uuid: str, original: Mapping, was_enabled: bool, timeout: float,
               step: Callable[[str], None], before: PositionSnapshot) -> None:
    """Back to the original function and enabled state (the mapping, and so its position, is the same);
    checkpoints that moved while disabled are put back where they were (where the backend can)."""
    deadline = time.monotonic() + timeout
    while True:  # a transitional state refuses updates: wait for it to settle first
        m = backend.get(mapping_uuid)
        if m is None:
            raise MappingNotFound(mapping_uuid)
        if m.state in ("Enabled", "Disabled") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if m.state == "Enabled":
        backend.update(mapping_uuid, enabled=False)
        backend.wait_for_state(mapping_uuid, "Disabled", timeout)
        step("rollback: Disabled")
    if not backend.targets(m, original.function_name):
        backend.update(mapping_uuid, function_name=original.function_name)
        backend.wait_for_state(mapping_uuid, "Disabled", timeout)
        step(f"rollback: FunctionName -> {original.function_name}")
    if before.get("checkpoints") and _compare_checkpoints(before["checkpoints"],
                                                          backend.positions(mapping_uuid).get("checkpoints", {}),
                                                          exact=True):
        if backend.restore_positions(mapping_uuid, before):
            step("rollback: shard checkpoints restored")
    if was_enabled:
        backend.update(mapping_uuid, enabled=True)
        backend.wait_for_state(mapping_uuid, "Enabled", timeout)
        step("rollback: Enabled")


def _describe(snapshot: PositionSnapshot) -> str:
    if "checkpoints" in snapshot:
        return f"{len(snapshot['checkpoints'])} shard checkpoint(s)"
    return ", ".join(f"{k}={v}" for k, v in snapshot.items())


def _checked(snapshot: PositionSnapshot) -> list[str]:
    if "checkpoints" in snapshot:
        return [f"{len(snapshot['checkpoints'])} shard checkpoint(s) unchanged"]
    return [f"{k} unchanged" for k in ("uuid", "event_source_arn", "starting_position") if k in snapshot]


def swap(backend: MappingBackend, mapping_uuid: str, to: str, *, timeout: float = 60.0) -> Mapping:
    """:func:`swap_verified`, returning the mapping (raises :class:`SwapFailed` after a rollback)."""
    report = swap_verified(backend, mapping_uuid, to, timeout=timeout)
    assert report.mapping is not None
    return report.mapping
