"""Regression tests for the scheduler-core review findings (one section per finding)."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grafos_scheduler import (
    InvalidRequest,
    Lease,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionManager,
    Scheduler,
    SqliteStore,
    StoreError,
    Ticket,
)

from .conftest import SchedulerFactory

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
HOLD = NonPreemptibleReason.OPERATOR_HOLD


def _lease(result: Lease | Ticket) -> Lease:
    assert isinstance(result, Lease), result
    return result


def _ticket(result: Lease | Ticket) -> Ticket:
    assert isinstance(result, Ticket), result
    return result


def _kinds(scheduler: Scheduler) -> list[str]:
    return [r.kind for r in scheduler.audit.records(after_seq=0, limit=10_000)]


def _failing(
    monkeypatch: pytest.MonkeyPatch, scheduler: Scheduler, fail_calls: set[int]
) -> list[int]:
    """Make the store's transaction() raise StoreError on the given calls (1-based)."""
    store: Any = scheduler._store
    real: Callable[[], contextlib.AbstractContextManager[Any]] = store.transaction
    calls = [0]

    @contextlib.contextmanager
    def flaky() -> Iterator[Any]:
        calls[0] += 1
        if calls[0] in fail_calls:
            raise StoreError("disk I/O error (injected)")
        with real() as txn:
            yield txn

    monkeypatch.setattr(store, "transaction", flaky)
    return calls


# -- finding 2: preemption is retried when room or tickets change ----------------------


def test_a_ticket_refused_preemption_at_acquire_gets_it_once_victims_suffice(
    make_scheduler: SchedulerFactory,
) -> None:
    scheduler = make_scheduler(4)
    low = _lease(scheduler.acquire("low", "w", 0, 2, 10.0))
    high = _lease(scheduler.acquire("high", "w", 9, 2, 10.0))
    ticket = _ticket(scheduler.acquire("urgent", "w", 5, 4, 10.0))
    # Only 2 slots sit below priority 5: preempting "low" alone would not help.
    assert scheduler.get(low.lease_id).state is LeaseState.ACTIVE
    scheduler.release(high.lease_id)
    # Now 2 free + 2 from "low" cover the ticket: "low" goes, the ticket is granted.
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert _lease(scheduler.poll(ticket.ticket_id)).job == "urgent"
    assert scheduler.used_slots == 4


def test_a_retried_preemption_is_deferred_once_and_not_asked_twice(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler(4, max_defer=10.0)
    low = _lease(scheduler.acquire("low", "w", 0, 2, 100.0))
    high = _lease(scheduler.acquire("high", "w", 9, 2, 100.0))
    ticket = _ticket(scheduler.acquire("urgent", "w", 5, 4, 100.0))
    scheduler.observer.on_flush_start(low.lease_id)
    scheduler.release(high.lease_id)
    pending = scheduler.pending_preemption(low.lease_id)
    assert pending is not None
    for _ in range(5):
        scheduler.tick()
    assert scheduler.manager.pending_slots() == 2
    assert _kinds(scheduler).count("preemption_requested") == 1
    assert scheduler.pending_preemption(low.lease_id) == pending
    clock.advance(10.0)
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert _lease(scheduler.poll(ticket.ticket_id)).slots == 4


# -- finding 9: a refused preemption is audited, once per change -------------------------


def test_refused_preemption_is_audited_once_per_change(make_scheduler: SchedulerFactory) -> None:
    scheduler = make_scheduler(4)
    low = _lease(scheduler.acquire("low", "w", 0, 1, 100.0))
    high = _lease(scheduler.acquire("high", "w", 9, 3, 100.0))
    ticket = _ticket(scheduler.acquire("urgent", "w", 5, 4, 100.0))
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


# -- finding 3: a failed carry-out keeps the pending preemption, item by item ------------


@pytest.mark.parametrize("fail_calls", [{1}, {1, 2}, {2}])
def test_a_failed_carry_out_keeps_every_due_preemption(
    make_scheduler: SchedulerFactory,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    fail_calls: set[int],
) -> None:
    scheduler = make_scheduler(2, max_defer=5.0)
    first = _lease(scheduler.acquire("a", "w", 0, 1, 100.0))
    second = _lease(scheduler.acquire("b", "w", 0, 1, 100.0))
    for lease in (first, second):
        scheduler.observer.on_flush_start(lease.lease_id)
    ticket = _ticket(scheduler.acquire("urgent", "w", 9, 2, 100.0))
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
    assert _kinds(scheduler).count("preemption_executed") == 2
    assert scheduler.audit.verify().ok


def test_a_failed_forced_preemption_is_forced_on_the_next_tick(
    make_scheduler: SchedulerFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(1, max_defer=5.0)
    low = _lease(scheduler.acquire("low", "w", 0, 1, 100.0))
    scheduler.observer.on_flush_start(low.lease_id)
    _ticket(scheduler.acquire("urgent", "w", 9, 1, 100.0))
    clock.advance(5.0)
    _failing(monkeypatch, scheduler, {1})
    with pytest.raises(StoreError):
        scheduler.tick()
    assert scheduler.manager.marker_count(low.lease_id, CKPT) == 1, "markers kept"
    scheduler.tick()
    assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
    assert "preemption_forced" in _kinds(scheduler)


# -- finding 4: a failed expiry stays due ----------------------------------------------


def test_a_failed_expiry_is_retried(
    make_scheduler: SchedulerFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(1)
    lease = _lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    _failing(monkeypatch, scheduler, {1})
    clock.advance(6.0)
    with pytest.raises(StoreError):
        scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    assert scheduler.used_slots == 0
    assert isinstance(scheduler.acquire("b", "w", 0, 1, 5.0), Lease)


# -- finding 12: a committed change does not raise because its follow-up failed ----------


@pytest.mark.parametrize("end", ["release", "fence", "expire"])
def test_a_committed_end_stands_when_granting_tickets_fails(
    make_scheduler: SchedulerFactory,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    end: str,
) -> None:
    scheduler = make_scheduler(1)
    lease = _lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    ticket = _ticket(scheduler.acquire("b", "w", 0, 1, 5.0))
    calls = _failing(monkeypatch, scheduler, {2})  # the end commits, the grant fails
    if end == "release":
        assert scheduler.release(lease.lease_id).state is LeaseState.RELEASED
    elif end == "fence":
        assert scheduler.fence(lease.lease_id).state is LeaseState.FENCED
    else:
        clock.advance(5.0)
        assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    assert calls[0] == 2
    assert isinstance(scheduler.poll(ticket.ticket_id), Ticket)
    scheduler.tick()  # the executor retries
    assert isinstance(scheduler.poll(ticket.ticket_id), Lease)


# -- finding 10: every error is a SchedulerError naming the value ------------------------


def test_store_in_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    with pytest.raises(StoreError, match=re.escape(str(path))) as info:
        SqliteStore(path)
    assert info.value.path == str(path)


def test_sqlite_errors_in_a_transaction_become_store_errors(
    scheduler: Scheduler, db_path: Path
) -> None:
    lease = _lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    row = scheduler._active[lease.lease_id]
    store: Any = scheduler._store
    with pytest.raises(StoreError, match="IntegrityError") as info, store.transaction() as txn:
        txn.insert_lease(row)
    assert str(db_path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert scheduler.audit.verify().ok


def test_busy_timeout_becomes_a_store_error(db_path: Path, clock: ManualClock) -> None:
    scheduler = Scheduler(2, SqliteStore(db_path, busy_timeout=0.05), clock=clock, autostart=False)
    try:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                scheduler.acquire("a", "w", 0, 1, 5.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert isinstance(scheduler.acquire("a", "w", 0, 1, 5.0), Lease)
    finally:
        scheduler.close()


@pytest.mark.parametrize("priority", [2**63, -(2**63) - 1, 2**70])
def test_priority_beyond_64_bits_is_refused(scheduler: Scheduler, priority: int) -> None:
    with pytest.raises(InvalidRequest, match=f"priority {priority}"):
        scheduler.acquire("j", "w", priority, 1, 1.0)


@pytest.mark.parametrize("priority", [2**63 - 1, -(2**63)])
def test_priority_at_the_64_bit_bounds_works(scheduler: Scheduler, priority: int) -> None:
    lease = _lease(scheduler.acquire("j", "w", priority, 1, 1.0))
    assert scheduler.get(lease.lease_id).priority == priority


@pytest.mark.parametrize("field", ["job", "holder"])
def test_a_lone_surrogate_in_a_name_is_refused(scheduler: Scheduler, field: str) -> None:
    names = {"job": "j", "holder": "w", field: "x\ud800"}
    with pytest.raises(InvalidRequest, match=field):
        scheduler.acquire(names["job"], names["holder"], 0, 1, 1.0)


# -- finding 11: verify(page=0) ----------------------------------------------------------


@pytest.mark.parametrize("page", [0, -1, 10_001])
def test_verify_refuses_a_bad_page(scheduler: Scheduler, page: int) -> None:
    with pytest.raises(InvalidRequest, match=f"page {page}"):
        scheduler.audit.verify(page=page)


# -- finding 13: a clear with nothing to clear changes nothing ---------------------------


def test_an_empty_checkpoint_clear_does_not_reorder_victims(clock: ManualClock) -> None:
    manager = PreemptionManager(clock)
    manager.track(1, 0, 1)
    manager.track(2, 0, 1)
    assert manager.clear_non_preemptible(1, CKPT)  # tracked, but no marker to clear
    assert manager.select_victims(1, 9) == [2], "the youngest still goes first"


# -- finding 8: preemptible-now victims are found however many leases are marked ----------


def test_victim_order_survives_leases_leaving_and_rejoining(clock: ManualClock) -> None:
    manager = PreemptionManager(clock)
    for lease_id in (1, 2, 3, 4):
        manager.track(lease_id, 0, 1)
    manager.mark_non_preemptible(1, HOLD)  # an operator hold on the oldest
    manager.mark_non_preemptible(3, CKPT)
    manager.clear_non_preemptible(3, CKPT)  # 3 flushed: least work at risk
    manager.mark_non_preemptible(4, HOLD)
    assert manager.select_victims(2, 9) == [3, 2]
    manager.clear_non_preemptible(1, HOLD)  # back, without a flush: still the oldest
    manager.clear_non_preemptible(4, HOLD)  # back, without a flush: younger than 2
    assert manager.select_victims(4, 9) == [3, 4, 2, 1]
    manager.mark_non_preemptible(4, CKPT)
    assert manager.select_victims(3, 9) == [3, 2, 1]
    assert manager.select_victims(4, 9) == [3, 2, 1, 4], "deferred last"


def test_victims_among_mostly_marked_leases(clock: ManualClock) -> None:
    manager = PreemptionManager(clock)
    for i in range(1, 20_001):
        manager.track(i, i % 10, 1)
        if i % 10 < 9 and i % 1000 != 1:
            manager.mark_non_preemptible(i, CKPT)
    # Unmarked below 9: i % 1000 == 1 (priority 1), all of priority 9 is above.
    victims = manager.select_victims(5, 9)
    assert victims == [19001, 18001, 17001, 16001, 15001]
    # Asking for more than the unmarked ones: the rest are deferred, lowest priority first.
    victims = manager.select_victims(25, 9)
    assert victims[:20] == list(range(19001, 0, -1000))
    assert victims[20:] == [20000, 19990, 19980, 19970, 19960]
