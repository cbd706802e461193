"""holder= on lease- and ticket-scoped calls, and renew_lease's one-lock answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from grafos_scheduler import (
    InvalidRequest,
    Lease,
    LeaseExpired,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    NotLeaseHolder,
    PreemptionOutcome,
    Renewal,
    Scheduler,
    SchedulerError,
    Ticket,
    UnknownLease,
    UnknownTicket,
)
from support.internals import store_of
from support.scheduling import SchedulerFactory, as_lease


def _commits(monkeypatch: pytest.MonkeyPatch, scheduler: Scheduler) -> list[int]:
    store: Any = store_of(scheduler)
    real = store.commit
    count = [0]

    def counting(change: Any) -> None:
        count[0] += 1
        real(change)

    monkeypatch.setattr(store, "commit", counting)
    return count


@pytest.mark.parametrize("call", ["renew", "renew_lease", "release", "get"])
def test_another_holders_lease_is_refused_before_any_change(
    scheduler: Scheduler, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    lease = as_lease(scheduler.acquire("a", "secret-owner", 0, 1, 5.0))
    commits = _commits(monkeypatch, scheduler)
    calls: dict[str, Callable[[], object]] = {
        "renew": lambda: scheduler.renew(lease.lease_id, lease.fencing_token, holder="mallory"),
        "renew_lease": lambda: scheduler.renew_lease(
            lease.lease_id, lease.fencing_token, holder="mallory"
        ),
        "release": lambda: scheduler.release(lease.lease_id, holder="mallory"),
        "get": lambda: scheduler.get(lease.lease_id, holder="mallory"),
    }
    with pytest.raises(NotLeaseHolder) as info:
        calls[call]()
    assert isinstance(info.value, SchedulerError)
    assert info.value.lease_id == lease.lease_id
    assert f"{lease.lease_id:032x}" in str(info.value)
    assert "secret-owner" not in str(info.value)
    assert commits[0] == 0
    assert scheduler.get(lease.lease_id) == lease


def test_the_holder_passes_and_an_ended_lease_still_names_the_holder_first(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    assert scheduler.get(lease.lease_id, holder="w") == lease
    clock.advance(1.0)
    renewed = scheduler.renew(lease.lease_id, lease.fencing_token, holder="w")
    assert renewed.expires_at > lease.expires_at
    clock.advance(10.0)
    with pytest.raises(NotLeaseHolder):
        scheduler.renew(lease.lease_id, lease.fencing_token, holder="mallory")
    with pytest.raises(LeaseExpired):
        scheduler.renew(lease.lease_id, lease.fencing_token, holder="w")
    with pytest.raises(NotLeaseHolder):
        scheduler.release(lease.lease_id, holder="mallory")
    with pytest.raises(UnknownLease):
        scheduler.get(12345, holder="w")


def test_another_holders_ticket_is_refused_for_poll_and_cancel(
    make_scheduler: SchedulerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(1)
    first = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    ticket = scheduler.acquire("b", "owner", 0, 1, 5.0)
    assert isinstance(ticket, Ticket)
    commits = _commits(monkeypatch, scheduler)
    for call in (scheduler.poll, scheduler.cancel_ticket):
        with pytest.raises(NotLeaseHolder, match=f"ticket {ticket.ticket_id:032x}") as info:
            call(ticket.ticket_id, holder="mallory")
        assert "owner" not in str(info.value)
    assert commits[0] == 0
    assert scheduler.poll(ticket.ticket_id, holder="owner") == ticket
    scheduler.release(first.lease_id)
    # Granted: the ticket's lease is still the holder's alone.
    granted = scheduler.poll(ticket.ticket_id, holder="owner")
    assert isinstance(granted, Lease)
    assert granted.holder == "owner"
    with pytest.raises(NotLeaseHolder):
        scheduler.poll(ticket.ticket_id, holder="mallory")
    with pytest.raises(UnknownTicket):
        scheduler.poll(999, holder="owner")


def test_a_bad_holder_is_invalid_input(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    with pytest.raises(InvalidRequest, match="holder 'a b'"):
        scheduler.get(lease.lease_id, holder="a b")


def test_renew_lease_returns_the_lease_and_its_pending_preemption(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    renewal = scheduler.renew_lease(lease.lease_id, lease.fencing_token, holder="w")
    assert isinstance(renewal, Renewal)
    assert renewal.lease.state is LeaseState.ACTIVE
    assert renewal.pending is None
    reasons = {NonPreemptibleReason.CHECKPOINT_IN_PROGRESS}
    scheduler.renew_lease(lease.lease_id, lease.fencing_token, reasons=reasons)
    decision = scheduler.request_preemption(lease.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    renewal = scheduler.renew_lease(lease.lease_id, lease.fencing_token, reasons=reasons)
    assert renewal.pending is not None
    assert renewal.pending.cause == "make room"
    assert renewal.pending == scheduler.pending_preemption(lease.lease_id)
    assert renewal.lease == scheduler.get(lease.lease_id)
    # An empty report clears the markers; the preemption then goes on the next tick.
    scheduler.renew_lease(lease.lease_id, lease.fencing_token, reasons=())
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED
