"""An ended lease says when and why it ended, and the store keeps both."""

from __future__ import annotations

import pytest

from grafos_scheduler import LeaseState, ManualClock, Scheduler
from support.scheduling import SchedulerFactory, as_lease


def test_each_end_has_a_time_and_a_cause(scheduler: Scheduler, clock: ManualClock) -> None:
    released = as_lease(scheduler.acquire("r", "w", 0, 1, 60.0))
    fenced = as_lease(scheduler.acquire("f", "w", 0, 1, 60.0))
    preempted = as_lease(scheduler.acquire("p", "w", 0, 1, 60.0))
    expired = as_lease(scheduler.acquire("e", "w", 0, 1, 5.0))
    assert released.ended_at is None
    assert released.end_cause is None
    clock.advance(1.0)
    scheduler.release(released.lease_id)
    scheduler.fence(fenced.lease_id)
    scheduler.request_preemption(preempted.lease_id, "operator wants room")
    clock.advance(5.0)
    scheduler.tick()
    ends = {
        lease.job: scheduler.get(lease.lease_id) for lease in (released, fenced, preempted, expired)
    }
    assert {job: lease.end_cause for job, lease in ends.items()} == {
        "r": "released",
        "f": "fenced by an operator",
        "p": "preempted: operator wants room",
        "e": "expired: not renewed within its ttl of 5 s",
    }
    now = clock.monotonic()
    assert ends["r"].ended_at == pytest.approx(now - 5.0, abs=0.01)
    assert ends["e"].ended_at == pytest.approx(now, abs=0.01)


def test_the_end_survives_a_restart(make_scheduler: SchedulerFactory, clock: ManualClock) -> None:
    first = make_scheduler()
    lease = as_lease(first.acquire("job", "w", 0, 1, 60.0))
    first.request_preemption(lease.lease_id, "room")
    first.close()
    clock.advance(10.0)
    second = make_scheduler()
    again = second.get(lease.lease_id)
    assert again.state is LeaseState.PREEMPTED
    assert again.end_cause == "preempted: room"
    assert again.ended_at == pytest.approx(clock.monotonic() - 10.0, abs=0.01)


def test_a_lapsed_lease_reads_as_ended_before_the_executor_commits(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 5.0))
    clock.advance(6.0)
    read = scheduler.get(lease.lease_id)  # no tick: the row is still ACTIVE
    assert read.state is LeaseState.EXPIRED
    assert read.ended_at == pytest.approx(lease.expires_at)
    assert read.end_cause == "expired: not renewed within its ttl of 5 s"
