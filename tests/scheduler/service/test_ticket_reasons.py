"""GET /v1/tickets and GET /v1/tickets/{id} say why each ticket waits (real server)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from grafos_scheduler import BackgroundServer, SchedulerClient
from support.servers import ADMIN_TOKEN, WORKER_TOKENS, assert_error, bearer

ADMIN = bearer(ADMIN_TOKEN)
ALICE = bearer(WORKER_TOKENS["alice"])
BOB = bearer(WORKER_TOKENS["bob"])


@pytest.fixture
def http(server: BackgroundServer) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _acquire(http: httpx.Client, h: dict[str, str], job: str, slots: int, priority: int) -> Any:
    body = {"job": job, "slots": slots, "ttl": 600, "priority": priority}
    return http.post("/v1/leases", json=body, headers=h).json()


def test_deferred_victims_with_deadlines_then_the_head(http: httpx.Client) -> None:
    # Capacity 2: alice's low lease, held, is the victim of bob's wide ticket; a small
    # ticket behind bob's would fit in nothing yet, a third waits behind the head.
    low = _acquire(http, ALICE, "low", 2, 0)["lease"]
    http.post(f"/v1/leases/{low['lease_id']}/holds", json={"reason": "drain"}, headers=ADMIN)
    wide = _acquire(http, BOB, "wide", 2, 5)["ticket"]
    answer = http.get("/v1/tickets", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    [ticket] = answer.json()["tickets"]
    assert ticket["ticket_id"] == wide["ticket_id"]
    wait = ticket["wait"]
    assert wait["reason"] == "awaiting_preemptions"
    assert (wait["position"], wait["needed_slots"], wait["free_slots"]) == (1, 2, 0)
    assert (wait["pending_slots"], wait["shortfall"], wait["eligible_slots"]) == (2, 0, 0)
    [deferred] = wait["deferred_victims"]
    assert deferred["lease_id"] == low["lease_id"]
    assert deferred["reasons"] == ["operator_hold"]
    assert 29 < deferred["deadline_in"] <= 30
    assert "deferred preemption" in ticket["why"]
    polled = http.get(f"/v1/tickets/{wide['ticket_id']}", headers=BOB).json()
    assert polled["status"] == "pending"
    assert polled["ticket"]["wait"] == wait | {
        "deferred_victims": polled["ticket"]["wait"]["deferred_victims"]
    }


def test_insufficient_victims_and_blocked_behind_the_head(http: httpx.Client) -> None:
    top = _acquire(http, ALICE, "top", 1, 9)["lease"]
    _acquire(http, ALICE, "mid", 1, 7)
    wide = _acquire(http, BOB, "wide", 2, 5)["ticket"]  # nothing below priority 5
    http.post(f"/v1/leases/{top['lease_id']}/release", headers=ALICE)  # 1 free now
    # 'wide' still lacks one: it holds the queue, and 'small' would fit in the free slot.
    small = _acquire(http, ALICE, "small", 1, 1)["ticket"]
    tickets = http.get("/v1/tickets", headers=ADMIN).json()["tickets"]
    assert [t["ticket_id"] for t in tickets] == [wide["ticket_id"], small["ticket_id"]]
    head, behind = (t["wait"] for t in tickets)
    assert head["reason"] == "insufficient_victims"
    assert (head["shortfall"], head["eligible_slots"], head["free_slots"]) == (1, 0, 1)
    assert behind["reason"] == "blocked_behind_head"
    assert behind["blocked_by"] == wide["ticket_id"]
    assert tickets[1]["why"].startswith("blocked behind the head of the queue")
    # A worker sees its own tickets only; the admin sees all.
    assert [t["ticket_id"] for t in http.get("/v1/tickets", headers=ALICE).json()["tickets"]] == [
        small["ticket_id"]
    ]
    assert_error(http.get(f"/v1/tickets/{wide['ticket_id']}", headers=ALICE), 403)


def test_client_tickets(alice: SchedulerClient, admin: SchedulerClient) -> None:
    assert alice.acquire("a", slots=2, ttl=600).lease is not None
    pending = alice.acquire("b", slots=1, ttl=600, priority=-1)
    assert pending.ticket is not None
    [ticket] = admin.tickets()
    assert ticket.ticket_id == pending.ticket.ticket_id
    assert ticket.wait is not None
    assert ticket.wait.reason == "insufficient_victims"
    assert ticket.why is not None
    assert [t.ticket_id for t in alice.tickets()] == [ticket.ticket_id]
