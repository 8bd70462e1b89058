"""Serve the Chalice app on 127.0.0.1 with Chalice's threaded local gateway."""

from __future__ import annotations

import threading
from typing import Any

from chalice.config import Config
from chalice.local import CustomLocalChalice, LocalDevServer, create_local_server

__all__ = ["LocalHttpServer"]


class LocalHttpServer:
    """The public API, private API and dashboard on one loopback port (a background thread)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        config = Config.create(chalice_app=app, app_name="streamfold", chalice_stage="local")
        if isinstance(app, CustomLocalChalice):  # already adapted by an earlier server in this process
            self._server = LocalDevServer(app, config, host, port)
        else:
            self._server = create_local_server(app, config, host, port)
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
