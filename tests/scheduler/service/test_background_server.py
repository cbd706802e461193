"""BackgroundServer: a real uvicorn in a thread, on 127.0.0.1 and a free port.

Answers are not held back by Nagle's algorithm: the listening socket has TCP_NODELAY.
"""

from __future__ import annotations

import socket

import httpx
from litestar import Litestar

from grafos_scheduler import BackgroundServer
from support.internals import listening_socket


def test_server_binds_loopback_and_serves(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_the_listening_socket_disables_nagle(app: Litestar) -> None:
    with BackgroundServer(app) as server:
        listening = listening_socket(server)  # what uvicorn accepts on
        assert listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_an_accepted_socket_inherits_nodelay_here() -> None:
    # What the option on the listening socket buys on this platform (Linux: inherited).
    with socket.socket() as listening:
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        with socket.create_connection(listening.getsockname()[:2]):
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_port_zero_picks_a_free_port_known_before_start(app: Litestar) -> None:
    server = BackgroundServer(app, port=0)
    try:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
    finally:
        listening_socket(server).close()
