"""The dashboard's static files (``chalicelib/dashboard/``) and the vendored Chart.js.

Routes in ``app.py``::

    /                 -> serve("index.html")
    /assets/{name}    -> serve(name)
    /vendor/{name}    -> serve("vendor/" + name)

Only files that really are in the dashboard directory (no sub-directories, no dot files) and
the names in :data:`VENDOR` are served; anything else, including every path-traversal
attempt, is a 404 JSON ``{"code": "not_found", "message": ...}``. Text files are returned
as ``str`` so no API Gateway binary-media configuration is needed.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from chalice import Response

from chalicelib.settings import PROJECT_ROOT

__all__ = ["DASHBOARD_DIR", "VENDOR", "serve"]

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"

# Public vendor name -> candidate files, first existing wins: node_modules locally, or a copy
# placed next to the dashboard by a packaging step (node_modules is not in the Lambda zip).
VENDOR: dict[str, tuple[Path, ...]] = {
    "chart.umd.js": (
        PROJECT_ROOT / "node_modules" / "chart.js" / "dist" / "chart.umd.js",
        DASHBOARD_DIR / "vendor" / "chart.umd.js",
    ),
}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# index.html is always revalidated (it names the assets); our assets are not content-hashed,
# so they are cached briefly and revalidated by ETag; the vendored library changes only with
# package-lock.json.
CACHE_HTML = "no-cache"
CACHE_ASSET = "public, max-age=300, must-revalidate"
CACHE_VENDOR = "public, max-age=86400"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HTML_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}$")


def _not_found(path: str) -> Response:
    shown = path if len(path) <= 100 else path[:100] + "..."
    body = {"code": "not_found", "message": f"no such file: {shown!r}"}
    return Response(body=json.dumps(body), status_code=404,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store", **SECURITY_HEADERS})


def _resolve(path: str) -> tuple[Path, str] | None:
    """The file for ``path`` and its Cache-Control, or ``None`` when it must not be served."""
    if not isinstance(path, str) or "\\" in path or "\x00" in path:
        return None
    if path.startswith("vendor/"):
        name = path[len("vendor/"):]
        for candidate in VENDOR.get(name, ()):
            if candidate.is_file():
                return candidate, CACHE_VENDOR
        return None
    if not _SAFE_NAME.match(path) or ".." in path:
        return None
    if Path(path).suffix.lower() not in CONTENT_TYPES:
        return None
    candidate = (DASHBOARD_DIR / path).resolve()
    if candidate.parent != DASHBOARD_DIR.resolve() or not candidate.is_file():
        return None
    return candidate, CACHE_HTML if candidate.suffix == ".html" else CACHE_ASSET


@lru_cache(maxsize=64)
def _load(file: Path, mtime_ns: int, size: int) -> tuple[str, str]:
    text = file.read_text(encoding="utf-8")
    etag = '"' + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + '"'
    return text, etag


def serve(path: str, if_none_match: str | None = None) -> Response:
    """Return the static file named by ``path`` (``"index.html"``, ``"app.js"``, ``"vendor/chart.umd.js"``).

    ``if_none_match`` is the request's ``If-None-Match`` header, if the caller passes it: a
    matching ETag gives an empty ``304``.
    """
    found = _resolve(path)
    if found is None:
        return _not_found(path)
    file, cache = found
    st = file.stat()
    text, etag = _load(file, st.st_mtime_ns, st.st_size)
    headers: dict[str, str | list[str]] = {"Cache-Control": cache, "ETag": etag, **SECURITY_HEADERS}
    if file.suffix == ".html":
        headers.update(HTML_HEADERS)
    if if_none_match and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
        return Response(body="", status_code=304, headers=headers)
    headers["Content-Type"] = CONTENT_TYPES[file.suffix.lower()]
    return Response(body=text, status_code=200, headers=headers)
