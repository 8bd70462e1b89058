"""The ``streamfold up`` component that runs the local event source mappings (default projector mapping + runtime)."""

from __future__ import annotations

from typing import Any, Protocol

from chalicelib import db
from chalicelib.log import logger
from chalicelib.settings import Settings
from streams.local_backend import LocalMappingBackend
from streams.mapping import Mapping, family_source_arn
from streams.poller import RuntimeOptions
from streams.runtime import LocalRuntime
from streams.store import ControlStore


class StackLike(Protocol):
    """What a component needs of the stack: its settings."""

    @property
    def settings(self) -> Settings: ...


__all__ = ["DEFAULT_PROJECTOR_MAPPING", "LocalMappings"]

DEFAULT_PROJECTOR_MAPPING: dict[str, Any] = {
    "function_name": "projector:blue",
    # Wait up to a second to fill a batch: fewer, fuller projector invocations (cheaper writes).
    "maximum_batching_window_in_seconds": 1,
    "starting_position": "TRIM_HORIZON",
    "function_response_types": ["ReportBatchItemFailures"],
    "bisect_batch_on_function_error": True,
    "maximum_retry_attempts": 3,
    "maximum_record_age_in_seconds": -1,
}


class LocalMappings:
    """Ensure the default ``projector`` mapping for the stack's prefix and run every mapping."""

    def __init__(self, stack: StackLike, options: RuntimeOptions | None = None) -> None:
        self.stack = stack
        self.options = options or RuntimeOptions()
        self.runtime: LocalRuntime | None = None
        self.mapping: Mapping | None = None

    def start(self) -> LocalMappings:
        settings = self.stack.settings
        store = ControlStore(db.get_client(), settings.control_table)
        backend = LocalMappingBackend(store, db.get_client(), db.get_streams_client())
        self.mapping = backend.ensure(event_source_arn=family_source_arn(settings.table_prefix),
                                      **DEFAULT_PROJECTOR_MAPPING)
        self.runtime = LocalRuntime(store, db.get_client(), db.get_streams_client(), self.options).start()
        logger.info("local event source mappings running", extra={"projector_mapping": self.mapping.uuid})
        return self

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
