"""Restart: close the store, reopen the file, build a new Scheduler on it."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    FencingTokenMismatch,
    Lease,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionOutcome,
    Ticket,
)

from .conftest import SchedulerFactory


def _lease(result: Lease | Ticket) -> Lease:
    assert isinstance(result, Lease), result
    return result


def test_restart_restores_everything(make_scheduler: SchedulerFactory, clock: ManualClock) -> None:
    first = make_scheduler(4, max_defer=60.0)
    short = _lease(first.acquire("short", "w", 10, 1, 10.0))
    long = _lease(first.acquire("long", "w", 0, 1, 100.0))
    marked = _lease(first.acquire("marked", "w", 0, 1, 100.0))
    big = _lease(first.acquire("big", "w", 9, 1, 100.0))
    first.manager.mark_non_preemptible(marked.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
    waiting = first.acquire("waiting", "w", 9, 2, 100.0)
    assert isinstance(waiting, Ticket)  # needs 2: 'long' goes at once, 'marked' is deferred
    assert first.get(long.lease_id).state is LeaseState.PREEMPTED
    decision = first.request_preemption(marked.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    head_before = first.audit.head()
    first.close()

    clock.advance(20.0)  # 'short' expires while the service is down
    second = make_scheduler(4, max_defer=60.0)
    assert second.get(short.lease_id).state is LeaseState.EXPIRED
    kept = second.get(big.lease_id)
    assert kept.state is LeaseState.ACTIVE
    assert kept.expires_at == 100.0  # recomputed from the wall clock
    # The restart and the expiry-while-down are audited after everything before.
    after = second.audit.records(after_seq=head_before[0])
    assert [r.kind for r in after][:2] == ["restart", "expire"]
    assert after[1].lease_id == short.lease_id
    assert after[1].data["while_down"] is True
    # The pending preemption survived; no marker survives a restart, so it runs now.
    assert second.pending_preemption(marked.lease_id) is not None
    second.tick()
    assert second.get(marked.lease_id).state is LeaseState.PREEMPTED
    granted = second.poll(waiting.ticket_id)
    assert isinstance(granted, Lease)
    assert granted.job == "waiting"
    # Tokens never go backwards.
    again = _lease(second.acquire("short", "w", 0, 1, 10.0))
    assert again.fencing_token == short.fencing_token + 1
    assert second.audit.verify().ok


def test_tokens_survive_many_restarts(make_scheduler: SchedulerFactory) -> None:
    last = 0
    for _ in range(4):
        scheduler = make_scheduler(2)
        lease = _lease(scheduler.acquire("job", "w", 0, 1, 5.0))
        assert lease.fencing_token == last + 1
        last = lease.fencing_token
        scheduler.release(lease.lease_id)
        scheduler.close()
    scheduler = make_scheduler(2)
    kinds = [r.kind for r in scheduler.audit.records(limit=1000)]
    assert kinds.count("start") == 1
    assert kinds.count("restart") == 4
    assert scheduler.audit.verify().ok


def test_acknowledged_grant_survives_without_close(
    make_scheduler: SchedulerFactory, db_path: object
) -> None:
    first = make_scheduler(2)
    lease = _lease(first.acquire("job", "w", 0, 1, 50.0))
    # A second connection sees the committed grant before the first is closed.
    second = make_scheduler(2)
    assert second.get(lease.lease_id).state is LeaseState.ACTIVE
    assert second.get(lease.lease_id).fencing_token == 1


@pytest.mark.parametrize("advance", [0.0, 9.5])
def test_active_lease_keeps_its_remaining_time(
    make_scheduler: SchedulerFactory, clock: ManualClock, advance: float
) -> None:
    first = make_scheduler()
    lease = _lease(first.acquire("job", "w", 0, 1, 10.0))
    first.close()
    clock.advance(advance)
    second = make_scheduler()
    restored = second.get(lease.lease_id)
    assert restored.state is LeaseState.ACTIVE
    assert restored.expires_at == lease.expires_at
    with pytest.raises(FencingTokenMismatch):
        second.renew(lease.lease_id, 99)
    assert second.renew(lease.lease_id, 1).expires_at == advance + 10.0
