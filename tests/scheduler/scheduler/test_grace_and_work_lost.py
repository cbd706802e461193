"""Grace windows and work-lost accounting through the Scheduler, on a real SQLite file
and a ManualClock: cooperative and forced ends, exact seconds, restarts, the bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from grafos_scheduler import (
    InvalidRequest,
    LeaseEventKind,
    LeaseState,
    ManualClock,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
)
from support.scheduling import SchedulerFactory, as_lease, as_ticket


def _records(scheduler: Scheduler, lease_id: int) -> list[tuple[str, dict[str, object]]]:
    return [
        (r.kind, dict(r.data))
        for r in scheduler.audit.records(after_seq=0, limit=1000)
        if r.lease_id == lease_id
    ]


def test_a_release_inside_the_window_is_a_cooperative_preemption(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("low", "alice", 0, 10, 60.0, grace=5.0))
    assert lease.grace == 5.0
    ticket = as_ticket(scheduler.acquire("high", "bob", 9, 4, 60.0))
    pending = scheduler.pending_preemption(lease.lease_id)
    assert pending is not None
    assert pending.grace_deadline == pending.deadline == clock.monotonic() + 5.0
    clock.advance(2.0)
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE  # the window holds
    ended = scheduler.release(
        lease.lease_id, holder="alice", work_lost_records=0, work_lost_seconds=0.0
    )
    assert ended.state is LeaseState.PREEMPTED
    assert (ended.work_lost_records, ended.work_lost_seconds) == (0, 0.0)
    kinds = [k for k, _ in _records(scheduler, lease.lease_id)]
    assert kinds == [
        "grant",
        "preemption_requested",
        "preemption_deferred",
        "preemption_cooperative",
    ]
    data = _records(scheduler, lease.lease_id)[-1][1]
    assert data["work_lost_records"] == 0
    assert data["grace"] == 5.0
    # The waiting ticket got the room at once.
    assert as_lease(scheduler.poll(ticket.ticket_id)).job == "high"
    # Watchers heard the request, then the end.
    events = scheduler.events.read(f"{scheduler.events.epoch}-0", "alice").events
    assert [(e.kind, e.outcome) for e in events] == [
        (LeaseEventKind.PREEMPTION_REQUESTED, None),
        (LeaseEventKind.LEASE_ENDED, "preemption_cooperative"),
    ]
    assert events[0].deadline == pending.deadline


def test_a_holder_that_ignores_the_window_is_forced_and_its_loss_is_exact(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("low", "alice", 0, 1, 60.0, grace=4.0))
    clock.advance(10.0)
    scheduler.observer.on_flush_start(lease.lease_id)
    clock.advance(1.0)
    scheduler.observer.on_flush_complete(lease.lease_id)  # last checkpoint at t=11
    clock.advance(3.0)
    decision = scheduler.request_preemption(lease.lease_id, "make room")  # t=14
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.deadline == clock.monotonic() + 4.0
    clock.advance(3.5)
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE
    clock.advance(0.5)  # t=18: the window ends
    scheduler.tick()
    ended = scheduler.get(lease.lease_id)
    assert ended.state is LeaseState.PREEMPTED
    assert ended.work_lost_records is None
    assert ended.work_lost_seconds == pytest.approx(18.0 - 11.0)
    kind, data = _records(scheduler, lease.lease_id)[-1]
    assert kind == "preemption_forced"
    assert data["grace_expired"] is True
    assert data["work_lost_seconds"] == pytest.approx(7.0)


def test_without_a_checkpoint_the_loss_counts_from_the_grant(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("j", "alice", 0, 1, 5.0))
    clock.advance(6.0)
    scheduler.tick()
    ended = scheduler.get(lease.lease_id)
    assert ended.state is LeaseState.EXPIRED
    assert ended.work_lost_seconds == pytest.approx(5.0)  # lost at the expiry, not later
    other = as_lease(scheduler.acquire("k", "alice", 0, 1, 60.0))
    clock.advance(2.5)
    assert scheduler.fence(other.lease_id).work_lost_seconds == pytest.approx(2.5)


def test_a_plain_release_counts_the_seconds_and_leaves_the_records_unknown(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    lease = as_lease(scheduler.acquire("j", "alice", 0, 1, 60.0))
    clock.advance(1.0)
    # A remote worker reports its last checkpoint was 0.25 s before this renewal.
    scheduler.renew(lease.lease_id, lease.fencing_token, [], checkpoint_age=0.25)
    clock.advance(2.0)
    ended = scheduler.release(lease.lease_id)
    assert ended.state is LeaseState.RELEASED  # no grace: a release is a release
    assert ended.work_lost_records is None
    assert ended.work_lost_seconds == pytest.approx(2.25)
    reported = as_lease(scheduler.acquire("k", "alice", 0, 1, 60.0))
    ended = scheduler.release(reported.lease_id, work_lost_records=12)
    assert ended.work_lost_records == 12


def test_an_immediate_preemption_records_its_loss(scheduler: Scheduler, clock: ManualClock) -> None:
    lease = as_lease(scheduler.acquire("j", "alice", 0, 1, 60.0))
    clock.advance(1.5)
    decision = scheduler.request_preemption(lease.lease_id, "now")
    assert decision.outcome is PreemptionOutcome.PREEMPTED
    assert scheduler.get(lease.lease_id).work_lost_seconds == pytest.approx(1.5)
    assert _records(scheduler, lease.lease_id)[-1][1]["work_lost_seconds"] == pytest.approx(1.5)


def test_grace_is_bounded_by_max_grace_and_max_defer(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "bounds.sqlite3")
    with Scheduler(2, store, clock=clock, max_defer=20.0, max_grace=8.0, autostart=False) as s:
        assert as_lease(s.acquire("ok", "alice", 0, 1, 60.0, grace=8.0)).grace == 8.0
        with pytest.raises(InvalidRequest, match=r"grace 9 .*max_grace is 8 s.*max_defer is 20 s"):
            s.acquire("j", "alice", 0, 1, 60.0, grace=9.0)
        for bad in (-1.0, float("nan"), float("inf"), "5", True):
            with pytest.raises(InvalidRequest, match="grace"):
                s.acquire("j", "alice", 0, 1, 60.0, grace=bad)  # type: ignore[arg-type]
    with (
        Scheduler(
            2,
            SqliteStore(tmp_path / "b2.sqlite3"),
            clock=clock,
            max_defer=20.0,
            max_grace=60.0,
            autostart=False,
        ) as s,
        pytest.raises(InvalidRequest, match="max_defer is 20 s"),
    ):
        s.acquire("j", "alice", 0, 1, 60.0, grace=21.0)
    with pytest.raises(InvalidRequest, match="work_lost_records -1"):
        Scheduler(1, SqliteStore(":memory:"), clock=clock, autostart=False).release(
            1, work_lost_records=-1
        )


def test_a_restart_keeps_the_grace_and_the_pending_deadline(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    first = make_scheduler()
    lease = as_lease(first.acquire("low", "alice", 0, 1, 60.0, grace=10.0))
    first.request_preemption(lease.lease_id, "make room")
    first.close()
    clock.advance(3.0)  # down for 3 s
    second = make_scheduler()
    restored = second.get(lease.lease_id)
    assert (restored.state, restored.grace) == (LeaseState.ACTIVE, 10.0)
    pending = second.pending_preemption(lease.lease_id)
    assert pending is not None
    assert pending.grace_deadline == pytest.approx(clock.monotonic() + 7.0)
    assert pending.deadline == pytest.approx(clock.monotonic() + 7.0)
    second.tick()
    assert second.get(lease.lease_id).state is LeaseState.ACTIVE  # not carried out at once
    # A watcher of the new process learns of the restored request (its cursor resets).
    batch = second.events.read("0123-5", "alice")
    assert batch.reset
    assert [e.lease_id for e in batch.events] == [lease.lease_id]
    clock.advance(7.0)
    second.tick()
    ended = second.get(lease.lease_id)
    assert ended.state is LeaseState.PREEMPTED
    kind, data = _records(second, lease.lease_id)[-1]
    assert (kind, data["grace_expired"]) == ("preemption_forced", True)


def test_a_queued_acquire_keeps_its_grace_through_a_restart(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    first = make_scheduler(2)
    blocker = as_lease(first.acquire("blocker", "bob", 5, 2, 60.0))
    ticket = as_ticket(first.acquire("waiting", "alice", 0, 1, 60.0, grace=6.0))
    assert ticket.grace == 6.0
    first.close()
    second = make_scheduler(2)
    second.release(blocker.lease_id)
    lease = as_lease(second.poll(ticket.ticket_id))
    assert lease.grace == 6.0
