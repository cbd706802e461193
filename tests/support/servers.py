"""Fixtures for the tests of the HTTP service and of its remote users (client, agent).

A real scheduler on each store (SQLite, PostgreSQL) with the real clock and executor,
the real Litestar app, a real uvicorn on 127.0.0.1. tests/scheduler/service/conftest.py
and remote/conftest.py import these fixtures; here they are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import (
    BackgroundServer,
    Scheduler,
    SchedulerClient,
    SchedulerStore,
    TokenConfig,
    create_app,
)

ADMIN_TOKEN = "admin-token-for-tests-0001"
WORKER_TOKENS = {
    "alice": "alice-token-for-tests-0001",
    "bob": "bob-token-for-tests-000001",
}

Client = TestClient[Litestar]
Headers = dict[str, dict[str, str]]
ERROR_KEYS = {"status", "error", "message", "field"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def granted(client: Client, h: dict[str, str], job: str = "job-a", ttl: float = 30.0) -> Any:
    """POST /v1/leases for one slot, which must be granted at once; the lease as JSON."""
    r = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": ttl}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()["lease"]


def acquire(client: Client, h: dict[str, str], job: str = "job-a", **body: Any) -> Any:
    """POST /v1/leases (one slot, ttl 30 s unless ``body`` says otherwise); the response."""
    payload = {"job": job, "slots": 1, "ttl": 30.0, **body}
    return client.post("/v1/leases", json=payload, headers=h)


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """The error body, after checking its status, its shape and that no traceback leaks."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


@pytest.fixture
def headers() -> Headers:
    """Authorization headers by principal: admin, alice, bob."""
    return {
        "admin": bearer(ADMIN_TOKEN),
        **{name: bearer(token) for name, token in WORKER_TOKENS.items()},
    }


@pytest.fixture
def tokens() -> TokenConfig:
    return TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)


@pytest.fixture
def scheduler(make_store: Callable[[], SchedulerStore]) -> Iterator[Scheduler]:
    """On each store in turn (``make_store``, tests/scheduler/conftest.py)."""
    with Scheduler(2, make_store(), max_defer=30.0) as s:
        s.start()
        yield s


@pytest.fixture
def app(scheduler: Scheduler, tokens: TokenConfig) -> Litestar:
    return create_app(scheduler, tokens)


@pytest.fixture
def client(app: Litestar) -> Iterator[Client]:
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
