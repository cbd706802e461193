"""Cancelling a waiting ticket: audited, the rest of the queue keeps its order, durable."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    InvalidRequest,
    Lease,
    LeaseState,
    Scheduler,
    TicketGranted,
    UnknownTicket,
)
from support.scheduling import SchedulerFactory, as_lease, as_ticket


def test_cancel_ticket_is_audited_frees_the_queue_and_keeps_slots(
    scheduler: Scheduler,
) -> None:
    # Capacity 10: 9 slots held at a high priority, so no ticket below can preempt.
    holder = as_lease(scheduler.acquire("big", "w", 10, 9, 600.0))
    head = as_ticket(scheduler.acquire("head", "alice", 5, 2, 60.0))  # does not fit
    mid = as_ticket(scheduler.acquire("mid", "bob", 5, 1, 60.0))  # fits, but waits its turn
    low = as_ticket(scheduler.acquire("low", "carol", 1, 1, 60.0))
    assert [t.ticket_id for t in scheduler.tickets()] == [
        head.ticket_id,
        mid.ticket_id,
        low.ticket_id,
    ]
    assert scheduler.used_slots == 9
    seq_before = scheduler.audit.head()[0]

    cancelled = scheduler.cancel_ticket(head.ticket_id)
    assert cancelled == head

    # One record, in the chain, naming the ticket.
    records = scheduler.audit.records(after_seq=seq_before, limit=100)
    assert records[0].kind == "ticket_cancelled"
    assert records[0].job == "head"
    assert records[0].lease_id is None
    assert records[0].data == {
        "ticket_id": f"{head.ticket_id:032x}",
        "holder": "alice",
        "priority": 5,
        "slots": 2,
    }
    assert scheduler.audit.verify().ok
    # The ticket behind it moved up and fitted: granted at once.
    granted = scheduler.poll(mid.ticket_id)
    assert isinstance(granted, Lease)
    assert granted.holder == "bob"
    assert scheduler.used_slots == 10
    assert [t.ticket_id for t in scheduler.tickets()] == [low.ticket_id]
    assert records[1].kind == "grant"
    assert records[1].data["ticket_id"] == f"{mid.ticket_id:032x}"
    # The cancelled ticket is gone; the job may ask again.
    with pytest.raises(UnknownTicket):
        scheduler.poll(head.ticket_id)
    with pytest.raises(UnknownTicket):
        scheduler.cancel_ticket(head.ticket_id)
    again = as_ticket(scheduler.acquire("head", "alice", 5, 2, 60.0))
    assert [t.ticket_id for t in scheduler.tickets()] == [again.ticket_id, low.ticket_id]
    assert scheduler.get(holder.lease_id).state is LeaseState.ACTIVE


def test_cancel_keeps_the_order_of_the_rest(scheduler: Scheduler) -> None:
    as_lease(scheduler.acquire("full", "w", 10, 10, 600.0))
    t = [as_ticket(scheduler.acquire(f"t{i}", "w", p, 1, 60.0)) for i, p in enumerate([3, 5, 3, 1])]
    order = [x.ticket_id for x in scheduler.tickets()]
    assert order == [t[1].ticket_id, t[0].ticket_id, t[2].ticket_id, t[3].ticket_id]
    scheduler.cancel_ticket(t[0].ticket_id)
    assert [x.ticket_id for x in scheduler.tickets()] == [
        t[1].ticket_id,
        t[2].ticket_id,
        t[3].ticket_id,
    ]
    assert scheduler.used_slots == 10


def test_cancel_a_granted_ticket_names_its_lease(scheduler: Scheduler) -> None:
    first = as_lease(scheduler.acquire("a", "w", 0, 10, 60.0))
    ticket = as_ticket(scheduler.acquire("b", "w", 0, 1, 60.0))
    scheduler.release(first.lease_id)
    lease = as_lease(scheduler.poll(ticket.ticket_id))
    with pytest.raises(TicketGranted) as caught:
        scheduler.cancel_ticket(ticket.ticket_id)
    assert caught.value.lease_id == lease.lease_id
    assert caught.value.ticket_id == ticket.ticket_id
    assert f"{lease.lease_id:032x}" in str(caught.value)
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE  # untouched


def test_cancel_unknown_or_bad_ids(scheduler: Scheduler) -> None:
    with pytest.raises(UnknownTicket):
        scheduler.cancel_ticket(12345)
    with pytest.raises(InvalidRequest):
        scheduler.cancel_ticket(-1)
    with pytest.raises(InvalidRequest):
        scheduler.cancel_ticket("00")  # type: ignore[arg-type]


def test_a_cancelled_ticket_stays_cancelled_after_a_restart(
    make_scheduler: SchedulerFactory,
) -> None:
    first = make_scheduler(1)
    as_lease(first.acquire("a", "w", 0, 1, 600.0))
    ticket = as_ticket(first.acquire("b", "w", 0, 1, 600.0))
    first.cancel_ticket(ticket.ticket_id)
    first.close()
    second = make_scheduler(1)
    assert second.tickets() == []
    with pytest.raises(UnknownTicket):
        second.poll(ticket.ticket_id)
    assert second.audit.verify().ok
