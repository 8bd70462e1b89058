"""The AWS :class:`~streams.backend.MappingBackend`: Lambda Event Source Mappings through boto3.

On AWS one mapping exists per day table (the rotation function creates them a day ahead);
``FunctionName`` is ``<function>:<alias>`` (``projector:blue``) and a swap re-points it.
"""

from __future__ import annotations

import time
from typing import Any

from streams.backend import MappingBusy, to_aws_settings
from streams.mapping import Mapping, split_function

__all__ = ["AwsMappingBackend"]


class AwsMappingBackend:
    """Mappings managed by Lambda.

    Args:
        client: a boto3 ``lambda`` client.
        poll: seconds between ``GetEventSourceMapping`` calls while waiting for a state.
    """

    def __init__(self, client: Any, *, poll: float = 1.0) -> None:
        self.client = client
        self.poll = poll

    def create(self, *, event_source_arn: str, function_name: str, starting_position: str = "TRIM_HORIZON",
               enabled: bool = True, **settings: Any) -> Mapping:
        resp = self.client.create_event_source_mapping(
            EventSourceArn=event_source_arn, FunctionName=function_name, StartingPosition=starting_position,
            Enabled=enabled, **to_aws_settings(settings))
        return self._mapping(resp)

    def get(self, mapping_uuid: str) -> Mapping | None:
        try:
            return self._mapping(self.client.get_event_source_mapping(UUID=mapping_uuid))
        except self.client.exceptions.ResourceNotFoundException:
            return None

    def list(self, *, function_name: str | None = None, event_source_arn: str | None = None) -> list[Mapping]:
        kwargs: dict[str, Any] = {}
        if event_source_arn is not None:
            kwargs["EventSourceArn"] = event_source_arn
        if function_name is not None and ":" in function_name:
            kwargs["FunctionName"] = function_name
        out: list[Mapping] = []
        for page in self.client.get_paginator("list_event_source_mappings").paginate(**kwargs):
            for item in page.get("EventSourceMappings", []):
                m = self._mapping(item)
                if function_name is not None and function_name not in (m.function_name, m.function_base_name):
                    continue
                out.append(m)
        return out

    def update(self, mapping_uuid: str, *, function_name: str | None = None, enabled: bool | None = None,
               **settings: Any) -> Mapping:
        params: dict[str, Any] = to_aws_settings(settings)
        if function_name is not None:
            params["FunctionName"] = function_name
        if enabled is not None:
            params["Enabled"] = enabled
        try:
            resp = self.client.update_event_source_mapping(UUID=mapping_uuid, **params)
        except self.client.exceptions.ResourceInUseException as exc:
            raise MappingBusy(str(exc)) from exc
        return self._mapping(resp)

    def delete(self, mapping_uuid: str) -> None:
        self.client.delete_event_source_mapping(UUID=mapping_uuid)

    def wait_for_state(self, mapping_uuid: str, state: str, timeout: float = 300.0) -> Mapping:
        deadline = time.monotonic() + timeout
        while True:
            m = self.get(mapping_uuid)
            if m is None:
                raise LookupError(mapping_uuid)
            if m.state == state:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"mapping {mapping_uuid} is {m.state}, not {state}, after {timeout}s")
            time.sleep(self.poll)

    def positions(self, mapping_uuid: str) -> dict[str, Any]:
        """What identifies the position: Lambda has no API for an ESM's shard checkpoints.

        The position lives inside the mapping, so it is kept as long as the *same* mapping (UUID,
        source, starting position) is retargeted, never deleted and re-created; that is what a
        swap can verify on AWS. ``LastProcessingResult`` is reported alongside.
        """
        try:
            resp = self.client.get_event_source_mapping(UUID=mapping_uuid)
        except self.client.exceptions.ResourceNotFoundException:
            return {}
        return {"uuid": resp.get("UUID"), "event_source_arn": resp.get("EventSourceArn"),
                "starting_position": resp.get("StartingPosition"), "state": resp.get("State"),
                "last_processing_result": resp.get("LastProcessingResult")}

    def targets(self, mapping: Mapping, function_name: str) -> bool:
        """``projector:green`` is targeted when the mapping names that alias or the version it points to
        (moto, and ARNs resolved elsewhere, report ``projector:<version>``)."""
        if mapping.function_name == function_name:
            return True
        name, qualifier = split_function(function_name)
        got_name, got_qualifier = split_function(mapping.function_name)
        if got_name != name or qualifier is None or got_qualifier is None:
            return False
        try:
            alias = self.client.get_alias(FunctionName=name, Name=qualifier)
        except self.client.exceptions.ResourceNotFoundException:
            return False
        return bool(alias.get("FunctionVersion") == got_qualifier)

    def restore_positions(self, mapping_uuid: str, snapshot: dict[str, Any]) -> bool:
        """Impossible on AWS: a mapping's shard positions cannot be set through the API."""
        return False

    @staticmethod
    def _mapping(resp: dict[str, Any]) -> Mapping:
        d = dict(resp)
        d.pop("ResponseMetadata", None)
        fn = d.get("FunctionArn", "")
        # GetEventSourceMapping returns the function ARN (with qualifier); keep "name[:alias]".
        d["FunctionName"] = _name_from_arn(fn) if fn else d.get("FunctionName", "")
        if "Enabled" not in d:
            d["Enabled"] = d.get("State") in ("Enabled", "Enabling", "Creating", "Updating")
        return Mapping.from_dict(d)


def _name_from_arn(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) >= 7 and parts[5] == "function":
        name = parts[6]
        return f"{name}:{parts[7]}" if len(parts) > 7 else name
    return split_function(arn)[0]
