"""The Scheduler against a real SQLite file: leasing, tickets, renewal, preemption."""

from __future__ import annotations

import threading

import pytest

from grafos_scheduler import (
    AuditKind,
    CapacityExceeded,
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    Lease,
    LeaseExpired,
    LeaseNotActive,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    SchedulerError,
    Ticket,
    UnknownLease,
    UnknownTicket,
)
from support.scheduling import SchedulerFactory, as_lease, as_ticket, audit_kinds

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def test_grant_fields_and_audit(scheduler: Scheduler, clock: ManualClock) -> None:
    clock.advance(2.0)
    lease = as_lease(scheduler.acquire("etl", "w1", 3, 2, 10.0))
    assert lease.state is LeaseState.ACTIVE
    assert lease.fencing_token == 1
    assert (lease.granted_at, lease.expires_at) == (2.0, 12.0)
    assert 0 <= lease.lease_id < 2**128
    assert scheduler.get(lease.lease_id) == lease
    assert scheduler.used_slots == 2
    assert audit_kinds(scheduler) == ["start", "grant"]
    grant = scheduler.audit.records()[-1]
    assert grant.lease_id == lease.lease_id
    assert grant.data["fencing_token"] == 1


def test_tokens_increase_per_job(scheduler: Scheduler) -> None:
    tokens = []
    for _ in range(3):
        lease = as_lease(scheduler.acquire("etl", "w", 0, 1, 5.0))
        tokens.append(lease.fencing_token)
        scheduler.release(lease.lease_id)
    assert tokens == [1, 2, 3]
    assert as_lease(scheduler.acquire("other", "w", 0, 1, 5.0)).fencing_token == 1


def test_request_bigger_than_capacity_refused(scheduler: Scheduler) -> None:
    with pytest.raises(CapacityExceeded, match="11 slots can never fit in a capacity of 10"):
        scheduler.acquire("big", "w", 0, 11, 5.0)
    assert scheduler.tickets() == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("", "w", 0, 1, 1.0), "job ''"),
        (("j", "", 0, 1, 1.0), "holder ''"),
        (("j", "w", 1.5, 1, 1.0), "priority 1.5"),
        (("j", "w", 0, 0, 1.0), "slots 0"),
        (("j", "w", 0, 1, -1.0), "ttl -1.0"),
        (("j", "w", 0, True, 1.0), "slots True"),
    ],
)
def test_bad_acquire_changes_nothing(
    scheduler: Scheduler, args: tuple[object, ...], fragment: str
) -> None:
    head = scheduler.audit.head()
    with pytest.raises(InvalidRequest) as info:
        scheduler.acquire(*args)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert scheduler.audit.head() == head


def test_second_acquire_for_a_job_is_refused(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("etl", "w1", 0, 1, 5.0))
    with pytest.raises(
        JobAlreadyLeased, match=f"'etl' already has active lease {lease.lease_id:032x}"
    ):
        scheduler.acquire("etl", "w2", 9, 1, 5.0)
    scheduler.release(lease.lease_id)
    assert as_lease(scheduler.acquire("etl", "w2", 0, 1, 5.0)).fencing_token == 2


def test_job_with_pending_ticket_is_refused(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(1)
    as_lease(scheduler.acquire("a", "w", 5, 1, 5.0))
    ticket = as_ticket(scheduler.acquire("b", "w", 5, 1, 5.0))
    with pytest.raises(JobAlreadyLeased, match=f"pending ticket {ticket.ticket_id:032x}"):
        scheduler.acquire("b", "w", 5, 1, 5.0)


def test_tickets_granted_by_priority_then_fifo(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(2)
    holder = as_lease(scheduler.acquire("hold", "w", 100, 2, 50.0))
    low = as_ticket(scheduler.acquire("low", "w", 1, 1, 50.0))
    first = as_ticket(scheduler.acquire("first", "w", 5, 1, 50.0))
    second = as_ticket(scheduler.acquire("second", "w", 5, 1, 50.0))
    assert [t.job for t in scheduler.tickets()] == ["first", "second", "low"]
    # A newcomer that would fit may not overtake waiting tickets of its priority or above.
    scheduler.release(holder.lease_id)
    assert as_lease(scheduler.poll(first.ticket_id)).job == "first"
    assert as_lease(scheduler.poll(second.ticket_id)).job == "second"
    assert isinstance(scheduler.poll(low.ticket_id), Ticket)
    granted = [r for r in scheduler.audit.records(limit=100) if r.kind == "grant"]
    assert granted[-1].data["ticket_id"] == f"{second.ticket_id:032x}"


def test_queue_head_blocks_smaller_newcomer(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(3)
    as_lease(scheduler.acquire("a", "w", 9, 2, 50.0))
    big = as_ticket(scheduler.acquire("big", "w", 9, 2, 50.0))
    # One slot is free, but a ticket of equal priority waits: queue behind it.
    assert isinstance(scheduler.acquire("small", "w", 9, 1, 50.0), Ticket)
    assert isinstance(scheduler.poll(big.ticket_id), Ticket)


def test_unknown_ticket(scheduler: Scheduler) -> None:
    with pytest.raises(UnknownTicket, match=f"{5:032x}"):
        scheduler.poll(5)


def test_renew_rules(scheduler: Scheduler, clock: ManualClock) -> None:
    lease = as_lease(scheduler.acquire("etl", "w", 0, 1, 10.0))
    clock.advance(6.0)
    renewed = scheduler.renew(lease.lease_id, lease.fencing_token)
    assert renewed.expires_at == 16.0
    with pytest.raises(FencingTokenMismatch, match="fencing token 7 does not match"):
        scheduler.renew(lease.lease_id, 7)
    head = scheduler.audit.head()
    clock.advance(10.0)  # exactly at expiry: expired
    with pytest.raises(LeaseExpired, match=f"lease {lease.lease_id:032x} expired"):
        scheduler.renew(lease.lease_id, lease.fencing_token)
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    # Renewals are not audited; the expiry is.
    assert [r.kind for r in scheduler.audit.records(after_seq=head[0])] == ["expire"]
    with pytest.raises(LeaseExpired):
        scheduler.renew(lease.lease_id, lease.fencing_token)
    with pytest.raises(LeaseExpired):
        scheduler.release(lease.lease_id)


def test_ended_lease_is_not_active(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("etl", "w", 0, 1, 10.0))
    released = scheduler.release(lease.lease_id)
    assert released.state is LeaseState.RELEASED
    with pytest.raises(LeaseNotActive, match="is released, not active"):
        scheduler.renew(lease.lease_id, lease.fencing_token)
    with pytest.raises(LeaseNotActive):
        scheduler.fence(lease.lease_id)
    with pytest.raises(UnknownLease):
        scheduler.release(12345)
    other = as_lease(scheduler.acquire("b", "w", 0, 1, 10.0))
    assert scheduler.fence(other.lease_id).state is LeaseState.FENCED
    assert {lease.state for lease in scheduler.leases()} == {
        LeaseState.RELEASED,
        LeaseState.FENCED,
    }
    assert scheduler.leases(LeaseState.ACTIVE) == []
    assert "fence" in audit_kinds(scheduler)
    assert "release" in audit_kinds(scheduler)


def test_marker_never_stops_expiry(scheduler: Scheduler, clock: ManualClock) -> None:
    lease = as_lease(scheduler.acquire("etl", "w", 0, 1, 5.0))
    scheduler.observer.on_flush_start(lease.lease_id)
    clock.advance(5.0)
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    scheduler.observer.on_flush_complete(lease.lease_id)
    assert scheduler.observer.misses == 1


def test_preemption_for_higher_priority(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(2)
    low = as_lease(scheduler.acquire("low", "w", 0, 2, 50.0))
    seen: list[Lease] = []
    scheduler.on_preempt(low.lease_id, seen.append)
    result = as_lease(scheduler.acquire("high", "w", 5, 2, 50.0))  # unmarked: at once
    assert result.job == "high"
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert seen == []  # callbacks are the executor's
    scheduler.tick()
    assert [lease.state for lease in seen] == [LeaseState.PREEMPTED]
    kinds = audit_kinds(scheduler)
    assert kinds[-4:] == ["queued", "preemption_requested", "preemption_executed", "grant"]


def test_no_preemption_of_equal_priority(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(1)
    first = as_lease(scheduler.acquire("a", "w", 5, 1, 50.0))
    assert isinstance(scheduler.acquire("b", "w", 5, 1, 50.0), Ticket)
    assert scheduler.get(first.lease_id).state is LeaseState.ACTIVE


def test_deferred_preemption_then_forced(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler(1, max_defer=4.0)
    low = as_lease(scheduler.acquire("low", "w", 0, 1, 50.0))
    scheduler.manager.mark_non_preemptible(low.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
    ticket = as_ticket(scheduler.acquire("high", "w", 5, 1, 50.0))
    pending = scheduler.pending_preemption(low.lease_id)
    assert pending is not None
    assert pending.deadline == 4.0
    assert pending.reasons == {NonPreemptibleReason.OPERATOR_HOLD}
    clock.advance(3.5)
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.ACTIVE
    clock.advance(0.5)
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert as_lease(scheduler.poll(ticket.ticket_id)).job == "high"
    forced = [r for r in scheduler.audit.records(limit=100) if r.kind == "preemption_forced"]
    assert forced[0].data["reasons"] == ["operator_hold"]
    deferred = [r for r in scheduler.audit.records(limit=100) if r.kind == "preemption_deferred"]
    assert deferred[0].data["reasons"] == ["operator_hold"]


def test_request_preemption_outcomes(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 50.0))
    scheduler.observer.on_flush_start(lease.lease_id)
    decision = scheduler.request_preemption(lease.lease_id, "operator")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.reasons == {CKPT}
    assert scheduler.reasons(lease.lease_id) == {CKPT}
    head = scheduler.audit.head()
    again = scheduler.request_preemption(lease.lease_id, "operator again")
    assert again.deadline == decision.deadline
    assert scheduler.audit.head() == head  # not re-audited
    scheduler.observer.on_flush_complete(lease.lease_id)
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE  # not in the clear
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED
    gone = scheduler.request_preemption(lease.lease_id, "late")
    assert gone.outcome is PreemptionOutcome.NOT_TRACKED
    with pytest.raises(UnknownLease):
        scheduler.request_preemption(99, "x")
    with pytest.raises(InvalidRequest, match="cause ''"):
        scheduler.request_preemption(lease.lease_id, "")


def test_remote_reasons_via_renew(scheduler: Scheduler, clock: ManualClock) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 50.0))
    scheduler.renew(lease.lease_id, lease.fencing_token, reasons=[CKPT])
    assert scheduler.reasons(lease.lease_id) == {CKPT}
    assert scheduler.request_preemption(lease.lease_id, "op").outcome is PreemptionOutcome.DEFERRED
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE
    scheduler.renew(lease.lease_id, lease.fencing_token, reasons=[])
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED
    other = as_lease(scheduler.acquire("b", "w", 0, 1, 50.0))
    with pytest.raises(InvalidRequest, match="'checkpoint'"):
        scheduler.renew(other.lease_id, other.fencing_token, reasons=["checkpoint"])  # type: ignore[list-item]


def test_executor_thread_runs_deferred_preemption(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 50.0))
    done = threading.Event()
    threads: list[str] = []

    def on_preempt(ended: Lease) -> None:
        threads.append(threading.current_thread().name)
        done.set()

    scheduler.on_preempt(lease.lease_id, on_preempt)
    scheduler.start()
    scheduler.observer.on_flush_start(lease.lease_id)
    scheduler.request_preemption(lease.lease_id, "op")
    scheduler.observer.on_flush_complete(lease.lease_id)
    assert done.wait(30.0)
    assert threads == ["grafos-scheduler-executor"]
    assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED


def test_callback_errors_are_contained(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 50.0))

    def boom(ended: Lease) -> None:
        raise RuntimeError("boom")

    scheduler.on_preempt(lease.lease_id, boom)
    scheduler.request_preemption(lease.lease_id, "op")
    scheduler.tick()  # logs, does not raise
    with pytest.raises(LeaseNotActive):
        scheduler.on_preempt(lease.lease_id, boom)


def test_closed_scheduler_refuses(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler()
    scheduler.close()
    scheduler.close()
    with pytest.raises(SchedulerError, match="closed"):
        scheduler.acquire("a", "w", 0, 1, 1.0)
    assert AuditKind.START.value == "start"
