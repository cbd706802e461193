"""Tickets say why they wait: the shortfall, the victims, or the head of the queue."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    Lease,
    NonPreemptibleReason,
    NotLeaseHolder,
    Scheduler,
    WaitReason,
)
from support.scheduling import SchedulerFactory, as_lease, as_ticket

HOLD = NonPreemptibleReason.OPERATOR_HOLD


def test_awaiting_deferred_preemptions_with_their_deadlines(
    make_scheduler: SchedulerFactory,
) -> None:
    scheduler = make_scheduler(2, max_defer=30.0)
    low = as_lease(scheduler.acquire("low", "w", 0, 2, 600.0))
    scheduler.hold(low.lease_id, "keep")
    ticket = as_ticket(scheduler.acquire("high", "v", 5, 2, 60.0))
    [wait] = scheduler.ticket_waits()
    assert wait.ticket == ticket
    assert wait.reason is WaitReason.AWAITING_PREEMPTIONS
    assert (wait.position, wait.needed, wait.free, wait.pending, wait.shortfall) == (1, 2, 0, 2, 0)
    [deferred] = wait.deferred
    assert deferred.lease_id == low.lease_id
    assert deferred.reasons == {HOLD}
    assert deferred.deadline == pytest.approx(scheduler.clock.monotonic() + 30.0)
    assert wait.eligible == ()  # the only lease below is already pending


def test_insufficient_victims_lists_the_eligible(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(3)
    top = as_lease(scheduler.acquire("top", "w", 9, 2, 600.0))
    low = as_lease(scheduler.acquire("low", "w", 0, 1, 600.0))
    ticket = as_ticket(scheduler.acquire("mid", "v", 5, 3, 60.0))
    [wait] = scheduler.ticket_waits()
    assert wait.ticket.ticket_id == ticket.ticket_id
    assert wait.reason is WaitReason.INSUFFICIENT_VICTIMS
    assert (wait.shortfall, wait.eligible_slots) == (3, 1)
    assert [(v.lease_id, v.job, v.slots, v.reasons) for v in wait.eligible] == [
        (low.lease_id, "low", 1, frozenset())
    ]
    assert top.lease_id not in [v.lease_id for v in wait.eligible]


def test_blocked_behind_the_head(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(3)
    as_lease(scheduler.acquire("top", "w", 9, 2, 600.0))
    head = as_ticket(scheduler.acquire("wide", "v", 5, 3, 60.0))
    small = as_ticket(scheduler.acquire("small", "u", 1, 1, 60.0))  # fits in the 1 free slot
    first, second = scheduler.ticket_waits()
    assert first.ticket.ticket_id == head.ticket_id
    assert second.ticket.ticket_id == small.ticket_id
    assert second.reason is WaitReason.BLOCKED_BEHIND_HEAD
    assert second.blocked_by == head.ticket_id
    assert (second.position, second.needed) == (2, 4)


def test_holders_see_their_own(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(1)
    as_lease(scheduler.acquire("top", "w", 9, 1, 600.0))
    mine = as_ticket(scheduler.acquire("a", "v", 1, 1, 60.0))
    as_ticket(scheduler.acquire("b", "u", 1, 1, 60.0))
    assert [w.ticket.ticket_id for w in scheduler.ticket_waits(holder="v")] == [mine.ticket_id]
    assert scheduler.ticket_wait(mine.ticket_id, holder="v").ticket == mine  # type: ignore[union-attr]
    with pytest.raises(NotLeaseHolder):
        scheduler.ticket_wait(mine.ticket_id, holder="u")


def test_a_granted_ticket_answers_with_its_lease(scheduler: Scheduler) -> None:
    top = as_lease(scheduler.acquire("top", "w", 9, 10, 600.0))
    ticket = as_ticket(scheduler.acquire("a", "v", 1, 1, 60.0))
    scheduler.release(top.lease_id)
    outcome = scheduler.ticket_wait(ticket.ticket_id)
    assert isinstance(outcome, Lease)
    assert outcome.job == "a"
    assert scheduler.ticket_waits() == []
