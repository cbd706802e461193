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
    store = SqliteStore(tmp_path / "s.db")
    with Scheduler(2, store, clock=fake, max_defer=5.0, autostart=False) as scheduler:
        lease = scheduler.acquire("job", "w", 0, 1, 10.0)
        assert isinstance(lease, Lease)
        assert lease.expires_at == 1010.0, "decisions are made on the function's seconds"
        assert scheduler.clock.monotonic() == 1000.0
        fake.now += 11.0
        with pytest.raises(LeaseExpired):
            scheduler.renew(lease.lease_id, lease.fencing_token)
        assert scheduler.get(lease.lease_id).state is LeaseState.EXPIRED


def test_a_restart_on_the_same_function_sees_the_downtime(tmp_path: Path) -> None:
    fake = FakeTime()
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake, autostart=False) as first:
        short = first.acquire("short", "w", 0, 1, 5.0)
        long = first.acquire("long", "w", 0, 1, 60.0)
        assert isinstance(short, Lease)
        assert isinstance(long, Lease)
    fake.now += 20.0  # down for 20 s of the function's time
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake, autostart=False) as second:
        # Renewals live in memory: every restored lease gets a fresh TTL from the
        # restart, and its grant time shows the 20 s the service was down.
        restored = second.get(short.lease_id)
        assert restored.state is LeaseState.ACTIVE
        assert restored.granted_at == 1000.0, "granted 20 s before the restart"
        assert restored.expires_at == 1025.0, "a fresh TTL of 5 s from the restart"
        assert second.get(long.lease_id).expires_at == 1080.0
        fake.now += 5.0
        with pytest.raises(LeaseExpired):
            second.renew(short.lease_id, short.fencing_token)
        assert second.get(short.lease_id).state is LeaseState.EXPIRED


def test_a_restored_lease_never_keeps_more_than_a_fresh_ttl(tmp_path: Path) -> None:
    # A function that started again from a lower value (time.monotonic after a
    # reboot) must not leave a restored lease alive for ages.
    fake = FakeTime()
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake, autostart=False) as first:
        lease = first.acquire("job", "w", 0, 1, 10.0)
        assert isinstance(lease, Lease)
    fake.now = 5.0
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), clock=fake, autostart=False) as second:
        assert second.get(lease.lease_id).expires_at == 15.0


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
