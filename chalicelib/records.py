"""The control table's typed records, as PynamoDB models.

Every record keeps the item layout the raw boto3 code wrote before (same ``pk``/``sk`` from
:mod:`chalicelib.keys`, same attribute names and DynamoDB types), so items written by either code
read back through the other: a stack upgrades in place, without a migration.

PynamoDB's ``Meta`` (table name, endpoint, timeouts) is class-level, while our table name depends on
the deployment prefix and the endpoint on the settings. :func:`bind` therefore makes (once, cached)
a subclass of a record class whose ``Meta`` names one table on one endpoint, talking with the
timeouts and retry budget of the boto3 client the store was handed: the API's stores keep the API's
short timeouts (a frozen DynamoDB gives a 503 within seconds), the CLI's its patient ones.

PynamoDB wraps botocore's errors in its own (``GetError``, ``PutError``, ...); :func:`botocore_errors`
unwraps them again, so a store's callers (the HTTP error mapping, the stream handler's retries)
see the same ``ClientError`` / ``BotoCoreError`` they saw from the raw code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from pynamodb.attributes import ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from chalicelib import db
from chalicelib.settings import get_settings

__all__ = [
    "ActiveViewRecord",
    "ControlRecord",
    "ScoreModelRecord",
    "SecretRecord",
    "TenantDirectoryRecord",
    "TenantRecord",
    "TenantSettingsRecord",
    "ViewVersionRecord",
    "bind",
    "botocore_errors",
    "connection",
    "forget_bindings",
    "plain",
]

M = TypeVar("M", bound="ControlRecord")


class ControlRecord(Model):
    """An item of the control table (``<prefix>control``): every family shares ``pk`` and ``sk``.

    Not bound to a table: use :func:`bind` to get a class for one deployment's table.
    """

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class TenantRecord(ControlRecord):
    """``TENANT#<id>`` / ``META``: a tenant."""

    tenant_id = UnicodeAttribute()
    name = UnicodeAttribute()
    created_at = UnicodeAttribute()  # ISO 8601 as datetime.isoformat() wrote it (kept byte-compatible)


class TenantDirectoryRecord(ControlRecord):
    """``TENANTS`` / ``<tenant id>``: the tenant directory (listing is a Query, never a Scan)."""

    name = UnicodeAttribute()
    created_at = UnicodeAttribute()


class SecretRecord(ControlRecord):
    """``SECRET#<sha256>`` / ``SECRET``: a write key (``kind`` "write") or API token ("read") -> tenant."""

    tenant_id = UnicodeAttribute()
    kind = UnicodeAttribute()


class TenantSettingsRecord(ControlRecord):
    """``TENANT#<id>`` / ``SETTINGS``: where alerts go, which events count as key features."""

    webhook_url = UnicodeAttribute(null=True)
    key_features = ListAttribute(of=UnicodeAttribute, null=True)


class ScoreModelRecord(ControlRecord):
    """``TENANT#<id>`` / ``SCOREMODEL#<version:06d>``: one immutable score model version.

    ``model`` is ``ScoreModel.to_dict()`` as a DynamoDB map (a raw map: its shape belongs to
    :mod:`projections.health`, which validates it on read).
    """

    model: MapAttribute[str, Any] = MapAttribute()


class ActiveViewRecord(ControlRecord):
    """``CONFIG`` / ``ACTIVE_VIEW``: the view version the API reads and the live projector writes."""

    version = NumberAttribute()
    promoted_at = UnicodeAttribute(null=True)


class ViewVersionRecord(ControlRecord):
    """``VIEWS`` / ``VIEW#<version:06d>``: the projection registry's record of one view version.

    ``state`` is ``serving`` (exactly one; mirrors :class:`ActiveViewRecord`), ``building`` (being
    rebuilt, or demoted and kept for a rollback) or ``retired`` (its table and search index are deleted
    by a sweep once ``retire_after`` has passed; ``dropped_at`` says when that happened).
    ``built_through`` maps a day table's stream ARN to the newest sequence number folded in (per stream:
    the shards of one stream are not ordered among themselves; it says how far, not what is missing).
    ``phase`` (building versions): ``replaying`` while a rebuild folds the day tables (the live projector
    records the stream positions it handles, for the catch-up) and ``current`` once the catch-up is done (the
    live projector writes it, with its own fold code, beside the serving version); absent: not live-written.
    """

    version = NumberAttribute()
    code_version = UnicodeAttribute(null=True)
    state = UnicodeAttribute()
    created_at = UnicodeAttribute()
    state_changed_at = UnicodeAttribute()
    retire_after = UnicodeAttribute(null=True)
    dropped_at = UnicodeAttribute(null=True)
    built_through: MapAttribute[str, Any] = MapAttribute(default=dict)
    phase = UnicodeAttribute(null=True)
    caught_up_to = UnicodeAttribute(null=True)
    item_count = NumberAttribute(null=True)
    counted_at = UnicodeAttribute(null=True)


# --- binding a record class to one table on one endpoint -----------------------------------------

_lock = threading.Lock()
_bound: dict[tuple[Any, ...], type[ControlRecord]] = {}
_connections: dict[tuple[Any, ...], Connection] = {}


def _client_options(client: Any) -> dict[str, Any]:
    """Timeouts and attempts of a boto3 client (PynamoDB counts retries, botocore total attempts)."""
    cfg = getattr(getattr(client, "meta", None), "config", None)
    t = db.BACKGROUND_TIMEOUTS
    connect = float(getattr(cfg, "connect_timeout", None) or t["connect_timeout"])
    read = float(getattr(cfg, "read_timeout", None) or t["read_timeout"])
    retries = getattr(cfg, "retries", None) or {}
    attempts = int(retries.get("total_max_attempts") or t["total_max_attempts"])
    return {"connect_timeout_seconds": connect, "read_timeout_seconds": read,
            "max_retry_attempts": max(0, attempts - 1), "max_pool_connections": 32}


def _endpoint_options() -> dict[str, Any]:
    s = get_settings()
    opts: dict[str, Any] = {"host": s.dynamodb_endpoint, "region": s.region}
    if s.dynamodb_endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        # DynamoDB Local accepts any credentials (as chalicelib.db.client_kwargs does).
        opts["aws_access_key_id"] = "local"
        opts["aws_secret_access_key"] = "local"
    return opts


def bind(record: type[M], table: str, client: Any = None) -> type[M]:
    """``record`` bound to ``table`` on the configured endpoint (one class per table, endpoint and timeouts).

    Args:
        record: a :class:`ControlRecord` subclass.
        table: the control table's name (``keys.control_table_name(prefix)``).
        client: the boto3 client the caller was handed; the model uses its timeouts and attempts
            (``None``: the background client's).
    """
    options = {**_endpoint_options(), **_client_options(client)}
    key = (record, table, *sorted(options.items()))
    with _lock:
        found = _bound.get(key)
        if found is None:
            meta = type("Meta", (), {"table_name": table, **options})
            # ``_connection`` is reset so the subclass never reuses another binding's connection.
            found = type(record.__name__, (record,), {"Meta": meta, "_connection": None,
                                                      "__module__": record.__module__,
                                                      "__qualname__": f"{record.__qualname__}[{table}]"})
            _bound[key] = found
    return cast(type[M], found)


def connection(client: Any = None) -> Connection:
    """A low-level PynamoDB connection to the configured endpoint (transactions, ``ReturnValues``)."""
    options = {**_endpoint_options(), **_client_options(client)}
    key = tuple(sorted(options.items()))
    with _lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = Connection(**options)
    return conn


def forget_bindings() -> None:
    """Drop every bound class and connection (tests that change endpoints; they are also keyed by it)."""
    with _lock:
        _bound.clear()
        _connections.clear()


@contextmanager
def botocore_errors() -> Iterator[None]:
    """Re-raise PynamoDB's wrapped errors as the botocore error that caused them."""
    try:
        yield
    except PynamoDBException as exc:
        cause = exc.cause
        if isinstance(cause, Exception):
            raise cause from exc
        raise



def plain(value: Any) -> Any:
    """A raw map attribute's value as plain ``dict``/``list``/scalars (nested maps included)."""
    if isinstance(value, MapAttribute):
        return {str(k): plain(v) for k, v in value.as_dict().items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
