"""BackgroundServer: a real uvicorn in a thread, on 127.0.0.1 and a free port."""

from __future__ import annotations

import httpx

from grafos_scheduler import BackgroundServer


def test_server_binds_loopback_and_serves(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
