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
    pk = TENANT#<tenant_id>        sk = CATALOG#COUNT             distinct event names / property keys admitted
    pk = TENANT#<tenant_id>        sk = CATALOG#N#<name>          one admitted event name (P#<key>: property key)
    pk = CONFIG                    sk = ACTIVE_VIEW               the view version the API reads
    pk = VIEWS                     sk = VIEW#<version:06d>        projection registry: one record per view version

The typed ones are PynamoDB models in ``chalicelib.records`` (tenants, secrets, settings, score
models, the active view, the registry).

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
    return f"{prefix}{VIEW_TABLE_INFIX}{version}"


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


# --- view tables (``<prefix>view-v<N>``), one single table per projection version -------------
#
#   pk = <tenant>#A#<account>   sk = HEAD | DAY#<yyyy-mm-dd> | TL#<yyyy-mm-dd> | SUMMARY | USER#<user>
#   pk = <tenant>#U#<user>      sk = HEAD
#   pk = <tenant>#CATALOG       sk = NAME#<event name> | DAY#<yyyy-mm-dd>#<event name>
#   gpk = <tenant>#ACCOUNTS     (sparse listing indexes on SUMMARY items: by_score, by_seen, by_active, by_name)

HEAD_SK = "HEAD"
SUMMARY_SK = "SUMMARY"
DAY_PREFIX = "DAY#"
TIMELINE_PREFIX = "TL#"
USER_LINK_PREFIX = "USER#"


def account_pk(tenant_id: str, account_id: str) -> str:
    return f"{tenant_id}#A#{account_id}"


def user_pk(tenant_id: str, user_key: str) -> str:
    return f"{tenant_id}#U#{user_key}"


def catalog_pk(tenant_id: str) -> str:
    return f"{tenant_id}#CATALOG"


CATALOG_NAME_PREFIX = "NAME#"


def catalog_name_sk(name: str) -> str:
    """Catalog entry head (first/last seen, property types) of an event name."""
    return f"{CATALOG_NAME_PREFIX}{name[:900]}"


def catalog_day_sk(day: str, name: str) -> str:
    """Message digests of an event name on one UTC day."""
    return f"{DAY_PREFIX}{day}#{name[:900]}"


def accounts_gpk(tenant_id: str) -> str:
    return f"{tenant_id}#ACCOUNTS"


def day_sk(day: str) -> str:
    return f"{DAY_PREFIX}{day}"


def timeline_sk(bucket: str) -> str:
    """Sort key of an account's timeline bucket (``YYYY-MM-DD``)."""
    return f"{TIMELINE_PREFIX}{bucket}"


def user_link_sk(user_key: str) -> str:
    return f"{USER_LINK_PREFIX}{user_key}"


def score_sk(score: int | None, account_id: str) -> str:
    return f"{-1 if score is None else score:04d}#{account_id}"


def seen_sk(last_seen: str | None, account_id: str) -> str:
    return f"{last_seen or '0000'}#{account_id}"


def active_sk(active_users: int, account_id: str) -> str:
    return f"{active_users:08d}#{account_id}"


def name_sk(name: str | None, account_id: str) -> str:
    return f"{(name or account_id).casefold()[:200]}#{account_id}"


__all__ += [
    "HEAD_SK", "SUMMARY_SK", "DAY_PREFIX", "TIMELINE_PREFIX", "USER_LINK_PREFIX", "account_pk", "user_pk",
    "catalog_pk", "accounts_gpk", "day_sk", "timeline_sk", "user_link_sk", "score_sk", "seen_sk", "active_sk",
    "name_sk",
    "CATALOG_NAME_PREFIX", "catalog_name_sk", "catalog_day_sk",
]

CONFIG_PK = "CONFIG"
ACTIVE_VIEW_SK = "ACTIVE_VIEW"
VIEWS_PK = "VIEWS"
VIEW_VERSION_PREFIX = "VIEW#"


def view_version_sk(version: int) -> str:
    """The projection registry's record of a view version (``chalicelib.registry``)."""
    return f"{VIEW_VERSION_PREFIX}{int(version):06d}"


VIEW_TABLE_INFIX = "view-v"


def view_table_version(prefix: str, table_name: str) -> int | None:
    """The version of a view table name (``<prefix>view-v<N>``), or ``None`` if the name is not one."""
    head = f"{prefix}{VIEW_TABLE_INFIX}"
    rest = table_name[len(head):] if table_name.startswith(head) else ""
    return int(rest) if rest.isdigit() and not rest.startswith("0") else None


__all__ += ["CONFIG_PK", "ACTIVE_VIEW_SK", "VIEWS_PK", "VIEW_VERSION_PREFIX", "view_version_sk", "view_table_version"]


# --- per-tenant catalog caps (control table; chalicelib.ingest.CatalogCaps) ---------------------

CATALOG_COUNT_SK = "CATALOG#COUNT"


def catalog_cap_prefix(kind: str) -> str:
    """Sort-key prefix of admitted event names (``kind`` "N") or property keys ("P")."""
    return f"CATALOG#{kind}#"

# --- view version 2 -------------------------------------------------------------------------------
#
#   pk = <tenant>#U#<user>      sk = UD#<yyyy-mm-dd>   the user's usage that carried no context.groupId
#   pk = <tenant>#U#<anon>      sk = ALIAS             the user an anonymous id was merged into
#   pk = <tenant>#A#<account>   sk = MEMBERS           number of user links (a counter)
#   pk = <tenant>#M#<window>    sk = MP#<batch>#<n>    claim page: message digests a batch counted whose
#                                                      client timestamp falls in <window> (a minute); TTL
#   pk = <tenant>#M#m<digest>   sk = MP#               the claim of one message sent without a timestamp

USER_DAY_PREFIX = "UD#"
ALIAS_SK = "ALIAS"
MEMBERS_SK = "MEMBERS"
CLAIM_PAGE_PREFIX = "MP#"


def user_day_sk(day: str) -> str:
    return f"{USER_DAY_PREFIX}{day}"


def claim_page_pk(tenant_id: str, window: str) -> str:
    return f"{tenant_id}#M#{window}"


def claim_page_sk(owner_batch: str, page: int) -> str:
    return f"{CLAIM_PAGE_PREFIX}{owner_batch}#{page}"


PAGE_PREFIX = "P#"
PAGE_META_SK = "META"
"""A bucket's page counter (pending pages ``n``, the ``oldest`` page's time): when to settle it."""


def page_pk(tenant_id: str, bucket: int) -> str:
    """A tenant's delta pages of one bucket of accounts and users (``chalicelib.pages``)."""
    return f"{tenant_id}#P#{bucket:02x}"


def page_sk(page_id: str, n: int) -> str:
    return f"{PAGE_PREFIX}{page_id}#{n}"


META_PK = "META"
FOLD_CODE_SK = "FOLD_CODE"
"""The view table's record of the fold code that wrote it (``codes``: a string set)."""

__all__ += ["META_PK", "FOLD_CODE_SK", "PAGE_PREFIX", "PAGE_META_SK", "page_pk", "page_sk"]
__all__ += ["USER_DAY_PREFIX", "ALIAS_SK", "MEMBERS_SK", "CLAIM_PAGE_PREFIX", "user_day_sk", "claim_page_pk",
            "claim_page_sk"]
