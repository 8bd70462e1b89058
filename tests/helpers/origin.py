"""A second web origin on loopback: serves fixed pages and files, so a browser test's page is cross-origin to
the streamfold server (another port is another origin: the browser sends CORS preflights for real)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["StaticOrigin"]

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class StaticOrigin:
    """``http://127.0.0.1:<port>`` serving ``files`` (URL path -> text or a file on disk); 404 otherwise."""

    def __init__(self, files: dict[str, str | Path] | None = None) -> None:
        self.files: dict[str, str | Path] = dict(files or {})
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                found = origin.files.get(path)
                if found is None:
                    self.send_error(404)
                    return
                body = found.read_bytes() if isinstance(found, Path) else found.encode()
                suffix = (found.suffix if isinstance(found, Path) else Path(path).suffix) or ".html"
                self.send_response(200)
                self.send_header("Content-Type", TYPES.get(suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="origin", daemon=True)

    def __enter__(self) -> StaticOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
