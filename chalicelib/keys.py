"""Every table name and key prefix, in one place.

Control table (``<prefix>control``), one item family per access pattern::

    pk = TENANT#<tenant_id>        sk = META                      tenant record
    pk = TENANT#<tenant_id>        sk = SCOREMODEL#<version:06d>  score model versions
    pk = TENANT#<tenant_id>        sk = SETTINGS                  webhook url, key features
    pk = SECRET#<sha256(secret)>   sk = SECRET                    write key / API token -> tenant
    pk = TENANTS                   sk = <tenant_id>               tenant directory (Query, not Scan)
    pk = MAPPING#<uuid>            sk = META                      local event source mapping
    pk = MAPPING#<uuid>            sk = SHARD#<shard id>#<arn>    per-shard checkpoint
    pk = MAPPINGS                  sk = <uuid>                    mapping directory
    pk = DLQ#<uuid>                sk = <failed at>#<id>          on-failure destination records
    pk = OUTBOX#<tenant_id>        sk = <alert id>                alerts to deliver

Event day tables (``<prefix>events-YYYYMMDD``) hold packed chunks::

    pk = <tenant_id>#<chunk digest>
"""

from __future__ import annotations

from datetime import date, datetime

__all__ = [
    "events_table_name",
    "events_table_day",
    "control_table_name",
    "view_table_name",
    "tenant_pk",
    "secret_pk",
    "chunk_pk",
    "mapping_pk",
    "shard_sk",
    "dlq_pk",
    "outbox_pk",
    "TENANT_META",
    "TENANTS_PK",
    "MAPPINGS_PK",
    "SECRET_SK",
    "SETTINGS_SK",
    "META_SK",
    "score_model_sk",
    "SCORE_MODEL_PREFIX",
]

META_SK = "META"
TENANT_META = META_SK
SECRET_SK = "SECRET"
SETTINGS_SK = "SETTINGS"
TENANTS_PK = "TENANTS"
MAPPINGS_PK = "MAPPINGS"
SCORE_MODEL_PREFIX = "SCOREMODEL#"
EVENTS_INFIX = "events-"


def control_table_name(prefix: str) -> str:
    return f"{prefix}control"


def events_table_name(prefix: str, day: date | datetime) -> str:
    """Name of the event table for a UTC day (``<prefix>events-YYYYMMDD``)."""
    return f"{prefix}{EVENTS_INFIX}{day.strftime('%Y%m%d')}"


def events_table_day(prefix: str, table_name: str) -> date | None:
    """The UTC day of an event table name, or ``None`` if the name is not one of ours."""
    head = f"{prefix}{EVENTS_INFIX}"
    if not table_name.startswith(head):
        return None
    rest = table_name[len(head):]
    if len(rest) != 8 or not rest.isdigit():
        return None
    return datetime.strptime(rest, "%Y%m%d").date()


def view_table_name(prefix: str, version: int) -> str:
    return f"{prefix}view-v{version}"


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


def secret_pk(secret_hash: str) -> str:
    return f"SECRET#{secret_hash}"


def score_model_sk(version: int) -> str:
    return f"{SCORE_MODEL_PREFIX}{version:06d}"


def chunk_pk(tenant_id: str, digest: str) -> str:
    return f"{tenant_id}#{digest}"


def mapping_pk(uuid: str) -> str:
    return f"MAPPING#{uuid}"


def shard_sk(shard_id: str, stream_arn: str) -> str:
    return f"SHARD#{shard_id}#{stream_arn}"


def dlq_pk(uuid: str) -> str:
    return f"DLQ#{uuid}"


def outbox_pk(tenant_id: str) -> str:
    return f"OUTBOX#{tenant_id}"
