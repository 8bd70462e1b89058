"""Score alerts end to end: outbox written with the summary, delivered once, cooldown, webhook and SNS."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from app import app, on_outbox_schedule
from chalicelib import db, keys, services
from chalicelib.settings import reset_settings
from chalicelib.versions import VIEW_VERSION
from projections.events import Event
from streams import handler as stream_handler
from streams.alerts import AlertDeliverer, AlertDeliveryError, Outbox
from tests.functional.test_projector import fresh_projector, ingest, stream_records, summary, wire
from tests.helpers.fold import view_content
from tests.helpers.streams import day_table

__all__ = ["fresh_projector"]  # the autouse fixture, re-exported so pytest uses it here too

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "acct-a"


class Receiver:
    """A webhook endpoint on loopback that records what it is sent."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def healthy_history(start: datetime, days: int = 25, users: int = 3, offset: int = 0) -> list[list[dict[str, Any]]]:
    """Every user of the account active every day for ``days`` days up to ``start`` (a green account)."""
    n = offset
    batches = [[wire(n := n + 1, "group", start - timedelta(days=days), userId=f"u{u}", groupId=ACCOUNT,
                     traits={"name": "Acme"}) for u in range(users)]]
    for d in range(days - 1, -1, -1):
        batches.append([wire(n := n + 1, "track", start - timedelta(days=d, minutes=u), userId=f"u{u}",
                             event="Report Created", context={"groupId": ACCOUNT}) for u in range(users)])
    return batches


def project(prefix: str, tenant_id: str, batches: list[list[dict[str, Any]]], now: datetime,
            known: int = 0) -> tuple[list[dict[str, Any]], Any]:
    """Ingest batches, read back *all* stream records of the day table and project them at ``now``."""
    chunks = ingest(prefix, tenant_id, batches)
    records = stream_records(db.get_client(), day_table(prefix), known + chunks)
    proj = stream_handler.get_writer(VIEW_VERSION, prefix)
    response, stats = stream_handler.handle_batch(records, writer=proj, now=now)
    assert response == {"batchItemFailures": []}
    return records, stats


def band(prefix: str, tenant_id: str) -> str:
    return str(summary(prefix, tenant_id, ACCOUNT).attrs["band"])


def outbox(prefix: str) -> Outbox:
    return Outbox(db.get_client(), keys.control_table_name(prefix))


def test_band_change_is_alerted_once_with_cooldown(prefix: str, tenant: dict[str, str], receiver: Receiver) -> None:
    tid = tenant["tenant_id"]
    services.tenants().put_settings(tid, {"webhook_url": receiver.url})
    deliverer = AlertDeliverer(outbox(prefix), services.tenants(), timeout=5)
    proj = stream_handler.get_writer(VIEW_VERSION, prefix)
    t0 = datetime.now(UTC)

    records, stats = project(prefix, tid, healthy_history(t0), t0)
    assert band(prefix, tid) == "green" and stats.alerts == 0  # a first score is no change
    assert deliverer.deliver_all() == 0 and receiver.received == []

    # Forty quiet days later the account is red: one alert, delivered once.
    t_red = t0 + timedelta(days=40)
    assert proj.rescore(tid, [ACCOUNT], t_red) == 1
    assert band(prefix, tid) == "red"
    assert deliverer.deliver_all() == 1
    [(headers, body)] = receiver.received
    assert body["kind"] == "band_changed" and body["account_id"] == ACCOUNT and body["tenant_id"] == tid
    assert body["previous"]["band"] == "green" and body["current"]["band"] == "red"
    assert headers["X-Streamfold-Alert-Id"] == body["alert_id"]

    # The same rescore, and the same batch re-delivered at that time, raise nothing new.
    assert proj.rescore(tid, [ACCOUNT], t_red) == 0
    before = view_content(proj.store)
    _, again = stream_handler.handle_batch(records, writer=proj, now=t_red)
    assert again.alerts == 0 and view_content(proj.store) == before  # only its delta pages are rewritten
    assert deliverer.deliver_all() == 0
    assert len(receiver.received) == 1 and len(outbox(prefix).all(tid)) == 1

    # An hour later usage is back (red -> yellow): a band change inside the cooldown is suppressed...
    t_flap = t_red + timedelta(hours=1)
    batch = [[wire(5000 + u, "track", t_flap - timedelta(minutes=u), userId=f"u{u}", event="Report Created",
                   context={"groupId": ACCOUNT}) for u in range(3)]]
    records, stats = project(prefix, tid, batch, t_flap, known=len(records))
    assert band(prefix, tid) != "red" and stats.alerts == 0
    assert deliverer.deliver_all() == 0 and len(outbox(prefix).all(tid)) == 1

    # ...and once the cooldown has passed, the next band change (back to red) is alerted again.
    cooldown = proj.models.current(tid).cooldown_hours
    t_late = t_flap + timedelta(hours=cooldown, days=30)
    assert proj.rescore(tid, [ACCOUNT], t_late) == 1
    assert band(prefix, tid) == "red"
    assert deliverer.deliver_all() == 1
    assert [b["current"]["band"] for _, b in receiver.received] == ["red", "red"]
    assert receiver.received[1][1]["previous"]["band"] in ("yellow", "green")  # the flap's band, stored
    assert len({b["alert_id"] for _, b in receiver.received}) == 2
    assert all(item["status"] == "delivered" for item in outbox(prefix).all(tid))
    assert deliverer.deliver_all() == 0


def test_failed_webhook_keeps_the_alert_pending(prefix: str, tenant: dict[str, str], receiver: Receiver) -> None:
    tid = tenant["tenant_id"]
    services.tenants().put_settings(tid, {"webhook_url": "http://127.0.0.1:9/nothing-listens-here"})
    proj = stream_handler.get_writer(VIEW_VERSION, prefix)
    t0 = datetime.now(UTC)
    project(prefix, tid, healthy_history(t0), t0)
    assert proj.rescore(tid, [ACCOUNT], t0 + timedelta(days=40)) == 1
    deliverer = AlertDeliverer(outbox(prefix), services.tenants(), timeout=2)
    assert deliverer.deliver_all() == 0
    assert [i["status"] for i in outbox(prefix).all(tid)] == ["pending"]
    services.tenants().put_settings(tid, {"webhook_url": receiver.url})  # the tenant fixes its URL
    assert deliverer.deliver_all() == 1 and len(receiver.received) == 1


def _one_pending_alert(prefix: str, tid: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A healthy account that goes quiet for 40 days: one pending alert; fake AWS credentials for moto."""
    proj = stream_handler.get_writer(VIEW_VERSION, prefix)
    t0 = datetime.now(UTC)
    project(prefix, tid, healthy_history(t0), t0)
    assert proj.rescore(tid, [ACCOUNT], t0 + timedelta(days=40)) == 1
    [pending] = outbox(prefix).pending(tid)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(var, "testing")
    return pending


def test_alerts_are_published_to_sns(prefix: str, tenant: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tid = tenant["tenant_id"]
    pending = _one_pending_alert(prefix, tid, monkeypatch)
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="streamfold-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        deliverer = AlertDeliverer(outbox(prefix), services.tenants(), sns_client=sns, topic_arn=topic)
        assert deliverer.deliver_all() == 1
        assert deliverer.deliver_all() == 0  # marked delivered: never published twice
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)["Messages"]
    [msg] = messages
    envelope = json.loads(msg["Body"])
    alert = json.loads(envelope["Message"])
    assert alert["alert_id"] == pending["alert_id"] and alert["kind"] == "band_changed"
    assert alert["current"]["band"] == "red" and alert["account_id"] == ACCOUNT
    assert envelope["MessageAttributes"]["alert_id"]["Value"] == pending["alert_id"]
    assert envelope["MessageAttributes"]["tenant_id"]["Value"] == tid
    assert [i["status"] for i in outbox(prefix).all(tid)] == ["delivered"]


def test_first_activity_after_identity_only_data_raises_no_alert(tenant: dict[str, str], ddb: Any,
                                                                 prefix: str) -> None:
    """An account scored before any usage (group call only) is not 'changing band' when usage starts."""


    now = datetime.now(UTC)
    proj = stream_handler.get_writer(VIEW_VERSION, prefix)
    tid = tenant["tenant_id"]
    group = Event.from_wire({"messageId": "g1", "type": "group", "userId": "u1", "groupId": "acme",
                             "traits": {"name": "Acme", "seats": 1},
                             "timestamp": (now - timedelta(hours=2)).isoformat()})
    proj.record({tid: [group]}, now)
    usage = [Event.from_wire({"messageId": f"t{i}", "type": "track", "userId": "u1", "groupId": "acme",
                              "event": "Report Created", "timestamp": (now - timedelta(days=i)).isoformat()})
             for i in range(20)]
    stats = proj.record({tid: usage}, now)
    assert stats.alerts == 0
    assert proj.outbox.all(tid) == []


# --- the scheduled outbox drain on AWS (app.on_outbox_schedule, moto SNS) ------------------------

SCHEDULED_EVENT = {"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event",
                   "source": "aws.events", "account": "123456789012", "time": "2025-03-09T23:01:00Z",
                   "region": "us-east-1", "resources": [], "detail": {}}


def _sqs_inbox(sns: Any, sqs: Any, topic: str) -> str:
    queue = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return str(queue)


def _received(sqs: Any, queue: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return out
        for m in batch:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])


def test_scheduled_drain_publishes_each_alert_once_and_retries_failures(
        prefix: str, tenant: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    [source] = [s for s in app.event_sources if s.name == "on_outbox_schedule"]
    assert source.schedule_expression.to_string() == "rate(1 minute)"  # type: ignore[attr-defined]
    tid = tenant["tenant_id"]
    pending = _one_pending_alert(prefix, tid, monkeypatch)
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        # SNS down (the topic is gone): nothing is marked, the run fails loudly (Errors alarm).
        monkeypatch.setenv("STREAMFOLD_ALERTS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:missing")
        reset_settings()
        with pytest.raises(AlertDeliveryError, match="1 alert"):
            on_outbox_schedule(SCHEDULED_EVENT, None)  # type: ignore[no-untyped-call]
        assert [i["status"] for i in outbox(prefix).all(tid)] == ["pending"]

        topic = sns.create_topic(Name=f"{prefix}score-alerts")["TopicArn"]
        queue = _sqs_inbox(sns, sqs, topic)
        monkeypatch.setenv("STREAMFOLD_ALERTS_TOPIC_ARN", topic)
        reset_settings()
        # The next minute's run retries it: published once, then never again.
        assert on_outbox_schedule(SCHEDULED_EVENT, None) == {"delivered": 1, "failed": 0}  # type: ignore[no-untyped-call]
        assert on_outbox_schedule(SCHEDULED_EVENT, None) == {"delivered": 0, "failed": 0}  # type: ignore[no-untyped-call]
        messages = _received(sqs, queue)
    reset_settings()
    [envelope] = messages
    assert json.loads(envelope["Message"])["alert_id"] == pending["alert_id"]
    assert envelope["MessageAttributes"]["alert_id"]["Value"] == pending["alert_id"]
    assert envelope["MessageAttributes"]["tenant_id"]["Value"] == tid
    [item] = outbox(prefix).all(tid)
    assert item["status"] == "delivered" and item["alert_id"] == pending["alert_id"]


def test_pending_alerts_behind_many_delivered_ones_are_found(prefix: str, tenant: dict[str, str]) -> None:
    """DynamoDB applies Limit before the filter: 150 old delivered alerts must not hide a new one."""
    tid, box = tenant["tenant_id"], outbox(prefix)
    client = db.get_client()
    pk = {"S": keys.outbox_pk(tid)}
    requests = [{"PutRequest": {"Item": {"pk": pk, "sk": {"S": f"2020-01-01T00:00:{i:03d}#a{i}"},
                                         "status": {"S": "delivered"}, "alert_id": {"S": f"a{i}"},
                                         "alert_json": {"S": "{}"}}}} for i in range(150)]
    for start in range(0, len(requests), 25):
        client.batch_write_item(RequestItems={box.table: requests[start:start + 25]})
    client.put_item(TableName=box.table, Item={"pk": {"S": keys.outbox_pk(tid)}, "sk": {"S": "2030-01-01#new"},
                                               "status": {"S": "pending"}, "alert_id": {"S": "new"},
                                               "alert_json": {"S": "{}"}})
    assert [i["alert_id"] for i in box.pending(tid)] == ["new"]
    assert len(box.pending(tid, limit=1)) == 1
