"""Tenants and their secrets.

Secrets are 32 random bytes (URL-safe), so a plain SHA-256 is a sound at-rest hash: there is
nothing to brute-force that a salt would protect. A write key can only write; an API token can
only read.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from chalicelib import keys
from chalicelib.db import items

__all__ = ["Tenant", "TenantStore", "hash_secret", "SecretKind"]

SecretKind = Literal["write", "read"]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str


class TenantStore:
    """Tenant records and secret look-ups in the control table."""

    #: Seconds a resolved secret is cached (per process). A revoked secret keeps working at most this
    #: long in a process that resolved it just before (each API process / Lambda container has its own
    #: cache); one control-table read per secret per process per 5 s is the price.
    RESOLVE_TTL = 5.0

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self._resolved: dict[tuple[str, str], tuple[float, str | None]] = {}

    def create(self, name: str) -> dict[str, str]:
        """Create a tenant; returns ``{"tenant_id", "write_key", "api_token"}`` (shown once)."""
        if not name or len(name) > 200:
            raise ValueError("name must be 1..200 characters")
        tenant_id = "t_" + secrets.token_hex(8)
        write_key = "wk_" + secrets.token_urlsafe(32)
        api_token = "at_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC).isoformat()
        items = [
            {"pk": keys.tenant_pk(tenant_id), "sk": keys.TENANT_META, "tenant_id": tenant_id, "name": name,
             "created_at": now},
            {"pk": keys.TENANTS_PK, "sk": tenant_id, "name": name, "created_at": now},
            {"pk": keys.secret_pk(hash_secret(write_key)), "sk": keys.SECRET_SK, "tenant_id": tenant_id,
             "kind": "write"},
            {"pk": keys.secret_pk(hash_secret(api_token)), "sk": keys.SECRET_SK, "tenant_id": tenant_id,
             "kind": "read"},
        ]
        self._client.transact_write_items(TransactItems=[
            {"Put": {"TableName": self._table, "Item": _marshal(item),
                     "ConditionExpression": "attribute_not_exists(pk)"}}
            for item in items
        ])
        return {"tenant_id": tenant_id, "write_key": write_key, "api_token": api_token}

    def resolve(self, secret: str, kind: SecretKind) -> str | None:
        """Tenant id for a secret of the given kind, or ``None`` (unknown secret or wrong kind)."""
        if not secret or len(secret) > 512:
            return None
        key = (hash_secret(secret), kind)
        hit = self._resolved.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.RESOLVE_TTL:
            return hit[1]
        tenant = self._lookup(secret, kind)
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[key] = (time.monotonic(), tenant)
        return tenant

    def revoke(self, secret: str) -> dict[str, str] | None:
        """Delete a write key or API token; returns ``{"tenant_id", "kind"}`` of what was revoked, or ``None``.

        This process forgets it at once; other processes within :attr:`RESOLVE_TTL` seconds.
        """
        if not secret or len(secret) > 512:
            return None
        digest = hash_secret(secret)
        resp = self._client.delete_item(
            TableName=self._table, Key={"pk": {"S": keys.secret_pk(digest)}, "sk": {"S": keys.SECRET_SK}},
            ReturnValues="ALL_OLD")
        old = resp.get("Attributes")
        for kind in ("write", "read"):
            self._resolved.pop((digest, kind), None)
        if not old:
            return None
        return {"tenant_id": old["tenant_id"]["S"], "kind": old["kind"]["S"]}

    def _lookup(self, secret: str, kind: SecretKind) -> str | None:
        resp = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": keys.secret_pk(hash_secret(secret))}, "sk": {"S": keys.SECRET_SK}},
        )
        item = resp.get("Item")
        if not item or item["kind"]["S"] != kind:
            return None
        return item["tenant_id"]["S"]

    def get(self, tenant_id: str) -> Tenant | None:
        resp = self._client.get_item(TableName=self._table,
                                     Key={"pk": {"S": keys.tenant_pk(tenant_id)}, "sk": {"S": keys.TENANT_META}})
        item = resp.get("Item")
        return Tenant(tenant_id, item["name"]["S"]) if item else None

    def list(self) -> list[Tenant]:

        found = items(self._client, "query", TableName=self._table, KeyConditionExpression="pk = :p",
                      ExpressionAttributeValues={":p": {"S": keys.TENANTS_PK}})
        return [Tenant(i["sk"]["S"], i["name"]["S"]) for i in found]

    def get_settings(self, tenant_id: str) -> dict[str, Any]:
        resp = self._client.get_item(TableName=self._table,
                                     Key={"pk": {"S": keys.tenant_pk(tenant_id)}, "sk": {"S": keys.SETTINGS_SK}})
        item = resp.get("Item")
        return _unmarshal(item) if item else {}

    def put_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        item = {"pk": keys.tenant_pk(tenant_id), "sk": keys.SETTINGS_SK, **settings}
        self._client.put_item(TableName=self._table, Item=_marshal(item))


def _marshal(item: dict[str, Any]) -> dict[str, Any]:

    ser = TypeSerializer()
    return {k: ser.serialize(v) for k, v in item.items()}


def _unmarshal(item: dict[str, Any]) -> dict[str, Any]:

    de = TypeDeserializer()
    return {k: de.deserialize(v) for k, v in item.items() if k not in ("pk", "sk")}
