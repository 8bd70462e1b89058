"""Per-tenant score models, versioned in the control table."""

from __future__ import annotations

import time
from typing import Any

from chalicelib import keys
from chalicelib.views import from_ddb, to_ddb
from projections.health import MAX_COOLDOWN_HOURS, ScoreModel, default_model

__all__ = ["ScoreModelStore"]


class ScoreModelStore:
    """Reads the newest model version of a tenant; a PUT writes the next version (never overwrites)."""

    def __init__(self, client: Any, control_table: str) -> None:
        self._client = client
        self._table = control_table
        self._cache: dict[str, tuple[float, ScoreModel]] = {}

    #: How long a cached model is trusted (other containers see a new version within this time).
    TTL_SECONDS = 60.0

    def current(self, tenant_id: str, *, cached: bool = False) -> ScoreModel:
        hit = self._cache.get(tenant_id)
        if cached and hit is not None and time.monotonic() - hit[0] < self.TTL_SECONDS:
            return hit[1]
        resp = self._client.query(
            TableName=self._table, KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
            ExpressionAttributeValues={":p": {"S": keys.tenant_pk(tenant_id)}, ":s": {"S": keys.SCORE_MODEL_PREFIX}},
            ScanIndexForward=False, Limit=1, ConsistentRead=True)
        if resp["Items"]:
            model = ScoreModel.from_dict(from_ddb(resp["Items"][0])["model"])
        else:
            model = default_model(tuple(self._key_features(tenant_id)))
        self._cache[tenant_id] = (time.monotonic(), model)
        return model

    def _key_features(self, tenant_id: str) -> list[str]:
        resp = self._client.get_item(TableName=self._table,
                                     Key={"pk": {"S": keys.tenant_pk(tenant_id)}, "sk": {"S": keys.SETTINGS_SK}})
        item = from_ddb(resp.get("Item") or {})
        return [str(x) for x in item.get("key_features") or []]

    def put(self, tenant_id: str, data: dict[str, Any]) -> ScoreModel:
        """Validate ``data`` and store it as the next version. Raises ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError("body: score model must be an object")
        data = {k: v for k, v in data.items() if k != "version"}
        for _ in range(5):
            version = self.current(tenant_id).version + 1
            model = ScoreModel.from_dict({**data, "version": version})
            if model.cooldown_hours > MAX_COOLDOWN_HOURS:
                raise ValueError(f"cooldown_hours must be at most {MAX_COOLDOWN_HOURS} (a year)")
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item=to_ddb({"pk": keys.tenant_pk(tenant_id), "sk": keys.score_model_sk(version),
                                 "model": model.to_dict()}),
                    ConditionExpression="attribute_not_exists(pk)")
                self._cache[tenant_id] = (time.monotonic(), model)
                return model
            except self._client.exceptions.ConditionalCheckFailedException:
                pass
        raise RuntimeError("could not store score model: too many concurrent updates")
