"""Client-facing errors: every one becomes a 4xx JSON body naming the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApiError", "FieldError"]


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    index: int | None = None
    limit: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        if self.limit is not None:
            out["limit"] = self.limit
        return out


@dataclass
class ApiError(Exception):
    """An error with an HTTP status, a stable ``code`` and optional field details.

    The body carries Segment's ``code``/``message`` (the SDKs read those) plus ``field``,
    ``index`` and ``limit`` of the first problem and the full ``errors`` list.
    """

    status: int
    code: str
    message: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level members of the body

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.errors:
            out.update({k: v for k, v in self.errors[0].to_dict().items() if k != "message"})
            out["errors"] = [e.to_dict() for e in self.errors[:50]]
        out.update(self.extra)
        return out

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"
