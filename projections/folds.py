"""Fold versions: what a view version holds, as code. A projection version is a (fold, table) pair.

A view table ``view-v<N>`` is written by the fold of the greatest released fold version <= N
(:func:`fold_for`): version 1 tables (read through the upcasters) and version 2 by :data:`FOLDS` ``[2]``,
version 3 and any newer scratch table (the bench's ``v102``) by ``FOLDS[3]`` until a fold 4 exists. The live
projector writes every serving or building version with its own fold, so a schema change runs beside the
version it replaces.

Released folds:

``2``
    per account-day: event counts by name, a distinct-user sketch (:class:`projections.account.DayActivity`).
``3``
    as 2, plus each name's distinct users per account-day (``DayActivity.names``): the per-key-feature weekly
    active users of the API's account detail (``key_features_wau``) and of the health score's
    ``key_feature_wau`` factor. Every other item is written exactly as by fold 2.

:attr:`Fold.code` names the code that wrote a table (``META``/``FOLD_CODE``): the fold version and a digest of
the fold code. Two tables written by the same code must be equal item for item (replay == live); a difference
between them is damage, not an upgrade (``streamfold replay --compare``). The digest is taken of the loaded
code of ``projections/`` (bytecode, constants and names of every function and class, and the module
constants; not file names or line numbers), so it needs no file read here (the layer is pure) and is the same
in the Lambda zip, in the CLI and in a worker process of the same Python minor version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import CodeType
from typing import Any, Final

from projections import account, catalog, events, formats, health, registers, timeline, usage, user, userday
from projections.account import DayActivity
from projections.events import FrozenMap

__all__ = ["FOLDS", "LATEST", "Fold", "fold_for", "source_digest"]


@dataclass(frozen=True)
class Fold:
    """One fold version: which per-day facts the view keeps.

    Attributes:
        version: the fold version (2 or 3).
        name_users: per-event-name distinct users per account-day (version 3).
    """

    version: int
    name_users: bool

    @property
    def code(self) -> str:
        """``"v<version>:<digest>"``: the fold version and a digest of the fold code (:func:`source_digest`)."""
        return f"v{self.version}:{source_digest()}"

    def one(self, name: str, who: str | None) -> DayActivity:
        """One event of ``name`` by ``who`` (a user or None) on an account-day counter."""
        return DayActivity.of_named([(name, who)], name_users=self.name_users)

    def many(self, named: Iterable[tuple[str, str | None]]) -> DayActivity:
        """Events ``(name, who)`` on an account-day counter: :meth:`one` of each, merged, in one pass."""
        return DayActivity.of_named(named, name_users=self.name_users)

    def of_user(self, counts: FrozenMap[int], who: str) -> DayActivity:
        """A user's counted usage (a user-day's counters) on an account-day: retro attribution."""
        return DayActivity.of_user(counts, who, name_users=self.name_users)

    def fold_all(self, evs: Iterable[events.Event],
                 states: dict[str, account.AccountState] | None = None) -> dict[str, account.AccountState]:
        """:func:`projections.account.fold_all` with this fold's per-day facts."""
        return account.fold_all(evs, states, name_users=self.name_users)


FOLDS: Final[dict[int, Fold]] = {2: Fold(2, False), 3: Fold(3, True)}
LATEST: Final = 3


def fold_for(version: int) -> Fold:
    """The fold of the greatest released fold version <= ``version`` (version 1, a legacy table read by
    upcasting: fold 2).

    Raises:
        ValueError: for a version below 1.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"view version must be an integer >= 1, not {version!r}")
    return FOLDS[max(v for v in FOLDS if v <= max(version, min(FOLDS)))]


# --- the digest of the fold code ------------------------------------------------------------------

_MODULES: Final = (account, catalog, events, formats, health, registers, timeline, usage, user, userday)
_SIMPLE = (int, float, str, bytes, bool, type(None))
_digest: list[str] = []


def source_digest() -> str:
    """A digest (12 hex characters) of the code of ``projections/``: what decides a view's content. Computed
    once per process."""
    if not _digest:
        h = hashlib.blake2b(digest_size=6)
        namespaces = {m.__name__: vars(m) for m in _MODULES} | {__name__: globals()}
        for module_name, namespace in sorted(namespaces.items()):
            h.update(module_name.encode())
            _module(h, module_name, namespace)
        _digest.append(h.hexdigest())
    return _digest[0]


def _module(h: Any, module_name: str, namespace: dict[str, Any]) -> None:
    for name, obj in sorted(namespace.items()):
        if name.startswith("__") and name != "__doc__":
            continue
        if isinstance(obj, type) and obj.__module__ == module_name:
            h.update(f"class {name}".encode())
            for attr, value in sorted(vars(obj).items()):
                _member(h, attr, value, module_name)
        else:
            _member(h, name, obj, module_name)


def _member(h: Any, name: str, obj: Any, module_name: str) -> None:
    for candidate in (obj, getattr(obj, "__func__", None), getattr(obj, "fget", None), getattr(obj, "fset", None)):
        code = getattr(candidate, "__code__", None)
        if isinstance(code, CodeType) and getattr(candidate, "__module__", None) == module_name:
            h.update(f"def {name}".encode())
            _code(h, code)
    if isinstance(obj, (*_SIMPLE, tuple, frozenset)):
        h.update(f"{name}={_const(obj)}".encode())


def _code(h: Any, code: CodeType) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, code.co_argcount,
                   code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            _code(h, const)
        else:
            h.update(_const(const).encode())


def _const(value: Any) -> str:
    """A representation independent of the process (set order varies with string hashing)."""
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(_const(v) for v in value)) + ")"
    if isinstance(value, tuple):
        return "(" + ",".join(_const(v) for v in value) + ")"
    if isinstance(value, _SIMPLE):
        return repr(value)
    return type(value).__name__

