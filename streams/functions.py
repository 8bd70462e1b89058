"""A small registry of named handler functions with qualifiers (colours), like Lambda aliases.

A mapping targets ``"<name>:<qualifier>"`` (``"projector:blue"``). Handlers are registered
either as callables or lazily by import path (``"streams.handler:handler"``) so a mapping may
exist before its code does; :meth:`FunctionRegistry.resolve` raises
:class:`FunctionNotAvailable` until the path imports.
"""

from __future__ import annotations

import importlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.mapping import split_function

__all__ = [
    "DEFAULT_QUALIFIER",
    "PROJECTOR_PATH",
    "FunctionNotAvailable",
    "FunctionRegistry",
    "Handler",
    "LocalContext",
    "register",
    "registry",
    "resolve",
]

Handler = Callable[[dict[str, Any], Any], "dict[str, Any] | None"]
DEFAULT_QUALIFIER = "$LATEST"
PROJECTOR_PATH = "streams.handler:on_day_table_records"


class FunctionNotAvailable(LookupError):
    """No function registered under that name/qualifier, or its import path does not import."""


@dataclass
class LocalContext:
    """The parts of Lambda's context object handlers (and Powertools) use."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    timeout_seconds: float = 300.0
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


@dataclass
class _Entry:
    name: str
    qualifier: str
    target: Handler | str
    timeout_seconds: float = 300.0
    _resolved: Handler | None = None


class FunctionRegistry:
    """Named handlers by ``(name, qualifier)``; thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def register(self, name: str, handler: Handler | str, *, colour: str | None = None,
                 timeout_seconds: float = 300.0) -> None:
        """Register ``handler`` (a callable or ``"module:attr"``) as ``name:colour``.

        Args:
            name: function name (``"projector"``).
            handler: the handler, or its import path resolved on first use.
            colour: qualifier (``"blue"``/``"green"``); ``None`` registers ``$LATEST``.
            timeout_seconds: what ``context.get_remaining_time_in_millis()`` counts down from.
        """
        if ":" in name:
            raise ValueError("register the base name and pass the qualifier as colour=")
        q = colour or DEFAULT_QUALIFIER
        with self._lock:
            self._entries[(name, q)] = _Entry(name, q, handler, timeout_seconds)

    def unregister(self, name: str, colour: str | None = None) -> None:
        with self._lock:
            self._entries.pop((name, colour or DEFAULT_QUALIFIER), None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(f"{n}:{q}" if q != DEFAULT_QUALIFIER else n for n, q in self._entries)

    def resolve(self, function_name: str) -> tuple[Handler, LocalContext]:
        """The handler for ``"name[:qualifier]"`` and a fresh context for one invocation."""
        name, qualifier = split_function(function_name)
        q = qualifier or DEFAULT_QUALIFIER
        with self._lock:
            entry = self._entries.get((name, q))
        if entry is None:
            raise FunctionNotAvailable(f"function {function_name!r} is not registered")
        handler = entry._resolved
        if handler is None:
            if callable(entry.target):
                handler = entry.target
            else:
                handler = _import(entry.target)
            entry._resolved = handler
        ctx = LocalContext(function_name=name, function_version=q,
                           invoked_function_arn=f"arn:aws:lambda:local:000000000000:function:{name}:{q}",
                           log_group_name=f"/aws/lambda/{name}", timeout_seconds=entry.timeout_seconds)
        return handler, ctx


def _import(path: str) -> Handler:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        handler = getattr(module, attr or "handler")
    except Exception as exc:
        raise FunctionNotAvailable(f"cannot import {path!r}: {exc!r}") from exc
    if not callable(handler):
        raise FunctionNotAvailable(f"{path!r} is not callable")
    return handler  # type: ignore[no-any-return]


registry = FunctionRegistry()
"""The process-wide registry the local runtime uses by default."""

# blue and green are two deployments of the same code locally.
registry.register("projector", PROJECTOR_PATH, colour="blue")
registry.register("projector", PROJECTOR_PATH, colour="green")


def register(name: str, handler: Handler | str, *, colour: str | None = None, timeout_seconds: float = 300.0) -> None:
    """Register a handler in the default :data:`registry` (see :meth:`FunctionRegistry.register`)."""
    registry.register(name, handler, colour=colour, timeout_seconds=timeout_seconds)


def resolve(function_name: str) -> tuple[Handler, LocalContext]:
    """Resolve in the default :data:`registry`."""
    return registry.resolve(function_name)
