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

from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite

from chalicelib import keys
from chalicelib.records import (
    SecretRecord,
    TenantDirectoryRecord,
    TenantRecord,
    TenantSettingsRecord,
    bind,
    botocore_errors,
    connection,
)

__all__ = ["Tenant", "TenantStore", "hash_secret", "SecretKind"]

SecretKind = Literal["write", "read"]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str


class TenantStore:
    """Tenant records and secret look-ups in the control table (PynamoDB models of :mod:`chalicelib.records`)."""

    #: Seconds a resolved secret is cached (per process). A revoked secret keeps working at most this
    #: long in a process that resolved it just before (each API process / Lambda container has its own
    #: cache); one control-table read per secret per process per 5 s is the price.
    RESOLVE_TTL = 5.0

    #: The settings a tenant has (:class:`~chalicelib.records.TenantSettingsRecord`'s attributes).
    SETTINGS = ("webhook_url", "key_features")

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self._resolved: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._tenant = bind(TenantRecord, table, client)
        self._directory = bind(TenantDirectoryRecord, table, client)
        self._secret = bind(SecretRecord, table, client)
        self._settings = bind(TenantSettingsRecord, table, client)

    def create(self, name: str) -> dict[str, str]:
        """Create a tenant; returns ``{"tenant_id", "write_key", "api_token"}`` (shown once)."""
        if not name or len(name) > 200:
            raise ValueError("name must be 1..200 characters")
        tenant_id = "t_" + secrets.token_hex(8)
        write_key = "wk_" + secrets.token_urlsafe(32)
        api_token = "at_" + secrets.token_urlsafe(32)
        now = datetime.now(UTC).isoformat()
        records = [
            self._tenant(keys.tenant_pk(tenant_id), keys.TENANT_META, tenant_id=tenant_id, name=name, created_at=now),
            self._directory(keys.TENANTS_PK, tenant_id, name=name, created_at=now),
            self._secret(keys.secret_pk(hash_secret(write_key)), keys.SECRET_SK, tenant_id=tenant_id, kind="write"),
            self._secret(keys.secret_pk(hash_secret(api_token)), keys.SECRET_SK, tenant_id=tenant_id, kind="read"),
        ]
        with botocore_errors(), TransactWrite(connection=connection(self._client)) as tx:
            for record in records:
                tx.save(record, condition=type(record).pk.does_not_exist())
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
        # One DeleteItem with ReturnValues=ALL_OLD through the model's table connection (Model.delete does not
        # return the old item): two concurrent revokes of one secret report it revoked once.
        with botocore_errors():
            resp = self._secret._get_connection().delete_item(keys.secret_pk(digest), range_key=keys.SECRET_SK,
                                                              return_values="ALL_OLD")
        for kind in ("write", "read"):
            self._resolved.pop((digest, kind), None)
        old = resp.get("Attributes")
        if not old:
            return None
        record = self._secret.from_raw_data(old)
        return {"tenant_id": record.tenant_id, "kind": record.kind}

    def _lookup(self, secret: str, kind: SecretKind) -> str | None:
        record = self._get(self._secret, keys.secret_pk(hash_secret(secret)), keys.SECRET_SK)
        if record is None or record.kind != kind:
            return None
        return record.tenant_id

    @staticmethod
    def _get(model: Any, pk: str, sk: str) -> Any:
        try:
            with botocore_errors():
                return model.get(pk, sk)
        except DoesNotExist:
            return None

    def get(self, tenant_id: str) -> Tenant | None:
        record = self._get(self._tenant, keys.tenant_pk(tenant_id), keys.TENANT_META)
        return Tenant(tenant_id, record.name) if record else None

    def list(self) -> list[Tenant]:
        with botocore_errors():
            return [Tenant(r.sk, r.name) for r in self._directory.query(keys.TENANTS_PK)]

    def get_settings(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's settings (only those set): ``{"webhook_url"?, "key_features"?}``."""
        record = self._get(self._settings, keys.tenant_pk(tenant_id), keys.SETTINGS_SK)
        if record is None:
            return {}
        values = {name: getattr(record, name) for name in self.SETTINGS}
        return {name: value for name, value in values.items() if value is not None}

    def put_settings(self, tenant_id: str, settings: dict[str, Any]) -> None:
        """Replace the tenant's settings. Raises ValueError for a setting that does not exist."""
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            raise ValueError(f"unknown tenant setting(s) {', '.join(unknown)}; known: {', '.join(self.SETTINGS)}")
        record = self._settings(keys.tenant_pk(tenant_id), keys.SETTINGS_SK, **settings)
        with botocore_errors():
            record.save()
