"""The projection registry: one record per view version, and its life cycle.

::

    register_building(v, code) ──► building ──mark_serving(v)──► serving ──(another promoted)──► building
                                       │                                                            │
                                       └──────────────── retire(v, grace) ◄─────────────────────────┘
                                                              │
                                                         retired ──sweep(now) after retire_after──► table and
                                                                                                   search index deleted

The records are :class:`~chalicelib.records.ViewVersionRecord` items of the control table. Which version
serves is decided by the active-version record (:mod:`chalicelib.versions`), which the API and the projectors
read: :meth:`ProjectionRegistry.mark_serving` writes it (through
:func:`~chalicelib.versions.set_active_view_version`, which updates both records in one transaction), and
:meth:`ProjectionRegistry.list` reads it, so a registry record can never make a version serve that the API
does not read.

Stacks from before the registry have view tables and no records: :meth:`ProjectionRegistry.list` shows
them anyway (the active one ``serving``, the others ``building``; created at the table's creation time, code
version from the table's ``META``/``FOLD_CODE`` item), and any write to one (``retire``, a count) creates its
record.

A version is a (fold code, table) pair: ``code_version`` names the fold that writes it
(:func:`projections.folds.fold_for`). The live projector writes every version that is serving or building
in phase ``current``, each with its own fold (:func:`chalicelib.versions.live_versions`)::

    register_building(v, code, phase="replaying") ──► the projector records the stream positions it handles
                     │                                 (``streams.catchup``) while the rebuild folds the day tables
    set_phase(v, "current")  ◄── the catch-up folded what was recorded: the projector writes v from now on

A demoted version is ``building`` in phase ``current``: the projector keeps it current, so a rollback is
promoting it again, with nothing to catch up, until it is retired (a retired version is written by no one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import ClientError
from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from chalicelib import db, keys, search, tables, versions
from chalicelib.records import ViewVersionRecord, bind, botocore_errors, plain

__all__ = ["DEFAULT_GRACE", "ProjectionRegistry", "RegistryError", "State", "ViewVersion"]

State = Literal["serving", "building", "retired"]

#: How long a retired version's table and search index are kept before a sweep deletes them: long enough to
#: notice a bad promotion over a weekend and promote the old version back.
DEFAULT_GRACE = timedelta(hours=72)


class RegistryError(ValueError):
    """A registry operation that would break an invariant (retiring the serving version, promoting a
    version without a table)."""


@dataclass(frozen=True)
class ViewVersion:
    """What ``streamfold projection list`` prints for one version."""

    version: int
    code_version: str | None
    state: State
    created_at: str | None
    state_changed_at: str | None
    retire_after: str | None = None
    dropped_at: str | None = None
    built_through: dict[str, str] = field(default_factory=dict)
    phase: str | None = None
    item_count: int | None = None
    counted_at: str | None = None
    table: str | None = None
    table_exists: bool = True
    registered: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positions(value: Any) -> dict[str, str]:
    """A stored ``built_through`` map as plain strings (a raw map attribute, or nothing)."""
    return {str(k): str(v) for k, v in (plain(value) or {}).items()}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


class ProjectionRegistry:
    """The view versions of one deployment (table prefix).

    Args:
        client: a boto3 ``dynamodb`` client (view tables: describe, count, delete; the records use its timeouts).
        prefix: the table prefix (``<prefix>control``, ``<prefix>view-v<N>``).
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._control = keys.control_table_name(prefix)
        self._records = bind(ViewVersionRecord, self._control, client)

    # --- reads -----------------------------------------------------------------------------------------

    def serving(self) -> int:
        """The serving version: the active-version record's (never cached)."""
        return versions.active_view_version(self._client, self._control, cached=False)

    def _record(self, version: int) -> ViewVersionRecord | None:
        try:
            with botocore_errors():
                return self._records.get(keys.VIEWS_PK, keys.view_version_sk(version), consistent_read=True)
        except DoesNotExist:
            return None

    def _tables(self) -> dict[int, str]:
        found = {}
        for name in db.table_names(self._client):
            version = keys.view_table_version(self._prefix, name)
            if version is not None:
                found[version] = name
        return found

    def _describe(self, table: str) -> dict[str, Any] | None:
        return tables.describe(self._client, table)

    def fold_code(self, version: int) -> str | None:
        """The fold code a view table records having been written with (``+``-joined if several), or ``None``."""
        try:
            resp = self._client.get_item(TableName=keys.view_table_name(self._prefix, version),
                                         Key={"pk": {"S": keys.META_PK}, "sk": {"S": keys.FOLD_CODE_SK}})
        except self._client.exceptions.ResourceNotFoundException:
            return None
        codes = resp.get("Item", {}).get("codes", {}).get("SS")
        return "+".join(sorted(codes)) if codes else None

    def get(self, version: int) -> ViewVersion | None:
        """One version (registered or only a table), or ``None``."""
        return next((v for v in self.list() if v.version == version), None)

    def list(self) -> list[ViewVersion]:
        """Every version with a record or a view table, oldest first; states reconciled with the active record."""
        serving = self.serving()
        tables = self._tables()
        with botocore_errors():
            records = {int(r.version): r for r in self._records.query(keys.VIEWS_PK, consistent_read=True)}
        out = []
        for version in sorted(set(tables) | set(records)):
            table = keys.view_table_name(self._prefix, version)
            r = records.get(version)
            if r is None:
                described = self._describe(table) or {}
                created = described.get("CreationDateTime")
                out.append(ViewVersion(
                    version=version, code_version=self.fold_code(version),
                    state="serving" if version == serving else "building",
                    created_at=_iso(created) if isinstance(created, datetime) else None, state_changed_at=None,
                    table=table, registered=False))
                continue
            state: State = "serving" if version == serving else (
                "building" if r.state == "serving" else r.state)  # type: ignore[assignment]
            out.append(ViewVersion(
                # A record made by a promotion names no code: the table's META says what wrote it.
                version=version, code_version=r.code_version or self.fold_code(version), state=state,
                created_at=r.created_at,
                state_changed_at=r.state_changed_at, retire_after=r.retire_after, dropped_at=r.dropped_at,
                built_through=_positions(r.built_through),
                phase="serving" if state == "serving" else (r.phase if state == "building" else None),
                item_count=None if r.item_count is None else int(r.item_count), counted_at=r.counted_at,
                table=table, table_exists=version in tables))
        return out

    # --- writes ----------------------------------------------------------------------------------------

    def _upsert(self, version: int, actions: Sequence[Any], *, state: State | None = None, condition: Any = None,
                now: datetime | None = None) -> None:
        """Update a version's record, creating it if needed (``created_at``: the view table's creation time).

        With ``state`` the record moves to it (``state_changed_at`` now); without, a new record gets the
        inferred state (the active version ``serving``, any other ``building``) and an existing one keeps its own.
        """
        r = self._records
        at = _iso(now or datetime.now(UTC))
        table_created = (self._describe(keys.view_table_name(self._prefix, version)) or {}).get("CreationDateTime")
        created = _iso(table_created) if isinstance(table_created, datetime) else at
        base = [r.version.set(version), r.created_at.set(r.created_at | created)]
        if state is not None:
            base += [r.state.set(state), r.state_changed_at.set(at)]
        else:
            inferred = "serving" if version == self.serving() else "building"
            base += [r.state.set(r.state | inferred), r.state_changed_at.set(r.state_changed_at | at)]
        with botocore_errors():
            r(keys.VIEWS_PK, keys.view_version_sk(version)).update(actions=[*base, *actions], condition=condition)

    def register_building(self, version: int, code: str, *, phase: str | None = None) -> None:
        """Record that ``version`` is being built by fold code ``code`` (``projections.folds.Fold.code``).

        A retired or swept version becomes ``building`` again (its table is being rebuilt); the serving version
        keeps serving and only records the code. ``phase``: ``replaying`` (the live projector records the stream
        positions it handles for this version's catch-up) or ``current`` (it writes the version); ``None``
        keeps the version's phase (a version with none is not live-written).
        """
        r = self._records
        if version == self.serving():
            self._upsert(version, [r.code_version.set(code)])
            return
        actions = [r.code_version.set(code), r.retire_after.remove(), r.dropped_at.remove()]
        if phase is not None:
            actions += [r.phase.set(phase), r.caught_up_to.remove()] if phase == "replaying" else [r.phase.set(phase)]
        self._upsert(version, actions, state="building")
        versions.forget()

    def phase(self, version: int) -> tuple[str | None, str | None]:
        """``(phase, caught_up_to)`` of a version's record (``(None, None)`` without one)."""
        r = self._record(version)
        return (None, None) if r is None else (r.phase, r.caught_up_to)

    def set_phase(self, version: int, phase: str, *, caught_up_to: str | None = None,
                  positions: Mapping[str, str] | None = None) -> None:
        """Move a building version to ``phase`` (``replaying`` | ``current``), recording how far its catch-up
        has applied the recorded positions (``caught_up_to``) and the stream positions folded (``positions``).
        Refused unless the version is building (a promotion or retirement in between wins)."""
        r = self._records
        actions: list[Action] = [r.phase.set(phase)]
        if caught_up_to is not None:
            actions.append(r.caught_up_to.set(caught_up_to))
        if positions:
            actions.append(r.built_through.set({str(k): str(v) for k, v in positions.items()}))
        try:
            with botocore_errors():
                r(keys.VIEWS_PK, keys.view_version_sk(version)).update(actions=actions, condition=r.state == "building")
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise RegistryError(f"view version {version} is not building: phase not set") from exc
            raise
        versions.forget()

    def mark_serving(self, version: int) -> None:
        """Make ``version`` the serving one (the active-version record the API and projectors read); the previously
        serving version becomes ``building``. Refused if the version has no view table."""
        if self._describe(keys.view_table_name(self._prefix, version)) is None:
            raise RegistryError(f"view version {version} has no table ({keys.view_table_name(self._prefix, version)})")
        versions.set_active_view_version(self._client, self._control, version)

    def retire(self, version: int, grace: timedelta = DEFAULT_GRACE, *, now: datetime | None = None) -> ViewVersion:
        """Mark ``version`` retired; a :meth:`sweep` after ``now + grace`` deletes its table and search index.

        Refused for the serving version. Promoting a retired version before the sweep un-retires it.
        """
        if grace < timedelta(0):
            raise RegistryError("grace must not be negative")
        if version == self.serving():
            raise RegistryError(f"view version {version} is serving: promote another version before retiring it")
        existing = self.get(version)
        if existing is None:
            raise RegistryError(f"no view version {version} (no table, no record)")
        if existing.dropped_at:
            raise RegistryError(f"view version {version} was already deleted at {existing.dropped_at}")
        r = self._records
        at = now or datetime.now(UTC)
        try:
            # The condition guards the race with a promotion that made it serving after the check above.
            self._upsert(version, [r.retire_after.set(_iso(at + grace)), r.phase.remove()], state="retired",
                         condition=r.state.does_not_exist() | (r.state != "serving"), now=at)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise RegistryError(f"view version {version} became serving: not retired") from exc
            raise
        found = self.get(version)
        assert found is not None
        return found

    def sweep(self, now: datetime | None = None) -> Sequence[int]:
        """Delete the view table and search index of every retired version whose grace has expired.

        Returns the versions deleted. Their records stay (``dropped_at`` set, ``item_count`` 0) as the history
        of what was served. The serving version is never deleted, whatever its record says.
        """
        at = now or datetime.now(UTC)
        serving = self.serving()
        dropped = []
        for v in self.list():
            if v.state != "retired" or v.dropped_at or v.version == serving or not v.retire_after:
                continue
            if datetime.fromisoformat(v.retire_after) > at:
                continue
            try:
                self._client.delete_table(TableName=keys.view_table_name(self._prefix, v.version))
            except self._client.exceptions.ResourceNotFoundException:
                pass  # deleted already (by hand, or a sweep that stopped before recording it)
            search.drop_index(v.version)
            r = self._records
            with botocore_errors():
                r(keys.VIEWS_PK, keys.view_version_sk(v.version)).update(actions=[
                    r.dropped_at.set(_iso(at)), r.item_count.set(0), r.counted_at.set(_iso(at))])
            dropped.append(v.version)
        return dropped

    def count(self, version: int, *, exact: bool = False) -> int | None:
        """Count a version's items and record it (``item_count``, ``counted_at``); ``None`` if it has no table.

        ``exact=False`` reads DescribeTable's ``ItemCount`` (free, but DynamoDB refreshes it about every six
        hours); ``exact=True`` runs a ``Select=COUNT`` scan (reads the whole table: read units for every 4 KB).
        """
        table = keys.view_table_name(self._prefix, version)
        if exact:
            try:
                n = sum(int(page["Count"]) for page in self._client.get_paginator("scan").paginate(
                    TableName=table, Select="COUNT"))
            except self._client.exceptions.ResourceNotFoundException:
                return None
        else:
            described = self._describe(table)
            if described is None:
                return None
            n = int(described.get("ItemCount", 0))
        r = self._records
        self._upsert(version, [r.item_count.set(n), r.counted_at.set(_iso(datetime.now(UTC)))])
        return n

    def record_built_through(self, version: int, positions: Mapping[str, str]) -> None:
        """Record how far ``version`` is built: ``{"<stream table>/<shard id>": sequence number}`` (replaces)."""
        r = self._records
        self._upsert(version, [r.built_through.set({str(k): str(v) for k, v in positions.items()})])
