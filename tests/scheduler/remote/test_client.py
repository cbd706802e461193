"""SchedulerClient against a real server: every call, the errors it raises, paging, cancel."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    AuthenticationFailed,
    BackgroundServer,
    LeaseGone,
    NotFound,
    PermissionDenied,
    RequestRejected,
    Scheduler,
    SchedulerClient,
    ServiceUnavailable,
    TokenConflict,
)
from support.scheduling import churn
from support.servers import WORKER_TOKENS


def test_client_round_trip(alice: SchedulerClient, admin: SchedulerClient) -> None:
    granted = alice.acquire("job-a", slots=1, ttl=30)
    assert granted.status == "granted"
    assert granted.lease is not None
    lease = granted.lease
    renewed = alice.renew(lease.lease_id, lease.fencing_token, ["checkpoint_in_progress"])
    assert renewed.preemption_requested is False
    assert alice.get(lease.lease_id).reasons == ["checkpoint_in_progress"]
    decision = admin.preempt(lease.lease_id, "test")
    assert decision.outcome == "deferred"
    with pytest.raises(TokenConflict):
        alice.renew(lease.lease_id, lease.fencing_token + 1)
    still_flushing = ["checkpoint_in_progress"]
    assert alice.renew(lease.lease_id, lease.fencing_token, still_flushing).preemption_requested
    admin.fence(lease.lease_id)
    with pytest.raises(LeaseGone) as gone:
        alice.renew(lease.lease_id, lease.fencing_token)
    assert gone.value.status == 410
    assert admin.audit_verify().ok
    assert admin.audit_head().seq == admin.audit(limit=1000).records[-1].seq
    assert [x.state for x in admin.leases("fenced")] == ["fenced"]
    assert "grafos_leases" in admin.metrics()


def test_client_errors_carry_status_and_field(
    server: BackgroundServer, alice: SchedulerClient
) -> None:
    with pytest.raises(RequestRejected) as bad:
        alice.acquire("job-a", slots=0, ttl=1)
    assert bad.value.field == "slots"
    with pytest.raises(NotFound):
        alice.get("0" * 32)
    with pytest.raises(PermissionDenied):
        alice.audit_verify()
    stranger = SchedulerClient(server.url, "not-a-real-token-0000")
    with stranger, pytest.raises(AuthenticationFailed):
        stranger.leases()
    with SchedulerClient("http://127.0.0.1:9", "x" * 20, timeout=0.5) as nowhere:
        with pytest.raises(ServiceUnavailable):
            nowhere.leases()
        assert nowhere.healthz() is False


def test_client_leases_follows_the_pages(
    server: BackgroundServer, admin: SchedulerClient, scheduler: Scheduler
) -> None:
    ids = churn(scheduler, "alice", 7)
    assert [x.lease_id for x in admin.leases(page_size=3)] == ids
    page = admin.lease_page("released", limit=5)
    assert [x.lease_id for x in page.leases] == ids[:5]
    assert page.next_after == ids[4]
    assert admin.lease_page(after=page.next_after).next_after is None


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
