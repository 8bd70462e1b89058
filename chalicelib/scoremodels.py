"""Per-tenant score models, versioned in the control table."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist

from chalicelib import keys
from chalicelib.records import ScoreModelRecord, TenantSettingsRecord, bind, botocore_errors, plain
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
    """Reads the newest model version of a tenant; a PUT writes the next version (never overwrites).

    Versions are :class:`~chalicelib.records.ScoreModelRecord` items (``SCOREMODEL#<version:06d>``, so the
    newest is the first of a descending Query).
    """

    def __init__(self, client: Any, control_table: str) -> None:
        self._client = client
        self._table = control_table
        self._cache: dict[str, tuple[float, ScoreModel]] = {}
        self._records = bind(ScoreModelRecord, control_table, client)
        self._settings = bind(TenantSettingsRecord, control_table, client)

    #: How long a cached model is trusted (other containers see a new version within this time).
    TTL_SECONDS = 60.0

    def current(self, tenant_id: str, *, cached: bool = False) -> ScoreModel:
        hit = self._cache.get(tenant_id)
        if cached and hit is not None and time.monotonic() - hit[0] < self.TTL_SECONDS:
            return hit[1]
        with botocore_errors():
            newest = next(iter(self._records.query(
                keys.tenant_pk(tenant_id), self._records.sk.startswith(keys.SCORE_MODEL_PREFIX),
                scan_index_forward=False, limit=1, consistent_read=True)), None)
        if newest is not None:
            model = ScoreModel.from_dict(plain(newest.model))
        else:
            model = default_model(tuple(self._key_features(tenant_id)))
        self._cache[tenant_id] = (time.monotonic(), model)
        return model

    def _key_features(self, tenant_id: str) -> list[str]:
        try:
            with botocore_errors():
                settings = self._settings.get(keys.tenant_pk(tenant_id), keys.SETTINGS_SK)
        except DoesNotExist:
            return []
        return [str(x) for x in settings.key_features or []]

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
            record = self._records(keys.tenant_pk(tenant_id), keys.score_model_sk(version), model=model.to_dict())
            try:
                with botocore_errors():
                    record.save(condition=self._records.pk.does_not_exist())
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                continue  # another writer took this version: read the newest again
            self._cache[tenant_id] = (time.monotonic(), model)
            return model
        raise RuntimeError("could not store score model: too many concurrent updates")
