"""``BackgroundServer``: uvicorn serving an app from a thread (demo, tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from litestar.types import ASGIApp

from ._http_protocol import HttpProtocol

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """uvicorn serving ``app`` from a thread, on a socket bound before it starts.

    Binding first means the port is known (``port=0`` picks a free one) and the server
    is reachable as soon as :meth:`start` returns. For the demo, tests and benchmarks;
    ``grafos-scheduler serve`` runs uvicorn in the main thread instead.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Answers are small writes: without TCP_NODELAY, Nagle's algorithm can hold one
        # back until the client's delayed ACK (tens of ms). Accepted sockets inherit it.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            app,
            http=HttpProtocol,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        self._thread.start()
        give_up = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
