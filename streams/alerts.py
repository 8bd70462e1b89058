"""Score alerts: an outbox in the control table, delivered to a webhook (local) or SNS (AWS).

The projector writes an alert in the same transaction as the account summary whose change
caused it, so a retried batch (which finds the summary already updated) never writes a second
alert, and a crash cannot lose one. Delivery is at-least-once with a stable id
(``X-Streamfold-Alert-Id`` header / SNS ``alert_id`` attribute) so receivers can drop repeats;
a delivered alert is marked with a conditional update and never sent again. Cooldown
(frequency control) is applied when the alert is raised: see ``health.band_change``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib import keys, services
from chalicelib.db import get_client, items
from chalicelib.log import logger
from chalicelib.settings import get_settings
from chalicelib.views import from_ddb, to_ddb
from projections.events import format_ts
from projections.health import HealthScore

__all__ = ["AlertDeliverer", "AlertDeliveryError", "Outbox", "alert_id", "drain_outbox"]


class AlertDeliveryError(RuntimeError):
    """Some alerts could not be sent this run; they stay pending and the next run retries them."""


class Outbox:
    """Builds outbox items and lists/marks them."""

    def __init__(self, client: Any, control_table: str) -> None:
        self.client = client
        self.table = control_table

    def alert(self, tenant_id: str, summary: dict[str, Any], prev: HealthScore | None, new: HealthScore,
              kind: str, now: datetime) -> dict[str, Any]:
        """The DynamoDB item of a new alert (written by the projector's transaction)."""
        aid = alert_id(tenant_id, summary["account_id"], kind, prev, new)
        body = {
            "alert_id": aid, "kind": kind, "tenant_id": tenant_id, "account_id": summary["account_id"],
            "account_name": summary.get("name"), "previous": None if prev is None else
            {"score": prev.score, "band": prev.band}, "current": {"score": new.score, "band": new.band,
                                                                  "trend": new.trend},
            "factors": [f.to_dict() for f in new.factors], "raised_at": format_ts(now),
        }
        return to_ddb({"pk": keys.outbox_pk(tenant_id), "sk": f"{format_ts(now)}#{aid}", "status": "pending",
                       "alert_json": json.dumps(body, sort_keys=True), "alert_id": aid})

    def pending(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` pending alerts, oldest first.

        Reads every page: DynamoDB applies ``Limit`` *before* the filter, so a single page of
        ``Limit=limit`` would see only the oldest (long delivered) alerts once there are more than
        ``limit`` of them, and newer pending ones would never be sent.
        """
        out: list[dict[str, Any]] = []
        for item in items(self.client, "query", TableName=self.table, KeyConditionExpression="pk = :p",
                          FilterExpression="#s = :pending", ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues={":p": {"S": keys.outbox_pk(tenant_id)},
                                                     ":pending": {"S": "pending"}},
                          ConsistentRead=True):
            out.append(from_ddb(item))
            if len(out) >= limit:
                break
        return out

    def all(self, tenant_id: str) -> list[dict[str, Any]]:
        found = items(self.client, "query", TableName=self.table, KeyConditionExpression="pk = :p",
                      ExpressionAttributeValues={":p": {"S": keys.outbox_pk(tenant_id)}}, ConsistentRead=True)
        return [from_ddb(i) for i in found]

    def mark(self, item: dict[str, Any], status: str, detail: str = "") -> bool:
        try:
            self.client.update_item(
                TableName=self.table, Key={"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}},
                UpdateExpression="SET #s = :s, delivered_at = :t, detail = :d",
                ConditionExpression="#s = :pending", ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":pending": {"S": "pending"},
                                           ":t": {"S": datetime.now(UTC).isoformat()},
                                           ":d": {"S": detail[:500]}})
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False


class AlertDeliverer:
    """Sends pending alerts: to the tenant's webhook URL, or to SNS when a topic is configured."""

    def __init__(self, outbox: Outbox, tenants: Any, sns_client: Any = None, topic_arn: str | None = None,
                 timeout: float = 5.0) -> None:
        self.outbox = outbox
        self.tenants = tenants
        self.sns = sns_client
        self.topic_arn = topic_arn
        self.timeout = timeout
        self.failed = 0  # attempts that failed since this deliverer was built (they stay pending)

    def deliver_tenant(self, tenant_id: str) -> int:
        settings = self.tenants.get_settings(tenant_id)
        url = settings.get("webhook_url")
        sent = 0
        for item in self.outbox.pending(tenant_id):
            body = item["alert_json"]
            try:
                if self.sns is not None and self.topic_arn:
                    self.sns.publish(TopicArn=self.topic_arn, Message=body, Subject="streamfold health alert",
                                     MessageAttributes={"tenant_id": {"DataType": "String", "StringValue": tenant_id},
                                                        "alert_id": {"DataType": "String",
                                                                     "StringValue": item["alert_id"]}})
                elif url:
                    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
                        "Content-Type": "application/json", "X-Streamfold-Alert-Id": item["alert_id"]})
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        if resp.status >= 300:
                            raise urllib.error.HTTPError(url, resp.status, "non-2xx", resp.headers, None)
                else:
                    continue  # no destination configured yet: keep it pending
            except (urllib.error.URLError, OSError, ClientError) as exc:
                logger.warning("alert delivery failed", extra={"alert_id": item["alert_id"], "error": str(exc)})
                self.failed += 1
                continue
            if self.outbox.mark(item, "delivered"):
                sent += 1
        return sent

    def deliver_all(self) -> int:
        return sum(self.deliver_tenant(t.tenant_id) for t in self.tenants.list())


def alert_id(tenant_id: str, account_id: str, kind: str, prev: HealthScore | None, new: HealthScore) -> str:
    raw = f"{tenant_id}|{account_id}|{kind}|{prev.score if prev else ''}|{prev.band if prev else ''}|" \
          f"{new.score}|{new.band}|{new.model_version}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def drain_outbox(sns_client: Any = None) -> dict[str, int]:
    """One run of the scheduled outbox drain on AWS (``app.on_outbox_schedule``, every minute).

    Publishes every pending alert of every tenant to ``STREAMFOLD_ALERTS_TOPIC_ARN`` once and marks
    it delivered (conditional update, so a concurrent or repeated run never publishes it again).
    An alert whose publish fails stays pending and is retried by the next run; the run then raises
    :class:`AlertDeliveryError` so the function's Errors alarm fires while SNS keeps failing.
    Without a topic (locally) alerts go to tenant webhooks, as ``streamfold up`` does.
    """
    settings = get_settings()
    if sns_client is None and settings.alerts_topic_arn:
        sns_client = boto3.session.Session().client("sns", region_name=settings.region)
    deliverer = AlertDeliverer(Outbox(get_client(), settings.control_table), services.tenants(),
                               sns_client=sns_client, topic_arn=settings.alerts_topic_arn)
    delivered = deliverer.deliver_all()
    result = {"delivered": delivered, "failed": deliverer.failed}
    logger.info("outbox drained", extra=result)
    if deliverer.failed:
        raise AlertDeliveryError(f"{deliverer.failed} alert(s) not delivered, {delivered} delivered; "
                                 "they stay pending and the next run retries them")
    return result
