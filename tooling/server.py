"""Serve the Chalice app on 127.0.0.1 with Chalice's threaded local gateway.

Like API Gateway's request decompression on AWS, the server inflates a ``Content-Encoding: gzip`` request
body before the app sees it (the app registers no binary media type for JSON, so any client works
whatever its ``Accept`` header). Inflation stops at the app's request limit: a larger or invalid body is
handed on untouched, and the app answers it with its 400 naming the limit.

A path no route matches answers 404 JSON naming the path and the nearest served one
(:func:`chalicelib.paths.not_found`), where Chalice's local gateway imitates API Gateway's SigV4 403
("Missing Authentication Token"); on AWS the compute template's gateway response does the same
(``cfn/generate.py``).
"""

from __future__ import annotations

import json
import threading
import zlib
from typing import Any

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    ForbiddenError,
    LocalChalice,
    LocalDevServer,
    LocalGatewayException,
)

from chalicelib.ingest import MAX_REQUEST_BYTES
from chalicelib.paths import not_found

__all__ = ["GzipRequestHandler", "LocalHttpServer", "inflate"]


def inflate(body: bytes, limit: int = MAX_REQUEST_BYTES) -> bytes | None:
    """The decompressed gzip ``body``, or None if it is not complete, valid gzip of at most ``limit`` bytes."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = d.decompress(body, limit + 1)
    except zlib.error:
        return None
    if len(data) > limit or d.unconsumed_tail or not d.eof:
        return None
    return data


class GzipRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, with gzip request bodies inflated in front of the app.

    ``TCP_NODELAY`` on every connection: the handler writes a response's headers and its body in two
    sends, and with Nagle's algorithm the body waited for the client's delayed ACK of the headers —
    40 ms added to every keep-alive request (measured: 44.0 ms p50 for ``GET /api/openapi.json``, 1.8 ms
    with it; docs/PERFORMANCE.md)."""

    disable_nagle_algorithm = True

    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Any, config: Config) -> None:
        self._routes: dict[str, Any] = app_object.routes  # set first: the base class serves the request in __init__
        super().__init__(request, client_address, server, app_object, config)

    def _send_error_response(self, error: LocalGatewayException) -> None:
        # Without an authorizer, the local gateway raises ForbiddenError only when no route matches the path.
        if not isinstance(error, ForbiddenError):
            super()._send_error_response(error)
            return
        exc = not_found(self.command, self.path, {path: list(methods) for path, methods in self._routes.items()})
        self._send_http_response(exc.status, {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"},
                                 json.dumps(exc.body()))

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        headers, body = super()._parse_payload()
        lowered = {k.lower(): k for k in headers}
        enc = headers.get(lowered.get("content-encoding", ""), "")
        if body and enc.strip().lower() == "gzip":
            data = inflate(body)
            if data is not None:
                del headers[lowered["content-encoding"]]
                headers[lowered.get("content-length", "Content-Length")] = str(len(data))
                body = data
        return headers, body


class LocalHttpServer:
    """The public API, private API and dashboard on one loopback port (a background thread)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        config = Config.create(chalice_app=app, app_name="streamfold", chalice_stage="local")
        if not isinstance(app, CustomLocalChalice):  # what chalice.local.create_local_server does
            CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
            app.__class__ = CustomLocalChalice
        self._server = LocalDevServer(app, config, host, port, handler_cls=GzipRequestHandler)
        self.host = host
        self.port = self._server.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalHttpServer:
        self._server.server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server.server_close()
        if self._thread is not None:
            self._thread.join(5)
