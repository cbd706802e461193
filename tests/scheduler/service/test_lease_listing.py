"""Review findings 14, 15 and 22 through the HTTP API, the client and the agent.

14: GET /v1/leases is paged (limit, after, next_after), a worker still sees only its own.
15: the 409 for a taken job shows the lease or ticket id only to its holder or the admin.
22: DELETE /v1/tickets/{id}, SchedulerClient.cancel_ticket, and WorkerAgent.acquire's
    timeout leaves no ticket behind.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import Lease, LeaseState, Scheduler
from grafos_scheduler._remote._agent import WorkerAgent
from grafos_scheduler._remote._client import (
    NotFound,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    TokenConflict,
)
from grafos_scheduler._service._app import BackgroundServer

from .conftest import WORKER_TOKENS

Client = TestClient[Litestar]
Headers = dict[str, dict[str, str]]
HEX32 = re.compile(r"[0-9a-f]{32}")


def acquire(client: Client, h: dict[str, str], job: str, **body: Any) -> Any:
    return client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": 30.0, **body}, headers=h)


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "error", "message", "field"}
    return body


def churn(scheduler: Scheduler, holder: str, n: int) -> list[str]:
    """Grant and release ``n`` leases for ``holder``; their ids in grant order."""
    ids = []
    for i in range(n):
        lease = scheduler.acquire(f"{holder}-{i}", holder, 0, 1, 60.0)
        assert isinstance(lease, Lease), lease
        scheduler.release(lease.lease_id)
        ids.append(f"{lease.lease_id:032x}")
    return ids


# ------------------------------------------------------------ 14: paged list


def test_list_leases_is_paged_with_a_cursor(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    ids = churn(scheduler, "alice", 105)
    first = client.get("/v1/leases", headers=headers["admin"]).json()
    assert len(first["leases"]) == 100  # the default page
    assert [x["lease_id"] for x in first["leases"]] == ids[:100]  # oldest grant first
    assert first["next_after"] == ids[99]
    rest = client.get(
        "/v1/leases", params={"after": first["next_after"]}, headers=headers["admin"]
    ).json()
    assert [x["lease_id"] for x in rest["leases"]] == ids[100:]
    assert rest["next_after"] is None
    small = client.get("/v1/leases?limit=2&state=released", headers=headers["admin"]).json()
    assert [x["lease_id"] for x in small["leases"]] == ids[:2]
    assert small["next_after"] == ids[1]
    assert client.get("/v1/leases?state=active", headers=headers["admin"]).json() == {
        "leases": [],
        "next_after": None,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("after=zz", "after"),
        ("after=" + "0" * 32, "after"),  # well formed, but no such lease
    ],
)
def test_list_leases_refuses_bad_pages(
    client: Client, headers: Headers, query: str, field: str
) -> None:
    body = error(client.get(f"/v1/leases?{query}", headers=headers["admin"]), 400)
    assert body["field"] == field


def test_list_leases_max_page_is_1000(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    churn(scheduler, "bob", 3)
    body = client.get("/v1/leases?limit=1000", headers=headers["admin"]).json()
    assert len(body["leases"]) == 3
    assert body["next_after"] is None


def test_a_worker_pages_through_its_own_leases_only(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    mine = churn(scheduler, "alice", 3)
    theirs = churn(scheduler, "bob", 3)
    page = client.get("/v1/leases?limit=2", headers=headers["alice"]).json()
    assert [x["lease_id"] for x in page["leases"]] == mine[:2]
    page = client.get(
        "/v1/leases", params={"limit": 2, "after": page["next_after"]}, headers=headers["alice"]
    ).json()
    assert [x["lease_id"] for x in page["leases"]] == mine[2:]
    assert page["next_after"] is None
    # Another worker's lease as a cursor: refused like an unknown one, nothing shown.
    body = error(
        client.get("/v1/leases", params={"after": theirs[0]}, headers=headers["alice"]), 400
    )
    assert body["field"] == "after"


def test_client_leases_follows_the_pages(
    server: BackgroundServer, admin: SchedulerClient, scheduler: Scheduler
) -> None:
    ids = churn(scheduler, "alice", 7)
    assert [x.lease_id for x in admin.leases(page_size=3)] == ids
    page = admin.lease_page("released", limit=5)
    assert [x.lease_id for x in page.leases] == ids[:5]
    assert page.next_after == ids[4]
    assert admin.lease_page(after=page.next_after).next_after is None


# ------------------------------------------------------------ 15: 409 reveals no id


def test_a_taken_job_409_hides_the_lease_id_from_another_worker(
    client: Client, headers: Headers
) -> None:
    lease_id = acquire(client, headers["alice"], "sem-a").json()["lease"]["lease_id"]
    refused = error(acquire(client, headers["bob"], "sem-a"), 409)
    assert refused["error"] == "job_already_leased"
    assert "'sem-a'" in refused["message"]
    assert lease_id not in refused["message"]
    assert not HEX32.search(refused["message"])
    assert "alice" not in refused["message"]
    # The holder and the admin still get the id.
    for who in ("alice", "admin"):
        own = error(acquire(client, headers[who], "sem-a"), 409)
        assert own["error"] == "job_already_leased"
        assert lease_id in own["message"], who


def test_a_queued_job_409_hides_the_ticket_id_from_another_worker(
    client: Client, headers: Headers
) -> None:
    acquire(client, headers["alice"], "big", slots=2)
    ticket_id = acquire(client, headers["alice"], "sem-b").json()["ticket"]["ticket_id"]
    refused = error(acquire(client, headers["bob"], "sem-b"), 409)
    assert "'sem-b'" in refused["message"]
    assert "pending ticket" in refused["message"]
    assert not HEX32.search(refused["message"])
    own = error(acquire(client, headers["alice"], "sem-b"), 409)
    assert ticket_id in own["message"]


# ------------------------------------------------------------ 22: cancel a ticket


def test_delete_ticket_statuses_and_auth(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    blocker = acquire(client, headers["alice"], "big", slots=2).json()["lease"]
    ticket = acquire(client, headers["bob"], "job-b").json()["ticket"]
    url = f"/v1/tickets/{ticket['ticket_id']}"
    error(client.delete(url), 401)
    assert error(client.delete(url, headers=headers["alice"]), 403)["error"] == "forbidden"
    assert [t.job for t in scheduler.tickets()] == ["job-b"]  # untouched by the refusals
    cancelled = client.delete(url, headers=headers["bob"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == ticket | {"requested_at": cancelled.json()["requested_at"]}
    assert scheduler.tickets() == []
    assert error(client.get(url, headers=headers["bob"]), 404)["error"] == "unknown_ticket"
    assert error(client.delete(url, headers=headers["bob"]), 404)["error"] == "unknown_ticket"
    assert error(client.delete("/v1/tickets/XYZ", headers=headers["bob"]), 400)["field"] == (
        "ticket_id"
    )
    # The admin may cancel anyone's; the audit log records it.
    other = acquire(client, headers["bob"], "job-c").json()["ticket"]
    assert (
        client.delete(f"/v1/tickets/{other['ticket_id']}", headers=headers["admin"]).status_code
        == 200
    )
    kinds = [r["kind"] for r in client.get("/v1/audit", headers=headers["admin"]).json()["records"]]
    assert kinds.count("ticket_cancelled") == 2
    # A ticket granted already: 409, naming the lease to release instead.
    queued = acquire(client, headers["bob"], "job-d").json()["ticket"]
    client.post(f"/v1/leases/{blocker['lease_id']}/release", headers=headers["alice"])
    lease = client.get(f"/v1/tickets/{queued['ticket_id']}", headers=headers["bob"]).json()
    assert lease["status"] == "granted"
    # Another worker learns nothing of it (403 before 409).
    error(client.delete(f"/v1/tickets/{queued['ticket_id']}", headers=headers["alice"]), 403)
    granted = error(
        client.delete(f"/v1/tickets/{queued['ticket_id']}", headers=headers["bob"]), 409
    )
    assert granted["error"] == "ticket_granted"
    assert lease["lease"]["lease_id"] in granted["message"]


def test_client_cancel_ticket(
    server: BackgroundServer, alice: SchedulerClient, scheduler: Scheduler
) -> None:
    with SchedulerClient(server.url, WORKER_TOKENS["bob"]) as bob:
        blocker = alice.acquire("big", slots=2, ttl=30).lease
        assert blocker is not None
        ticket = bob.acquire("job-b", slots=1, ttl=30).ticket
        assert ticket is not None
        with pytest.raises(PermissionDenied):
            alice.cancel_ticket(ticket.ticket_id)
        assert bob.cancel_ticket(ticket.ticket_id).ticket_id == ticket.ticket_id
        with pytest.raises(NotFound):
            bob.cancel_ticket(ticket.ticket_id)
        with pytest.raises(RequestRejected):
            bob.cancel_ticket("not-an-id")
        queued = bob.acquire("job-c", slots=1, ttl=30).ticket
        assert queued is not None
        alice.release(blocker.lease_id)
        with pytest.raises(TokenConflict) as caught:
            bob.cancel_ticket(queued.ticket_id)
        assert caught.value.code == "ticket_granted"


def test_agent_timeout_leaves_no_ticket_behind(
    server: BackgroundServer, alice: SchedulerClient, scheduler: Scheduler
) -> None:
    blocker = alice.acquire("big", slots=2, ttl=30).lease
    assert blocker is not None
    with SchedulerClient(server.url, WORKER_TOKENS["bob"]) as bob:
        agent = WorkerAgent(bob, "job-b", ttl=5.0, poll_interval=0.02)
        with pytest.raises(TimeoutError, match="still pending"):
            agent.acquire(timeout=0.2)
        assert scheduler.tickets() == []
        kinds = [r.kind for r in scheduler.audit.records(limit=1000)]
        assert kinds[-1] == "ticket_cancelled"
        # Freeing the slots grants nothing to the abandoned request ...
        alice.release(blocker.lease_id)
        assert scheduler.lease_counts()[LeaseState.ACTIVE] == 0
        assert [x.job for x in scheduler.leases()] == ["big"]
        # ... and a retry is not refused with 409: it gets the lease at once.
        lease = agent.acquire(timeout=5.0)
        assert lease.job == "job-b"
        agent.release()


def test_agent_releases_a_lease_granted_while_it_withdrew(
    server: BackgroundServer, alice: SchedulerClient, scheduler: Scheduler
) -> None:
    """The grant races the cancel: the cancel gets 409, the agent releases the lease."""
    blocker = alice.acquire("big", slots=2, ttl=30).lease
    assert blocker is not None
    blocker_id = blocker.lease_id

    class RacingClient(SchedulerClient):
        def cancel_ticket(self, ticket_id: int | str) -> Any:
            alice.release(blocker_id)  # the ticket is granted just before
            return super().cancel_ticket(ticket_id)

    with RacingClient(server.url, WORKER_TOKENS["bob"]) as bob:
        agent = WorkerAgent(bob, "job-b", ttl=5.0, poll_interval=0.05)
        # A poll interval longer than the timeout: no poll sees the grant.
        agent.poll_interval = 0.3
        with pytest.raises(TimeoutError):
            agent.acquire(timeout=0.1)
    assert scheduler.tickets() == []
    ours = [x for x in scheduler.leases() if x.job == "job-b"]
    assert [x.state for x in ours] == [LeaseState.RELEASED]
    assert scheduler.used_slots == 0
    assert agent.lease is None
    assert agent._renewer is None  # no renew thread was started for it
