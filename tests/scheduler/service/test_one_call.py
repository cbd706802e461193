"""Each request is one scheduler call, with the holder check inside it.

The scheduler here is the real one on SQLite; a subclass only records which of its
use cases the service calls (then runs them). Before, a renewal made three calls
(``get`` to authorise, ``renew``, ``pending_preemption``) and a release two.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import Scheduler, SqliteStore, TokenConfig, create_app
from support.servers import ADMIN_TOKEN, WORKER_TOKENS, bearer

USE_CASES = frozenset(
    {
        "acquire",
        "poll",
        "cancel_ticket",
        "renew",
        "renew_lease",
        "renew_expiries",
        "release",
        "fence",
        "get",
        "leases",
        "lease_page",
        "lease_counts",
        "tickets",
        "ticket_wait",
        "ticket_waits",
        "hold",
        "unhold",
        "request_preemption",
        "pending_preemption",
        "reasons",
    }
)


class RecordingScheduler(Scheduler):
    """The real Scheduler, noting each use case called on it from outside."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._depth = threading.local()

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name not in USE_CASES:
            return value
        scheduler = self

        def recorded(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(scheduler._depth, "n", 0)
            if depth == 0:  # a call from the service, not one use case calling another
                scheduler.calls.append((name, kwargs))
            scheduler._depth.n = depth + 1
            try:
                return value(*args, **kwargs)
            finally:
                scheduler._depth.n = depth

        return recorded

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
def recording(tmp_path: Path) -> Iterator[RecordingScheduler]:
    # No executor thread: every recorded call comes from a request.
    scheduler = RecordingScheduler(
        2, SqliteStore(tmp_path / "scheduler.db"), max_defer=30.0, autostart=False
    )
    try:
        yield scheduler
    finally:
        scheduler.close()


@pytest.fixture
def http(recording: RecordingScheduler) -> Iterator[TestClient[Litestar]]:
    app = create_app(recording, TokenConfig(ADMIN_TOKEN, WORKER_TOKENS))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


ALICE = bearer(WORKER_TOKENS["alice"])
BOB = bearer(WORKER_TOKENS["bob"])
ADMIN = bearer(ADMIN_TOKEN)


def test_every_route_makes_one_scheduler_call(
    http: TestClient[Litestar], recording: RecordingScheduler
) -> None:
    def call(method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        recording.take()
        r = http.request(method, url, headers=headers, **kw)
        assert r.status_code < 300, r.text
        made = [name for name, _ in recording.take()]
        return r.json(), made

    body, made = call("POST", "/v1/leases", ALICE, json={"job": "a", "slots": 1, "ttl": 30})
    assert made == ["acquire"]
    lease = body["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    renew = {"fencing_token": lease["fencing_token"], "reasons": ["checkpoint_in_progress"]}
    # A renew is a batch of one: its answer needs the expiry, not a whole Lease.
    assert call("POST", f"{url}/renew", ALICE, json=renew)[1] == ["renew_expiries"]
    assert call("GET", url, ALICE)[1] == ["get"]
    assert call("GET", "/v1/leases", ALICE)[1] == ["lease_page"]
    assert call("POST", f"{url}/preempt", ADMIN, json={"cause": "room"})[1] == [
        "request_preemption"
    ]
    assert call("POST", f"{url}/release", ALICE)[1] == ["release"]

    other = call("POST", "/v1/leases", ALICE, json={"job": "b", "slots": 2, "ttl": 30})[0]
    waiting, _ = call("POST", "/v1/leases", BOB, json={"job": "c", "slots": 1, "ttl": 30})
    assert waiting["status"] == "pending"
    ticket = f"/v1/tickets/{waiting['ticket']['ticket_id']}"
    assert call("GET", ticket, BOB)[1] == ["ticket_wait"]
    assert call("GET", "/v1/tickets", BOB)[1] == ["ticket_waits"]
    held = f"/v1/leases/{other['lease']['lease_id']}/holds"
    assert call("POST", held, ADMIN, json={"reason": "r"})[1] == ["hold"]
    assert call("DELETE", held, ADMIN)[1] == ["unhold"]
    assert call("DELETE", ticket, BOB)[1] == ["cancel_ticket"]
    assert call("POST", f"/v1/leases/{other['lease']['lease_id']}/fence", ADMIN)[1] == ["fence"]


def test_the_holder_check_travels_with_the_call(
    http: TestClient[Litestar], recording: RecordingScheduler
) -> None:
    r = http.post("/v1/leases", json={"job": "a", "slots": 1, "ttl": 30}, headers=ALICE)
    lease = r.json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    renew = {"fencing_token": lease["fencing_token"]}
    recording.take()
    assert http.post(f"{url}/renew", json=renew, headers=BOB).status_code == 403
    assert http.get(url, headers=BOB).status_code == 403
    assert http.post(f"{url}/release", headers=BOB).status_code == 403
    assert http.get(url, headers=ADMIN).status_code == 200
    holders = [(name, kwargs.get("holder")) for name, kwargs in recording.take()]
    assert holders == [
        ("renew_expiries", "bob"),
        ("get", "bob"),
        ("release", "bob"),
        ("get", None),
    ]
    # Refused before anything changed: alice's renewal still works with her token.
    assert http.post(f"{url}/renew", json=renew, headers=ALICE).status_code == 200
