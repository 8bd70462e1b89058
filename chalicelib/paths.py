"""The public paths of the ingest API, what a browser needs of them (CORS), and the 404 of every other path.

Segment's libraries use three spellings of the same HTTP Tracking API, all served with the same semantics:

* long paths ``/v1/batch``, ``/v1/track``, ``/v1/identify``, ``/v1/group``, ``/v1/page``, ``/v1/screen``,
  ``/v1/alias`` — the server-side SDKs (analytics-python, analytics-node, analytics-go, ...);
* ``/v1/import`` — the older name of ``/v1/batch`` (analytics-ruby and analytics-java still post there);
* short paths ``/v1/b``, ``/v1/t``, ``/v1/i``, ``/v1/g``, ``/v1/p``, ``/v1/s``, ``/v1/a`` — analytics.js
  (``@segment/analytics-next``: one letter, the call's type, per event; ``/v1/b`` with batching delivery)
  and the mobile SDKs (analytics-swift, analytics-kotlin, React Native: ``/v1/b``).

``/v1/m`` is where analytics.js posts its own telemetry (``{"series": [...]}``, no write key): accepted and
dropped. ``/v1/projects/{write_key}/settings`` is what the browser and mobile SDKs fetch before they send
anything (Segment serves it from its CDN); streamfold serves one naming itself as the API host.

Any other path answers 404 JSON naming the path and the nearest served one (:func:`not_found`), never API
Gateway's SigV4 403 ("Missing Authentication Token"), which sends a user off checking credentials.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from chalicelib.errors import ApiError, FieldError

__all__ = [
    "INGEST_ALLOW_HEADERS",
    "INGEST_EXPOSE_HEADERS",
    "INGEST_KINDS",
    "INGEST_MAX_AGE",
    "INGEST_PATHS",
    "METRICS_PATH",
    "SETTINGS_PATH",
    "SHORT_PATHS",
    "nearest",
    "not_found",
]

INGEST_KINDS = ("batch", "track", "identify", "group", "page", "screen", "alias")
SHORT_PATHS: dict[str, str] = {"/v1/b": "batch", "/v1/t": "track", "/v1/i": "identify", "/v1/g": "group",
                               "/v1/p": "page", "/v1/s": "screen", "/v1/a": "alias"}
# Path -> the message kind it takes. Long forms first: the order is the tie-break of :func:`nearest`.
INGEST_PATHS: dict[str, str] = {**{f"/v1/{k}": k for k in INGEST_KINDS}, "/v1/import": "batch", **SHORT_PATHS}
METRICS_PATH = "/v1/m"
SETTINGS_PATH = "/v1/projects/{write_key}/settings"

# What a browser on any website may send to the public paths (the CORS preflight's answer). analytics.js
# sends `Content-Type: text/plain` and `Authorization: Basic`, `X-Retry-Count` on a retry; a client that
# compresses sends `Content-Encoding: gzip`. A write key only writes, so every origin is allowed.
INGEST_ALLOW_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "X-Retry-Count")
# A 429's Retry-After is not a CORS-safelisted response header: without this analytics.js cannot read it.
INGEST_EXPOSE_HEADERS = ("Retry-After",)
INGEST_MAX_AGE = 7200  # seconds a browser may cache a preflight (Chromium caps it at 2 hours)


def _normalised(path: str) -> str:
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/").lower() or "/"


def _fill(template: str, path: str) -> str:
    """``template`` with each ``{param}`` replaced by the request's segment at that place (when there is one)."""
    want = path.split("/")
    parts = template.split("/")
    return "/".join(want[i] if p.startswith("{") and i < len(want) else p for i, p in enumerate(parts))


def nearest(path: str, method: str, served: Mapping[str, Iterable[str]]) -> str | None:
    """The served path most like ``path`` (``difflib`` ratio), preferring paths that take ``method``.

    ``served`` maps route templates (``/api/accounts/{account_id}``) to their methods, in order of
    preference for ties (long ingest paths first).
    """
    target = _normalised(path)
    best: tuple[float, str] | None = None
    for template, methods in served.items():
        candidate = _fill(template, target)
        score = difflib.SequenceMatcher(None, target, candidate.lower()).ratio()
        if method.upper() in {m.upper() for m in methods}:
            score += 0.1
        if best is None or score > best[0]:
            best = (score, template)
    return best[1] if best else None


def not_found(method: str, path: str, served: Mapping[str, Iterable[str]]) -> ApiError:
    """The 404 for a path (or a method on a path) nobody serves: names the path and the nearest served one."""
    shown = path.split("?", 1)[0]
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    near = nearest(shown, method, served)
    hint = ""
    if near is not None:
        methods = "|".join(sorted(m for m in served[near] if m != "OPTIONS"))
        hint = f"; the nearest served path is {methods} {near}"
    return ApiError(404, "not_found", f"no such path: {method.upper()} {shown}{hint}",
                    [FieldError("path", f"{method.upper()} {shown} is not served")],
                    extra={"path": shown, "nearest": near})
