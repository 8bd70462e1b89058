"""One tenant's settings cannot stop another tenant's projection or rescoring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from chalicelib import keys, services
from chalicelib.ratelimit import RateLimiter
from chalicelib.scoremodels import ScoreModelStore
from chalicelib.settings import get_settings
from chalicelib.views import to_ddb
from projections.health import MAX_COOLDOWN_HOURS, HealthScore, band_change, default_model
from streams.handler import handle_batch
from streams.rescore import rescore_all
from tests.helpers.streams import day_table

pytestmark = pytest.mark.timeout(60)


def test_absurd_cooldown_neither_overflows_nor_is_accepted(prefix: str, ddb: Any) -> None:
    tid = services.tenants().create("Absurd")["tenant_id"]
    models = ScoreModelStore(ddb, get_settings().control_table)
    with pytest.raises(ValueError, match="cooldown_hours"):
        models.put(tid, {**default_model().to_dict(), "cooldown_hours": 10**12})
    # A model stored before the bound existed (written as it was then) still scores and alerts.
    legacy = {**default_model().to_dict(), "version": 2, "cooldown_hours": 10**12}
    ddb.put_item(TableName=get_settings().control_table,
                 Item=to_ddb({"pk": keys.tenant_pk(tid), "sk": keys.score_model_sk(2), "model": legacy}))
    model = models.current(tid)
    assert model.cooldown_hours == 10**12
    now = datetime(2026, 1, 10, tzinfo=UTC)
    prev = HealthScore(80, "green", (), 0, now - timedelta(days=1), 2)
    new = HealthScore(20, "red", (), 0, now, 2)
    assert band_change(prev, new, model, last_alert_at=now - timedelta(days=2)) is None  # within a clamped year
    assert band_change(prev, new, model, last_alert_at=now - timedelta(hours=MAX_COOLDOWN_HOURS + 1)) == "band_changed"


def test_rescoring_goes_on_for_other_tenants_when_one_fails(prefix: str, ddb: Any, server: str) -> None:
    good = services.tenants().create("Good")
    bad = services.tenants().create("Bad")
    # Bad's score model item is corrupt (not a model at all): loading it raises for that tenant only.
    ddb.put_item(TableName=get_settings().control_table,
                 Item=to_ddb({"pk": keys.tenant_pk(bad["tenant_id"]), "sk": keys.score_model_sk(9),
                              "model": {"factors": "garbage"}}))
    for creds in (bad, good):
        r = requests.post(f"{server}/v1/group", json={"groupId": "acme", "userId": "u1"},
                          auth=(creds["write_key"], ""), headers={"Accept": "application/json"})
        assert r.status_code == 200
    # The projector, run on the stored chunks of both tenants.
    items = ddb.scan(TableName=day_table(prefix))["Items"]
    records = [{"eventID": str(i), "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:dynamodb:us-east-1:0:table/x/stream/y",
                "dynamodb": {"SequenceNumber": f"{i:021d}", "SizeBytes": 1, "StreamViewType": "NEW_IMAGE",
                             "Keys": {"pk": it["pk"]}, "NewImage": it}} for i, it in enumerate(items, 1)]
    # One tenant per record: the mapping bisects a failing batch down to the bad tenant's record.
    failed = []
    for rec in records:
        try:
            handle_batch([rec])
        except Exception:
            failed.append(rec["dynamodb"]["NewImage"]["tenant"]["S"])
    assert set(failed) <= {bad["tenant_id"]}
    assert services.query().account_ids(good["tenant_id"]) == ["acme"]
    out = rescore_all()
    assert good["tenant_id"] in out and bad["tenant_id"] not in out


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    rl = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [rl.take("k").allowed for _ in range(4)] == [True, True, True, False]
    assert rl.take("k").retry_after == 1
    assert rl.take("other").allowed
    now[0] += 0.5
    assert rl.take("k").allowed and not rl.take("k").allowed
    now[0] += 10
    assert [rl.take("k").allowed for _ in range(4)] == [True, True, True, False]  # never more than the burst
