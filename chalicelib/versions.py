"""Which view (projection) version is active: the one the API reads and the projector writes.

Stored in the control table so a ``streamfold replay --promote`` switches every process (each
caches the answer for a few seconds).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from chalicelib import keys
from projections import account

__all__ = ["DEFAULT_VIEW_VERSION", "VIEW_VERSION", "active_view_version", "forget", "set_active_view_version"]

DEFAULT_VIEW_VERSION = 1
# The view version this code writes and reads by default: the account fold's version.
VIEW_VERSION = account.VERSION
TTL_SECONDS = 5.0
_lock = threading.Lock()
_cache: dict[str, tuple[float, int]] = {}


def active_view_version(client: Any, control_table: str, *, cached: bool = True) -> int:
    with _lock:
        hit = _cache.get(control_table)
    if cached and hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
        return hit[1]
    resp = client.get_item(TableName=control_table, ConsistentRead=True,
                           Key={"pk": {"S": keys.CONFIG_PK}, "sk": {"S": keys.ACTIVE_VIEW_SK}})
    if "Item" in resp:
        version = int(resp["Item"]["version"]["N"])
    else:
        # Never promoted: a stack that holds a version 1 view keeps serving it until
        # `streamfold replay view --version 2 --promote`; a new stack starts at this code's version.
        prefix = control_table[: -len(keys.control_table_name(""))]
        version = DEFAULT_VIEW_VERSION if _exists(client, keys.view_table_name(prefix, DEFAULT_VIEW_VERSION)) \
            else VIEW_VERSION
    with _lock:
        _cache[control_table] = (time.monotonic(), version)
    return version


def _exists(client: Any, table: str) -> bool:
    try:
        client.describe_table(TableName=table)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def set_active_view_version(client: Any, control_table: str, version: int) -> None:
    client.put_item(TableName=control_table, Item={
        "pk": {"S": keys.CONFIG_PK}, "sk": {"S": keys.ACTIVE_VIEW_SK}, "version": {"N": str(version)},
        "promoted_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
    with _lock:
        _cache[control_table] = (time.monotonic(), version)


def forget() -> None:
    with _lock:
        _cache.clear()
