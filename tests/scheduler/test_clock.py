"""The clock argument: a Clock object, or a bare function returning monotonic seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from grafos_scheduler import (
    InvalidRequest,
    Lease,
    LeaseExpired,
    LeaseState,
    NonPreemptibleReason,
    PreemptionManager,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
)


class FakeTime:
    """A test's own clock function, the shape `time.monotonic` has."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_scheduler_runs_on_a_bare_clock_function(tmp_path: Path) -> None:
    fake = FakeTime()
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake, max_defer=5.0) as scheduler:
        lease = scheduler.acquire("job", "w", 0, 1, 10.0)
        assert isinstance(lease, Lease)
        assert lease.expires_at == 1010.0, "decisions are made on the function's seconds"
        assert scheduler.clock.monotonic() == 1000.0
        fake.now += 11.0
        with pytest.raises(LeaseExpired):
            scheduler.renew(lease.lease_id, lease.fencing_token)
        assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED


def test_across_a_restart_a_bare_function_measures_downtime_on_the_real_wall_clock(
    tmp_path: Path,
) -> None:
    fake = FakeTime()
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake) as first:
        lease = first.acquire("job", "w", 0, 1, 10.0)
        assert isinstance(lease, Lease)
    # The fake jumps 4 s while "down", but almost no real time passes: the remaining
    # ~10 s are measured on the real wall clock, from the new process's start.
    fake.now += 4.0
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake) as second:
        restored = second.get(lease.lease_id)
        assert restored.state is LeaseState.ACTIVE
        assert restored.expires_at == pytest.approx(1014.0, abs=0.5)
        fake.now += 10.5
        second.tick()
        assert second.get(lease.lease_id).state is LeaseState.EXPIRED


def test_a_preemption_manager_defers_on_a_bare_clock_function() -> None:
    fake = FakeTime()
    manager = PreemptionManager(fake, max_defer=5.0)
    manager.track(7, 0, 1)
    manager.mark_non_preemptible(7, NonPreemptibleReason.CHECKPOINT_IN_PROGRESS)
    decision = manager.request_preemption(7, "room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.deadline == 1005.0


@pytest.mark.parametrize("bad", [42, "monotonic", object()])
def test_anything_else_is_refused_naming_it(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidRequest, match="clock") as caught:
        Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(caught.value)
