"""Fixtures for the service tests: a real scheduler on SQLite, the real app, real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import Scheduler, SqliteStore
from grafos_scheduler._remote._client import SchedulerClient
from grafos_scheduler._service._app import BackgroundServer, create_app
from grafos_scheduler._service._auth import TokenConfig

ADMIN_TOKEN = "admin-token-for-tests-0001"
WORKER_TOKENS = {
    "alice": "alice-token-for-tests-0001",
    "bob": "bob-token-for-tests-000001",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def headers() -> dict[str, dict[str, str]]:
    """Authorization headers by principal: admin, alice, bob."""
    return {
        "admin": bearer(ADMIN_TOKEN),
        **{name: bearer(token) for name, token in WORKER_TOKENS.items()},
    }


@pytest.fixture
def tokens() -> TokenConfig:
    return TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    with Scheduler(2, SqliteStore(tmp_path / "scheduler.db"), max_defer=30.0) as s:
        s.start()
        yield s


@pytest.fixture
def app(scheduler: Scheduler, tokens: TokenConfig) -> Litestar:
    return create_app(scheduler, tokens)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(app: Litestar) -> Iterator[BackgroundServer]:
    with BackgroundServer(app) as s:
        yield s


@pytest.fixture
def alice(server: BackgroundServer) -> Iterator[SchedulerClient]:
    with SchedulerClient(server.url, WORKER_TOKENS["alice"]) as c:
        yield c


@pytest.fixture
def admin(server: BackgroundServer) -> Iterator[SchedulerClient]:
    with SchedulerClient(server.url, ADMIN_TOKEN) as c:
        yield c
