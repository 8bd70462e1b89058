"""Which view (projection) version is active: the one the API reads and the projector writes.

Stored in the control table (:class:`~chalicelib.records.ActiveViewRecord`, ``CONFIG`` / ``ACTIVE_VIEW``)
so a ``streamfold replay --promote`` switches every process (each caches the answer for a few seconds).
Setting it also marks the version ``serving`` in the projection registry (:mod:`chalicelib.registry`) and
the one it replaces ``building`` (phase ``current``: the live projector keeps writing it, so promoting it back
is a rollback with nothing to catch up), in the same transaction: whoever promotes (the replay, the registry, the
benchmark), the two never disagree.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite

from chalicelib import keys, tables
from chalicelib.records import ActiveViewRecord, ViewVersionRecord, bind, botocore_errors, connection
from projections import account

__all__ = ["DEFAULT_VIEW_VERSION", "VIEW_VERSION", "Phase", "active_view_version", "forget", "live_versions",
           "set_active_view_version", "stored_active_view_version"]

Phase = Literal["serving", "current", "replaying"]
"""How the live projector treats a version: ``serving`` and ``current`` (a building version caught up) it writes,
each with its own fold code; ``replaying`` (a rebuild running) it records the stream positions of."""

DEFAULT_VIEW_VERSION = 1
# The view version this code writes and reads by default: the account fold's version.
VIEW_VERSION = account.VERSION
TTL_SECONDS = 5.0
_lock = threading.Lock()
_cache: dict[str, tuple[float, int]] = {}
_live_cache: dict[str, tuple[float, dict[int, Phase]]] = {}


def stored_active_view_version(client: Any, control_table: str) -> int | None:
    """The promoted version (a consistent read), or ``None`` if no version was ever promoted."""
    model = bind(ActiveViewRecord, control_table, client)
    try:
        with botocore_errors():
            return int(model.get(keys.CONFIG_PK, keys.ACTIVE_VIEW_SK, consistent_read=True).version)
    except DoesNotExist:
        return None


def active_view_version(client: Any, control_table: str, *, cached: bool = True) -> int:
    with _lock:
        hit = _cache.get(control_table)
    if cached and hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
        return hit[1]
    version = stored_active_view_version(client, control_table)
    if version is None:
        # Never promoted: a stack that holds a version 1 view keeps serving it until
        # `streamfold replay view --version 2 --promote`; a new stack starts at this code's version.
        prefix = control_table[: -len(keys.control_table_name(""))]
        version = DEFAULT_VIEW_VERSION if tables.exists(client, keys.view_table_name(prefix, DEFAULT_VIEW_VERSION)) \
            else VIEW_VERSION
    with _lock:
        _cache[control_table] = (time.monotonic(), version)
    return version


def set_active_view_version(client: Any, control_table: str, version: int, *, attempts: int = 5) -> None:
    """Make ``version`` the active one, and the registry's ``serving`` one (the previous becomes ``building``).

    One transaction, conditioned on the active record being what was read, so two concurrent promotions
    cannot leave two registry records ``serving``; a lost race is retried.
    """
    active = bind(ActiveViewRecord, control_table, client)
    registry = bind(ViewVersionRecord, control_table, client)
    for attempt in range(attempts):
        stored = stored_active_view_version(client, control_table)
        previous = stored if stored is not None else active_view_version(client, control_table, cached=False)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        iso = datetime.now(UTC).isoformat()
        record = active(keys.CONFIG_PK, keys.ACTIVE_VIEW_SK, version=version, promoted_at=now)
        condition = active.version.does_not_exist() if stored is None else active.version == stored
        try:
            with botocore_errors(), TransactWrite(connection=connection(client)) as tx:
                tx.save(record, condition=condition)
                tx.update(registry(keys.VIEWS_PK, keys.view_version_sk(version)), actions=[
                    registry.version.set(version), registry.state.set("serving"), registry.phase.remove(),
                    registry.state_changed_at.set(iso),
                    registry.created_at.set(registry.created_at | iso), registry.retire_after.remove(),
                    registry.dropped_at.remove()])
                if previous != version:
                    tx.update(registry(keys.VIEWS_PK, keys.view_version_sk(previous)), actions=[
                        registry.version.set(previous), registry.state.set("building"), registry.phase.set("current"),
                        registry.state_changed_at.set(iso), registry.created_at.set(registry.created_at | iso)])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException" or attempt == attempts - 1:
                raise
            continue  # another promotion won the race: read the active version again
        with _lock:
            _cache[control_table] = (time.monotonic(), version)
            _live_cache.pop(control_table, None)
        return


def live_versions(client: Any, control_table: str, *, cached: bool = True) -> dict[int, Phase]:
    """The versions the live projector handles, serving first: ``{version: phase}``.

    The serving version (:func:`active_view_version`), and every registry record in state ``building`` with a
    ``phase`` (``current`` or ``replaying``). Cached for :data:`TTL_SECONDS` like the active version: a phase
    change reaches every projector within that time (a rebuild waits that long before it scans).
    """
    with _lock:
        hit = _live_cache.get(control_table)
    if cached and hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
        return dict(hit[1])
    serving = active_view_version(client, control_table, cached=cached)
    found: dict[int, Phase] = {serving: "serving"}
    registry = bind(ViewVersionRecord, control_table, client)
    with botocore_errors():
        for r in registry.query(keys.VIEWS_PK, consistent_read=True):
            version = int(r.version)
            if version != serving and r.state == "building" and r.phase in ("current", "replaying"):
                found[version] = r.phase  # type: ignore[assignment]
    with _lock:
        _live_cache[control_table] = (time.monotonic(), found)
    return dict(found)


def forget() -> None:
    with _lock:
        _cache.clear()
        _live_cache.clear()
