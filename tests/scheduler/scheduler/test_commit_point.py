"""Memory changes only after the store committed; reads commit nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from grafos_scheduler import (
    Change,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    StoreError,
    Ticket,
)
from support.internals import book_of, store_of
from support.scheduling import SchedulerFactory, as_lease


class _Commits:
    """Counts the store's commits and fails them while ``failing`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, scheduler: Scheduler) -> None:
        store: Any = store_of(scheduler)
        self.real = store.commit
        self.count = 0
        self.failing = False
        monkeypatch.setattr(store, "commit", self)

    def __call__(self, change: Change) -> None:
        if self.failing:
            raise StoreError("disk I/O error (injected)")
        self.real(change)
        self.count += 1


def _memory(scheduler: Scheduler) -> tuple[object, ...]:
    book = book_of(scheduler)
    return (
        dict(book.active),
        dict(book.active_by_job),
        book.used,
        dict(book.tickets),
        book.ticket_ids(),
        book.head,
        scheduler.audit.head(),
    )


def test_a_failed_grant_leaves_memory_as_it_was(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = _Commits(monkeypatch, scheduler)
    before = _memory(scheduler)
    commits.failing = True
    with pytest.raises(StoreError, match="injected"):
        scheduler.acquire("a", "w", 0, 1, 5.0)
    assert _memory(scheduler) == before
    assert len(scheduler.manager) == 0
    commits.failing = False
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    assert lease.fencing_token == 1  # the failed grant minted nothing
    assert scheduler.audit.verify().ok


# A renewal is not here: it writes nothing (test_a_renewal_commits_nothing).
@pytest.mark.parametrize("operation", ["release", "fence", "queue", "cancel"])
def test_a_failed_change_leaves_memory_as_it_was(
    make_scheduler: SchedulerFactory, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    scheduler = make_scheduler(1)
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    ticket = scheduler.acquire("b", "w", 0, 1, 5.0)
    assert isinstance(ticket, Ticket)
    commits = _Commits(monkeypatch, scheduler)
    before = _memory(scheduler)
    commits.failing = True
    calls: dict[str, Callable[[], object]] = {
        "release": lambda: scheduler.release(lease.lease_id),
        "fence": lambda: scheduler.fence(lease.lease_id),
        "queue": lambda: scheduler.acquire("c", "w", 0, 1, 5.0),
        "cancel": lambda: scheduler.cancel_ticket(ticket.ticket_id),
    }
    with pytest.raises(StoreError, match="injected"):
        calls[operation]()
    assert _memory(scheduler) == before
    assert scheduler.get(lease.lease_id) == lease
    assert scheduler.manager.is_tracked(lease.lease_id)
    assert commits.count == 0


def test_a_renewal_commits_nothing_until_the_checkpoint(
    make_scheduler: SchedulerFactory, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    scheduler = make_scheduler(1)
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    commits = _Commits(monkeypatch, scheduler)
    commits.failing = True  # a store that refuses every write does not stop renewals
    clock.advance(2.0)
    renewed = scheduler.renew(lease.lease_id, lease.fencing_token)
    assert renewed.expires_at == lease.expires_at + 2.0
    assert scheduler.get(lease.lease_id) == renewed
    assert commits.count == 0
    commits.failing = False
    assert scheduler.checkpoint() == 1  # the renewed expiry, in one change
    assert commits.count == 1
    assert scheduler.checkpoint() == 0  # nothing renewed since
    assert store_of(scheduler).get_lease(lease.lease_id).expires_at == renewed.expires_at


def test_a_failed_deferral_leaves_no_pending_preemption(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    scheduler.manager.mark_non_preemptible(lease.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
    commits = _Commits(monkeypatch, scheduler)
    before = _memory(scheduler)
    commits.failing = True
    with pytest.raises(StoreError):
        scheduler.request_preemption(lease.lease_id, "make room")
    assert _memory(scheduler) == before
    assert scheduler.pending_preemption(lease.lease_id) is None
    commits.failing = False
    decision = scheduler.request_preemption(lease.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED


def test_get_commits_nothing_and_reports_a_lapsed_lease_expired(
    scheduler: Scheduler, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    commits = _Commits(monkeypatch, scheduler)
    head = scheduler.audit.head()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE
    clock.advance(5.0)
    seen = scheduler.get(lease.lease_id)
    assert seen.state is LeaseState.EXPIRED
    assert seen.expires_at == lease.expires_at
    assert commits.count == 0
    assert scheduler.audit.head() == head
    assert scheduler.used_slots == 1  # the expiry is the executor's to commit
    assert scheduler.manager.wake.is_set()
    scheduler.tick()
    assert commits.count == 1
    assert scheduler.used_slots == 0
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    assert scheduler.audit.records(after_seq=head[0])[0].kind == "expire"


def test_the_executor_thread_commits_what_get_reported(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler(1)
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    clock.advance(6.0)
    assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED
    scheduler.start()
    deadline = time.monotonic() + 10.0
    while scheduler.used_slots and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.used_slots == 0
