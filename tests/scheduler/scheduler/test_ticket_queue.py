"""Waiting tickets and the preemptions made for them: retried as room changes, audited once."""

from __future__ import annotations

from grafos_scheduler import Lease, LeaseState, ManualClock
from support.scheduling import SchedulerFactory, as_lease, as_ticket, audit_kinds


def test_a_ticket_refused_preemption_at_acquire_gets_it_once_victims_suffice(
    make_scheduler: SchedulerFactory,
) -> None:
    scheduler = make_scheduler(4)
    low = as_lease(scheduler.acquire("low", "w", 0, 2, 10.0))
    high = as_lease(scheduler.acquire("high", "w", 9, 2, 10.0))
    ticket = as_ticket(scheduler.acquire("urgent", "w", 5, 4, 10.0))
    # Only 2 slots sit below priority 5: preempting "low" alone would not help.
    assert scheduler.get(low.lease_id).state is LeaseState.ACTIVE
    scheduler.release(high.lease_id)
    # Now 2 free + 2 from "low" cover the ticket: "low" goes, the ticket is granted.
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert as_lease(scheduler.poll(ticket.ticket_id)).job == "urgent"
    assert scheduler.used_slots == 4


def test_a_retried_preemption_is_deferred_once_and_not_asked_twice(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler(4, max_defer=10.0)
    low = as_lease(scheduler.acquire("low", "w", 0, 2, 100.0))
    high = as_lease(scheduler.acquire("high", "w", 9, 2, 100.0))
    ticket = as_ticket(scheduler.acquire("urgent", "w", 5, 4, 100.0))
    scheduler.observer.on_flush_start(low.lease_id)
    scheduler.release(high.lease_id)
    pending = scheduler.pending_preemption(low.lease_id)
    assert pending is not None
    for _ in range(5):
        scheduler.tick()
    assert scheduler.manager.pending_slots() == 2
    assert audit_kinds(scheduler).count("preemption_requested") == 1
    assert scheduler.pending_preemption(low.lease_id) == pending
    clock.advance(10.0)
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert as_lease(scheduler.poll(ticket.ticket_id)).slots == 4


def test_refused_preemption_is_audited_once_per_change(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(4)
    low = as_lease(scheduler.acquire("low", "w", 0, 1, 100.0))
    high = as_lease(scheduler.acquire("high", "w", 9, 3, 100.0))
    ticket = as_ticket(scheduler.acquire("urgent", "w", 5, 4, 100.0))
    for _ in range(3):
        scheduler.tick()
    refused = [r for r in scheduler.audit.records(0, 1000) if r.kind == "preemption_refused"]
    assert len(refused) == 1
    assert refused[0].job == "urgent"
    assert refused[0].data["ticket_id"] == f"{ticket.ticket_id:032x}"
    assert refused[0].data["shortfall"] == 4
    assert refused[0].data["eligible_slots"] == 1
    scheduler.release(low.lease_id)  # the situation changes: 1 free, nothing eligible
    scheduler.tick()
    refused = [r for r in scheduler.audit.records(0, 1000) if r.kind == "preemption_refused"]
    assert [(r.data["shortfall"], r.data["eligible_slots"]) for r in refused] == [(4, 1), (3, 0)]
    scheduler.release(high.lease_id)
    assert isinstance(scheduler.poll(ticket.ticket_id), Lease)
    assert scheduler.audit.verify().ok
