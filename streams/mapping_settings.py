"""The projector mapping's settings: one source for the local runtime and for AWS.

The rotation function (``CreateEventSourceMapping`` for every new day table), ``streamfold deploy``
(mappings it creates) and the local ``streamfold up`` mapping all start from
:data:`PROJECTOR_MAPPING`, so the invariants are tested under the settings production uses. A test
may override a field (``PROJECTOR_MAPPING.create_args(maximum_batching_window_in_seconds=0)``)
to run faster; the settings themselves change only here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from streams.mapping import REPORT_BATCH_ITEM_FAILURES, Mapping

__all__ = ["PROJECTOR_MAPPING", "ProjectorMappingSettings"]


@dataclass(frozen=True)
class ProjectorMappingSettings:
    """How a day table's stream feeds the projector (the ``CreateEventSourceMapping`` settings).

    Attributes:
        batch_size: records per invocation at most.
        maximum_batching_window_in_seconds: wait up to this long to fill a batch. The projector
            writes each touched item once per invocation, so fuller batches cost fewer write units
            per event (docs/PERFORMANCE.md); 5 s of extra lag is fine for dashboards.
        bisect_batch_on_function_error: split a failing batch to isolate a poison record.
        maximum_retry_attempts: retries of a failing batch before it goes to the on-failure destination.
        maximum_record_age_in_seconds: records older than this are given up on (86,400 s = a day:
            streams keep 24 hours, so older records would be trimmed anyway).
        parallelization_factor: concurrent batches per shard (``ParallelizationFactor``, 1..10). Records
            are dealt by item key: those of one item stay in order in one batch, and the shard's
            checkpoint moves past a record only once it and every record before it are done. 1, Lambda's
            default: every extra batch splits what one batch would share, so the items they share (the
            tenant's catalog, busy accounts' items) are written once per batch instead of once and their
            conditional writes collide; the exactness windows widen; and locally it adds no throughput
            (docs/ARCHITECTURE.md, "Past one writer", has the figures). Raise it for a day whose shards
            fall behind (the ``IteratorAge`` alarm): deploy updates the mappings in place.
        starting_position: where a new mapping starts (``TRIM_HORIZON``: a day table mapped late
            still delivers every record).
        function_response_types: the projector reports partial batch failures.
    """

    batch_size: int = 100
    maximum_batching_window_in_seconds: int = 5
    bisect_batch_on_function_error: bool = True
    maximum_retry_attempts: int = 3
    maximum_record_age_in_seconds: int = 86400
    parallelization_factor: int = 1
    starting_position: str = "TRIM_HORIZON"
    function_response_types: tuple[str, ...] = (REPORT_BATCH_ITEM_FAILURES,)

    def create_args(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of :meth:`streams.backend.MappingBackend.create` (no source, function or
        destination), with ``overrides`` applied."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown mapping setting(s) {sorted(unknown)}")
        values = dataclasses.asdict(dataclasses.replace(self, **overrides))
        values["function_response_types"] = list(values["function_response_types"])
        return values

    def update_args(self, mapping: Mapping) -> dict[str, Any]:
        """The settings of ``mapping`` that differ from these, as ``update`` keyword arguments
        (``starting_position`` cannot be updated and is left out)."""
        out: dict[str, Any] = {}
        for name, value in self.create_args().items():
            if name == "starting_position":
                continue
            current = getattr(mapping, name)
            if (list(current) if isinstance(current, tuple) else current) != value:
                out[name] = value
        return out


PROJECTOR_MAPPING = ProjectorMappingSettings()
"""The settings every projector mapping uses, locally and on AWS."""
