"""Small helpers that turn our errors into Chalice responses (never a 500 for client input)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from chalice import Response

from chalicelib.errors import ApiError
from chalicelib.log import logger

__all__ = ["json_response", "handle_errors", "basic_auth_user", "bearer_token"]

JSON = {"Content-Type": "application/json"}
# DynamoDB errors that mean *we* sent an invalid request (a key too long, a forged cursor that got through):
# never "retry later" — a 500 that is logged, so a test finds it, instead of a 503 a client retries forever.
_OUR_BUG = frozenset({"ValidationException", "SerializationException"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=json.dumps(body, default=str), status_code=status, headers={**JSON, **(headers or {})})


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map :class:`ApiError` to its 4xx body; storage trouble to a retryable 503."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            return json_response(exc.body(), exc.status, exc.headers)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
            if code in _OUR_BUG:
                logger.exception("invalid storage request")
                return json_response({"success": False, "code": "internal", "message": "internal error"}, 500)
            logger.exception("storage error")
            return json_response({"success": False, "code": "unavailable",
                                  "message": f"storage temporarily unavailable ({code}); retry"},
                                 503, {"Retry-After": "1"})
        except Exception:
            logger.exception("unhandled error")
            return json_response({"success": False, "code": "internal", "message": "internal error"}, 500)

    return wrapper


def basic_auth_user(header: str | None) -> str | None:
    """User name of an HTTP Basic ``Authorization`` header (Segment puts the write key there)."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _ = decoded.partition(":")
    return user or None


def bearer_token(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None
