"""A store transaction that fails loses nothing: what was due stays due, and is retried.

Faults are injected by wrapping the real SQLite store's commit(); everything else is
real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from grafos_scheduler import (
    Lease,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    Scheduler,
    StoreError,
    Ticket,
)
from support.internals import store_of
from support.scheduling import SchedulerFactory, as_lease, as_ticket, audit_kinds

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def _failing(
    monkeypatch: pytest.MonkeyPatch, scheduler: Scheduler, fail_calls: set[int]
) -> list[int]:
    """Make the store's commit() raise StoreError on the given calls (1-based)."""
    store: Any = store_of(scheduler)
    real: Callable[[Any], None] = store.commit
    calls = [0]

    def flaky(change: Any) -> None:
        calls[0] += 1
        if calls[0] in fail_calls:
            raise StoreError("disk I/O error (injected)")
        real(change)

    monkeypatch.setattr(store, "commit", flaky)
    return calls


@pytest.mark.parametrize("fail_calls", [{1}, {1, 2}, {2}])
def test_a_failed_carry_out_keeps_every_due_preemption(
    make_scheduler: SchedulerFactory,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    fail_calls: set[int],
) -> None:
    scheduler = make_scheduler(2, max_defer=5.0)
    first = as_lease(scheduler.acquire("a", "w", 0, 1, 100.0))
    second = as_lease(scheduler.acquire("b", "w", 0, 1, 100.0))
    for lease in (first, second):
        scheduler.observer.on_flush_start(lease.lease_id)
    ticket = as_ticket(scheduler.acquire("urgent", "w", 9, 2, 100.0))
    deadlines = {}
    for lease in (first, second):
        pending = scheduler.pending_preemption(lease.lease_id)
        assert pending is not None
        deadlines[lease.lease_id] = pending.deadline
        scheduler.observer.on_flush_complete(lease.lease_id)
    _failing(monkeypatch, scheduler, fail_calls)
    with pytest.raises(StoreError, match="injected"):
        scheduler.tick()
    for lease in (first, second):
        state = scheduler.get(lease.lease_id).state
        if state is LeaseState.ACTIVE:
            # Still tracked, still pending, same deadline: nothing was lost.
            assert scheduler.manager.is_tracked(lease.lease_id)
            pending = scheduler.pending_preemption(lease.lease_id)
            assert pending is not None
            assert pending.deadline == deadlines[lease.lease_id]
        else:
            assert state is LeaseState.PREEMPTED
    monkeypatch.undo()
    scheduler.tick()
    assert scheduler.get(first.lease_id).state is LeaseState.PREEMPTED
    assert scheduler.get(second.lease_id).state is LeaseState.PREEMPTED
    assert isinstance(scheduler.poll(ticket.ticket_id), Lease)
    assert audit_kinds(scheduler).count("preemption_executed") == 2
    assert scheduler.audit.verify().ok


def test_a_failed_forced_preemption_is_forced_on_the_next_tick(
    make_scheduler: SchedulerFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(1, max_defer=5.0)
    low = as_lease(scheduler.acquire("low", "w", 0, 1, 100.0))
    scheduler.observer.on_flush_start(low.lease_id)
    as_ticket(scheduler.acquire("urgent", "w", 9, 1, 100.0))
    clock.advance(5.0)
    _failing(monkeypatch, scheduler, {1})
    with pytest.raises(StoreError):
        scheduler.tick()
    assert scheduler.manager.marker_count(low.lease_id, CKPT) == 1, "markers kept"
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert "preemption_forced" in audit_kinds(scheduler)


def test_a_failed_expiry_is_retried(
    make_scheduler: SchedulerFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(1)
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    _failing(monkeypatch, scheduler, {1})
    clock.advance(6.0)
    with pytest.raises(StoreError):
        scheduler.tick()
    # The failed expiry is still due: memory kept the lease, a read reports it EXPIRED
    # without writing, and the next tick commits it.
    assert scheduler.used_slots == 1
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    assert scheduler.used_slots == 0
    assert isinstance(scheduler.acquire("b", "w", 0, 1, 5.0), Lease)


@pytest.mark.parametrize("end", ["release", "fence", "expire"])
def test_a_committed_end_stands_when_granting_tickets_fails(
    make_scheduler: SchedulerFactory,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    end: str,
) -> None:
    scheduler = make_scheduler(1)
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    ticket = as_ticket(scheduler.acquire("b", "w", 0, 1, 5.0))
    calls = _failing(monkeypatch, scheduler, {2})  # the end commits, the grant fails
    if end == "release":
        assert scheduler.release(lease.lease_id).state is LeaseState.RELEASED
    elif end == "fence":
        assert scheduler.fence(lease.lease_id).state is LeaseState.FENCED
    else:
        clock.advance(5.0)
        # get() commits nothing; lease_counts() expires what is due first.
        assert scheduler.lease_counts()[LeaseState.EXPIRED] == 1
        assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    assert calls[0] == 2
    assert isinstance(scheduler.poll(ticket.ticket_id), Ticket)
    scheduler.tick()  # the executor retries
    assert isinstance(scheduler.poll(ticket.ticket_id), Lease)
