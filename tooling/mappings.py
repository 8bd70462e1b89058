"""The ``streamfold up`` component that runs the local event source mappings (default projector mapping + runtime)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from chalicelib import db
from chalicelib.log import logger
from chalicelib.settings import Settings
from streams.local_backend import LocalMappingBackend
from streams.mapping import Mapping, family_source_arn
from streams.mapping_settings import PROJECTOR_MAPPING
from streams.poller import RuntimeOptions
from streams.runtime import LocalRuntime
from streams.store import ControlStore


class StackLike(Protocol):
    """What a component needs of the stack: its settings."""

    @property
    def settings(self) -> Settings: ...


__all__ = ["DEFAULT_PROJECTOR_MAPPING", "LocalMappings"]

# The settings AWS uses (streams.mapping_settings), so the local runtime runs what production runs.
DEFAULT_PROJECTOR_MAPPING: dict[str, Any] = {"function_name": "projector:blue", **PROJECTOR_MAPPING.create_args()}


class LocalMappings:
    """Ensure the default ``projector`` mapping for the stack's prefix and run every mapping.

    An existing projector mapping (kept under ``.data/``) whose settings differ from
    :data:`~streams.mapping_settings.PROJECTOR_MAPPING` (plus ``mapping_overrides``) is updated in
    place: same UUID, same checkpoints.
    """

    def __init__(self, stack: StackLike, options: RuntimeOptions | None = None,
                 mapping_overrides: dict[str, Any] | None = None) -> None:
        self.stack = stack
        self.options = options or RuntimeOptions()
        self.mapping_overrides = dict(mapping_overrides or {})
        self.runtime: LocalRuntime | None = None
        self.mapping: Mapping | None = None

    def start(self) -> LocalMappings:
        settings = self.stack.settings
        store = ControlStore(db.get_client(), settings.control_table)
        backend = LocalMappingBackend(store, db.get_client(), db.get_streams_client())
        wanted = dataclasses.replace(PROJECTOR_MAPPING, **self.mapping_overrides)
        self.mapping = backend.ensure(event_source_arn=family_source_arn(settings.table_prefix),
                                      function_name=DEFAULT_PROJECTOR_MAPPING["function_name"],
                                      **wanted.create_args())
        changed = wanted.update_args(self.mapping)
        if changed:
            backend.wait_for_state(self.mapping.uuid, self.mapping.state if self.mapping.state in (
                "Enabled", "Disabled") else ("Enabled" if self.mapping.enabled else "Disabled"), 30.0)
            self.mapping = backend.update(self.mapping.uuid, **changed)
            logger.info("projector mapping settings updated", extra={"mapping": self.mapping.uuid, **changed})
        self.runtime = LocalRuntime(store, db.get_client(), db.get_streams_client(), self.options).start()
        logger.info("local event source mappings running", extra={"projector_mapping": self.mapping.uuid})
        return self

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
