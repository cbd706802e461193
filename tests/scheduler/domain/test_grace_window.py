"""Grace windows in the PreemptionManager: a request waits for the holder, is forced
at the window's end, and flush markers still defer it up to max_defer."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    InvalidRequest,
    ManualClock,
    NonPreemptibleReason,
    PreemptionManager,
    PreemptionOutcome,
)

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def _manager() -> tuple[ManualClock, PreemptionManager]:
    clock = ManualClock(100.0)
    return clock, PreemptionManager(clock, max_defer=30.0)


def test_a_request_on_a_lease_with_grace_waits_for_the_window() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=5.0)
    decision = manager.decide_preemption(1, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.reasons == frozenset()
    assert decision.deadline == 105.0
    pending = manager.pending(1)
    assert pending is not None
    assert (pending.deadline, pending.grace_deadline) == (105.0, 105.0)
    # A second request keeps the first one's deadline.
    clock.advance(1.0)
    assert manager.decide_preemption(1, "again").deadline == 105.0
    assert manager.next_deadline() == 105.0
    clock.advance(3.9)
    assert manager.take_due() == []


def test_a_flush_completing_inside_the_window_does_not_preempt() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=5.0)
    manager.mark_non_preemptible(1, CKPT)
    manager.decide_preemption(1, "make room")
    clock.advance(1.0)
    manager.clear_non_preemptible(1, CKPT)
    assert manager.take_due() == []  # the holder's to release, not the executor's
    assert manager.is_tracked(1)


def test_the_window_ends_forced_when_the_holder_did_nothing() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=5.0)
    manager.decide_preemption(1, "make room")
    clock.advance(5.0)
    (due,) = manager.take_due()
    assert (due.lease_id, due.forced, due.grace_expired, due.deadline) == (1, True, True, 105.0)
    assert not manager.is_tracked(1)


def test_a_flush_in_progress_at_the_end_of_the_window_defers_up_to_max_defer() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=5.0)
    manager.track(2, priority=0, slots=1, grace=5.0)
    manager.decide_preemption(1, "make room")
    manager.decide_preemption(2, "make room")
    clock.advance(4.0)
    manager.mark_non_preemptible(1, CKPT)
    manager.mark_non_preemptible(2, CKPT)
    clock.advance(1.0)
    assert manager.take_due() == []
    pending = manager.pending(1)
    assert pending is not None
    assert pending.deadline == 130.0  # the request plus max_defer
    # Lease 1's flush completes: carried out (deferred by a flush, as always).
    clock.advance(2.0)
    manager.clear_non_preemptible(1, CKPT)
    (due,) = manager.take_due()
    assert (due.lease_id, due.forced, due.grace_expired) == (1, False, False)
    # Lease 2's flush never completes: forced at the bound.
    clock.advance(23.0)
    (due,) = manager.take_due()
    assert (due.lease_id, due.forced) == (2, True)


def test_leases_without_grace_are_preferred_as_victims() -> None:
    _, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=5.0)  # older: least at risk otherwise
    manager.track(2, priority=0, slots=1)
    assert manager.select_victims(1, priority=5) == [2]
    assert sorted(manager.select_victims(2, priority=5)) == [1, 2]


def test_a_restored_grace_window_is_not_carried_out_at_once() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1, grace=10.0)
    manager.restore_pending(1, "make room", 97.0, 127.0, grace_deadline=107.0)
    assert manager.take_due() == []
    clock.advance(7.0)
    (due,) = manager.take_due()
    assert due.grace_expired


def test_completed_checkpoints_are_remembered() -> None:
    clock, manager = _manager()
    manager.track(1, priority=0, slots=1)
    assert manager.last_checkpoint(1) is None
    manager.mark_non_preemptible(1, CKPT)
    clock.advance(2.0)
    manager.clear_non_preemptible(1, CKPT)
    assert manager.last_checkpoint(1) == 102.0
    # A remote report that stops naming the flush: it completed.
    manager.report_reasons(1, [CKPT])
    clock.advance(3.0)
    manager.report_reasons(1, [])
    assert manager.last_checkpoint(1) == 105.0
    # A renewal's age never moves it back, nor into the future.
    assert manager.note_checkpoint(1, 101.0)
    assert manager.last_checkpoint(1) == 105.0
    assert manager.note_checkpoint(1, 500.0)
    assert manager.last_checkpoint(1) == 105.0
    assert not manager.note_checkpoint(99, 1.0)


def test_grace_must_be_seconds() -> None:
    _, manager = _manager()
    with pytest.raises(InvalidRequest, match="grace -1"):
        manager.track(1, priority=0, slots=1, grace=-1)
