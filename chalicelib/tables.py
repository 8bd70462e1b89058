"""Table definitions, shared by the local stack, the rotation function and CloudFormation.

A spec is the ``CreateTable`` request as a dict. :func:`to_cfn_properties` turns the same
spec into ``AWS::DynamoDB::Table`` properties, so the template and the code never drift.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from chalicelib import keys
from chalicelib.db import table_names
from chalicelib.log import logger

__all__ = [
    "control_table_spec",
    "events_table_spec",
    "view_table_spec",
    "LISTING_ATTRIBUTES",
    "VIEW_INDEXES",
    "ensure_table",
    "ensure_control_table",
    "ensure_event_tables",
    "ensure_view_table",
    "to_cfn_properties",
    "list_event_tables",
    "utc_today",
]


# Sorted account listings on the view table: index name -> (partition attr, sort attr).
VIEW_INDEXES: dict[str, tuple[str, str]] = {
    "by_score": ("gpk", "score_sk"),
    "by_seen": ("gpk", "seen_sk"),
    "by_active": ("gpk", "active_sk"),
    "by_name": ("gpk", "name_sk"),
}

LISTING_ATTRIBUTES: tuple[str, ...] = (
    "account_id", "name", "score", "band", "trend", "last_seen", "first_seen", "active_1d", "active_7d",
    "active_30d", "users_count", "plan", "traits_json",
)
"""What the listing indexes carry besides keys (``chalicelib.query`` lists accounts from these alone).
Not ``health_json``, ``alerts`` or ``as_of``: every SUMMARY write rewrites each index's copy, and
DynamoDB charges those index writes by the projected size."""


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def control_table_spec(prefix: str) -> dict[str, Any]:
    """Control table: tenants, hashed secrets, settings, mapping registry, checkpoints, DLQ."""
    return {
        "TableName": keys.control_table_name(prefix),
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def events_table_spec(prefix: str, day: date) -> dict[str, Any]:
    """One append-only event table per UTC day, streaming new images to the projectors."""
    return {
        "TableName": keys.events_table_name(prefix, day),
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    }


def view_table_spec(prefix: str, version: int) -> dict[str, Any]:
    """Single-table read model for one projection version, with sparse listing indexes."""
    attrs = {"pk", "sk"}
    gsis = []
    for name, (hash_attr, range_attr) in VIEW_INDEXES.items():
        attrs.update({hash_attr, range_attr})
        gsis.append(
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": hash_attr, "KeyType": "HASH"},
                    {"AttributeName": range_attr, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(LISTING_ATTRIBUTES)},
            }
        )
    return {
        "TableName": keys.view_table_name(prefix, version),
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attrs)],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": gsis,
        "BillingMode": "PAY_PER_REQUEST",
    }


def to_cfn_properties(spec: dict[str, Any], *, retain_extras: bool = True) -> dict[str, Any]:
    """``AWS::DynamoDB::Table`` properties for a spec (adds PITR and SSE for stored data)."""
    props = {k: v for k, v in spec.items() if k != "StreamSpecification"}
    if "StreamSpecification" in spec:
        props["StreamSpecification"] = {"StreamViewType": spec["StreamSpecification"]["StreamViewType"]}
    if retain_extras:
        props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
        props["SSESpecification"] = {"SSEEnabled": True}
    return props


def ensure_table(client: Any, spec: dict[str, Any], *, wait: bool = True) -> bool:
    """Create a table if it does not exist. Returns ``True`` if this call created it."""
    created = False
    try:
        client.create_table(**spec)
        created = True
        logger.info("created table %s", spec["TableName"])
    except client.exceptions.ResourceInUseException:
        pass
    if wait:
        _wait_active(client, spec["TableName"])
    return created


def _wait_active(client: Any, name: str, timeout: float = 60.0) -> None:
    """Until the table is ACTIVE (boto3's ``table_exists`` waiter)."""
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": int(timeout)})


def ensure_control_table(client: Any, prefix: str) -> None:
    ensure_table(client, control_table_spec(prefix))


def ensure_event_tables(client: Any, prefix: str, today: date, days_ahead: int = 1) -> list[str]:
    """Create the day tables for ``today`` and ``days_ahead`` days after (idempotent)."""
    names = []
    for offset in range(days_ahead + 1):
        spec = events_table_spec(prefix, today + timedelta(days=offset))
        ensure_table(client, spec)
        names.append(spec["TableName"])
    return names


VIEW_TTL_ATTRIBUTE = "ttl"
"""Items of the view table with this attribute (message claims, view version 2) expire by DynamoDB TTL."""


def ensure_view_table(client: Any, prefix: str, version: int) -> str:
    spec = view_table_spec(prefix, version)
    ensure_table(client, spec)
    try:
        current = client.describe_time_to_live(TableName=spec["TableName"])["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(TableName=spec["TableName"], TimeToLiveSpecification={
                "Enabled": True, "AttributeName": VIEW_TTL_ATTRIBUTE})
    except client.exceptions.ClientError as exc:  # e.g. a concurrent enable; TTL is housekeeping only
        logger.warning("TTL not enabled on %s: %s", spec["TableName"], exc)
    return spec["TableName"]


def list_event_tables(client: Any, prefix: str) -> list[tuple[date, str]]:
    """All event day tables with this prefix, oldest first."""

    days = ((keys.events_table_day(prefix, name), name) for name in table_names(client))
    return sorted((day, name) for day, name in days if day is not None)


def describe(client: Any, table: str) -> dict[str, Any] | None:
    """``DescribeTable``'s ``Table``, or ``None`` when the table does not exist."""
    try:
        return dict(client.describe_table(TableName=table)["Table"])
    except client.exceptions.ResourceNotFoundException:
        return None


def exists(client: Any, table: str) -> bool:
    return describe(client, table) is not None
