"""The control table's PynamoDB records keep the item layout the raw boto3 code wrote (both directions).

The ``LEGACY_*`` items are exactly what ``TenantStore``, ``ScoreModelStore`` and ``set_active_view_version``
stored before the models (boto3's ``TypeSerializer`` / ``chalicelib.views.to_ddb`` on plain dicts): a stack
written by the old code keeps working after the upgrade, and an old process still running next to a new one
reads what the new one writes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib import keys, services
from chalicelib.db import API_TIMEOUTS, get_api_client
from chalicelib.records import SecretRecord, TenantRecord, bind
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.settings import get_settings
from chalicelib.tenants import TenantStore, hash_secret
from chalicelib.versions import active_view_version, set_active_view_version
from chalicelib.views import from_ddb, to_ddb
from projections.health import default_model

WRITE_KEY = "wk_legacy-write-key"
API_TOKEN = "at_legacy-api-token"
TID = "t_0123456789abcdef"
CREATED = "2026-01-02T03:04:05.678901+00:00"

LEGACY_TENANT_ITEMS = [
    {"pk": {"S": f"TENANT#{TID}"}, "sk": {"S": "META"}, "tenant_id": {"S": TID}, "name": {"S": "Legacy Co"},
     "created_at": {"S": CREATED}},
    {"pk": {"S": "TENANTS"}, "sk": {"S": TID}, "name": {"S": "Legacy Co"}, "created_at": {"S": CREATED}},
    {"pk": {"S": f"SECRET#{hash_secret(WRITE_KEY)}"}, "sk": {"S": "SECRET"}, "tenant_id": {"S": TID},
     "kind": {"S": "write"}},
    {"pk": {"S": f"SECRET#{hash_secret(API_TOKEN)}"}, "sk": {"S": "SECRET"}, "tenant_id": {"S": TID},
     "kind": {"S": "read"}},
    {"pk": {"S": f"TENANT#{TID}"}, "sk": {"S": "SETTINGS"}, "webhook_url": {"S": "https://hooks.example/x"},
     "key_features": {"L": [{"S": "Report Created"}, {"S": "Export Downloaded"}]}},
]


def _control() -> str:
    return get_settings().control_table


def _raw(ddb: Any, pk: str, sk: str) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=_control(), Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True)
                .get("Item") or {})


def test_tenant_items_written_by_the_raw_code_read_through_the_models(prefix: str, ddb: Any) -> None:
    for item in LEGACY_TENANT_ITEMS:
        ddb.put_item(TableName=_control(), Item=item)
    store = services.tenants()
    tenant = store.get(TID)
    assert tenant is not None and tenant.name == "Legacy Co"
    assert [(t.tenant_id, t.name) for t in store.list()] == [(TID, "Legacy Co")]
    assert store.resolve(WRITE_KEY, "write") == TID
    assert store.resolve(WRITE_KEY, "read") is None
    assert store.resolve(API_TOKEN, "read") == TID
    assert store.get_settings(TID) == {"webhook_url": "https://hooks.example/x",
                                       "key_features": ["Report Created", "Export Downloaded"]}
    assert store.revoke(API_TOKEN) == {"tenant_id": TID, "kind": "read"}
    assert store.revoke(API_TOKEN) is None
    assert store.resolve(API_TOKEN, "read") is None


def test_tenant_items_written_through_the_models_have_the_raw_layout(prefix: str, ddb: Any) -> None:
    creds = services.tenants().create("Modelled Co")
    tid = creds["tenant_id"]
    meta = _raw(ddb, keys.tenant_pk(tid), "META")
    created = meta["created_at"]["S"]
    assert meta == {"pk": {"S": f"TENANT#{tid}"}, "sk": {"S": "META"}, "tenant_id": {"S": tid},
                    "name": {"S": "Modelled Co"}, "created_at": {"S": created}}
    assert created.endswith("+00:00")  # datetime.isoformat(), as before (not PynamoDB's UTCDateTime format)
    assert _raw(ddb, "TENANTS", tid) == {"pk": {"S": "TENANTS"}, "sk": {"S": tid}, "name": {"S": "Modelled Co"},
                                         "created_at": {"S": created}}
    for secret, kind in ((creds["write_key"], "write"), (creds["api_token"], "read")):
        pk = f"SECRET#{hash_secret(secret)}"
        assert _raw(ddb, pk, "SECRET") == {"pk": {"S": pk}, "sk": {"S": "SECRET"}, "tenant_id": {"S": tid},
                                           "kind": {"S": kind}}
    services.tenants().put_settings(tid, {"webhook_url": "http://127.0.0.1:9/hook", "key_features": ["A", "B"]})
    assert _raw(ddb, keys.tenant_pk(tid), "SETTINGS") == {
        "pk": {"S": f"TENANT#{tid}"}, "sk": {"S": "SETTINGS"}, "webhook_url": {"S": "http://127.0.0.1:9/hook"},
        "key_features": {"L": [{"S": "A"}, {"S": "B"}]}}
    # put_settings replaces, as the raw PutItem did.
    services.tenants().put_settings(tid, {"key_features": ["C"]})
    assert services.tenants().get_settings(tid) == {"key_features": ["C"]}


def test_unknown_setting_is_refused_and_writes_nothing(tenant: dict[str, str], ddb: Any) -> None:
    with pytest.raises(ValueError, match="colour"):
        services.tenants().put_settings(tenant["tenant_id"], {"colour": "red"})
    assert _raw(ddb, keys.tenant_pk(tenant["tenant_id"]), "SETTINGS") == {}


def test_score_models_read_and_write_the_raw_layout(tenant: dict[str, str], ddb: Any) -> None:
    tid = tenant["tenant_id"]
    store = ScoreModelStore(ddb, _control())
    base = default_model().to_dict()
    factors = [{**base["factors"][0], "weight": 22.5}, *base["factors"][1:]]  # a float survives both ways
    legacy = {**base, "version": 3, "factors": factors, "alert_drop": 12, "key_features": ["Report Created"]}
    ddb.put_item(TableName=_control(),
                 Item=to_ddb({"pk": keys.tenant_pk(tid), "sk": keys.score_model_sk(3), "model": legacy}))
    assert store.current(tid).to_dict() == legacy
    stored = store.put(tid, {**legacy, "yellow_from": 35})
    assert stored.version == 4
    raw = _raw(ddb, keys.tenant_pk(tid), keys.score_model_sk(4))
    # The same attribute names and DynamoDB types as the raw code's to_ddb of the same dict.
    expected = to_ddb({"pk": keys.tenant_pk(tid), "sk": keys.score_model_sk(4), "model": stored.to_dict()})
    assert raw == expected
    assert from_ddb(raw)["model"] == {**legacy, "yellow_from": 35, "version": 4}


def test_default_model_uses_key_features_from_legacy_settings(prefix: str, ddb: Any) -> None:
    ddb.put_item(TableName=_control(), Item=LEGACY_TENANT_ITEMS[-1])
    model = ScoreModelStore(ddb, _control()).current(TID)
    assert model.key_features == ("Report Created", "Export Downloaded")


def test_active_view_record_reads_and_writes_the_raw_layout(prefix: str, ddb: Any) -> None:
    ddb.put_item(TableName=_control(), Item={"pk": {"S": "CONFIG"}, "sk": {"S": "ACTIVE_VIEW"},
                                             "version": {"N": "7"}, "promoted_at": {"S": "2026-01-01T00:00:00Z"}})
    assert active_view_version(ddb, _control(), cached=False) == 7
    set_active_view_version(ddb, _control(), 2)
    raw = _raw(ddb, "CONFIG", "ACTIVE_VIEW")
    assert raw["version"] == {"N": "2"}
    assert set(raw) == {"pk", "sk", "version", "promoted_at"}
    assert time.strptime(raw["promoted_at"]["S"], "%Y-%m-%dT%H:%M:%SZ")


def test_bound_models_are_cached_per_table_and_distinct(prefix: str, ddb: Any) -> None:
    a = bind(TenantRecord, _control(), ddb)
    assert bind(TenantRecord, _control(), ddb) is a
    other = bind(TenantRecord, f"{prefix}other-control", ddb)
    assert other is not a and other.Meta.table_name == f"{prefix}other-control"
    assert a.Meta.table_name == _control() and a.Meta.host == get_settings().dynamodb_endpoint
    assert bind(SecretRecord, _control(), ddb) is not a


def test_api_store_keeps_the_api_timeouts(prefix: str) -> None:
    model = bind(TenantRecord, _control(), get_api_client())
    assert model.Meta.read_timeout_seconds == API_TIMEOUTS["read_timeout"]
    assert model.Meta.max_retry_attempts == API_TIMEOUTS["total_max_attempts"] - 1


def test_storage_errors_surface_as_botocore_errors(prefix: str, ddb: Any) -> None:
    store = TenantStore(ddb, f"{prefix}no-such-table")
    with pytest.raises(ClientError) as raised:
        store.get("t_x")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
