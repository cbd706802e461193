"""The scheduler's defaults: the executor runs without a start() call; requests on its manager.

Real clock, real executor thread: what a user gets from
``Scheduler(capacity, store, max_defer=...)`` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from grafos_scheduler import (
    Lease,
    LeaseState,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
    Ticket,
)

CHECKPOINT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_deferred_preemption_runs_after_the_last_clear_without_start(tmp_path: Path) -> None:
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), max_defer=30.0) as scheduler:
        low = scheduler.acquire("low", "w", 0, 2, 60.0)
        assert isinstance(low, Lease)
        scheduler.manager.mark_non_preemptible(low.lease_id, CHECKPOINT)
        high = scheduler.acquire("high", "w", 5, 2, 60.0)
        assert isinstance(high, Ticket)
        assert scheduler.get(low.lease_id).state is LeaseState.ACTIVE
        scheduler.manager.clear_non_preemptible(low.lease_id, CHECKPOINT)
        assert wait_for(lambda: scheduler.get(low.lease_id).state is LeaseState.PREEMPTED)
        assert wait_for(lambda: isinstance(scheduler.poll(high.ticket_id), Lease))


def test_a_deferred_preemption_is_forced_at_max_defer_without_start(tmp_path: Path) -> None:
    with Scheduler(1, SqliteStore(tmp_path / "s.db"), max_defer=0.3) as scheduler:
        lease = scheduler.acquire("low", "w", 0, 1, 60.0)
        assert isinstance(lease, Lease)
        scheduler.manager.mark_non_preemptible(lease.lease_id, CHECKPOINT)
        decision = scheduler.request_preemption(lease.lease_id, "room")
        assert decision.outcome is PreemptionOutcome.DEFERRED
        assert wait_for(lambda: scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED)
        kinds = [r.kind for r in scheduler.audit.records(after_seq=0, limit=100)]
        assert "preemption_forced" in kinds


def test_a_request_made_on_the_manager_is_carried_out(tmp_path: Path) -> None:
    with Scheduler(2, SqliteStore(tmp_path / "s.db")) as scheduler:
        lease = scheduler.acquire("job", "w", 0, 2, 60.0)
        assert isinstance(lease, Lease)
        decision = scheduler.manager.request_preemption(lease.lease_id, "operator")
        assert decision.outcome is PreemptionOutcome.PREEMPTED
        assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED
        assert scheduler.used_slots == 0, "its slots are freed"
        kinds = [r.kind for r in scheduler.audit.records(after_seq=0, limit=100)]
        assert "preemption_executed" in kinds
        never = scheduler.manager.request_preemption(12345, "nobody")
        assert never.outcome is PreemptionOutcome.NOT_TRACKED
        assert scheduler.manager, "an empty manager is still truthy"
