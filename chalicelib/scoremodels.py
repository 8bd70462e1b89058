"""Per-tenant score models, versioned in the control table."""

from __future__ import annotations

import time
from typing import Any

from chalicelib import keys
from chalicelib.views import from_ddb, to_ddb
from projections.health import MAX_COOLDOWN_HOURS, ScoreModel, default_model

__all__ = ["MODEL_LIMITS", "ModelFieldError", "ScoreModelStore", "check_model_limits"]

#: Bounds a stored model must respect (beyond ScoreModel's own rules): every number must be storable in
#: DynamoDB and usable in date arithmetic, and the model item must stay far below 400 KB.
MODEL_LIMITS: dict[str, tuple[float, float]] = {
    "weight": (0, 1000),
    "yellow_from": (1, 99),
    "green_from": (2, 100),
    "alert_drop": (0, 100),
    "cooldown_hours": (0, 24 * 365),
}
MAX_KEY_FEATURES = 50
MAX_FEATURE_BYTES = 256


class ModelFieldError(ValueError):
    """A score model field outside its bounds (``field`` and ``limit`` go into the 400 body)."""

    def __init__(self, field: str, message: str, limit: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.limit = limit


def _number_in(field: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not lo <= value <= hi:
        raise ModelFieldError(field, f"must be a number between {lo:g} and {hi:g}", f"{lo:g}..{hi:g}")


def check_model_limits(data: dict[str, Any]) -> None:
    """Raise :class:`ModelFieldError` for any value outside :data:`MODEL_LIMITS` (before the model's own rules)."""
    for name in ("yellow_from", "green_from", "alert_drop", "cooldown_hours"):
        if name in data:
            _number_in(name, data[name], *MODEL_LIMITS[name])
    factors = data.get("factors")
    if isinstance(factors, list):
        if len(factors) > 20:
            raise ModelFieldError("factors", "has more than 20 entries", 20)
        for i, f in enumerate(factors):
            if isinstance(f, dict) and "weight" in f:
                _number_in(f"factors[{i}].weight", f["weight"], *MODEL_LIMITS["weight"])
    features = data.get("key_features")
    if isinstance(features, list):
        if len(features) > MAX_KEY_FEATURES:
            raise ModelFieldError("key_features", f"has {len(features)} entries; the limit is {MAX_KEY_FEATURES}",
                                  MAX_KEY_FEATURES)
        for i, f in enumerate(features):
            if isinstance(f, str) and len(f.encode("utf-8", "surrogatepass")) > MAX_FEATURE_BYTES:
                raise ModelFieldError(f"key_features[{i}]", f"is longer than {MAX_FEATURE_BYTES} bytes",
                                      MAX_FEATURE_BYTES)


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
        check_model_limits(data)
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
