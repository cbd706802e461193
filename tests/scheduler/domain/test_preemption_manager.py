"""The PreemptionManager on its own: markers, decisions, deadlines, victim choice."""

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
HOLD = NonPreemptibleReason.OPERATOR_HOLD


@pytest.fixture
def manager(clock: ManualClock) -> PreemptionManager:
    return PreemptionManager(clock, max_defer=10.0)


def test_markers_count_per_lease_and_reason(manager: PreemptionManager) -> None:
    manager.track(1, 0, 1)
    assert manager.mark_non_preemptible(1, CKPT)
    assert manager.mark_non_preemptible(1, CKPT)
    assert manager.mark_non_preemptible(1, HOLD)
    assert manager.reasons(1) == {CKPT, HOLD}
    assert manager.clear_non_preemptible(1, CKPT)
    assert manager.reasons(1) == {CKPT, HOLD}  # the overlapping flush still runs
    assert manager.clear_non_preemptible(1, CKPT)
    assert manager.reasons(1) == {HOLD}
    # A clear never goes below zero.
    assert manager.clear_non_preemptible(1, CKPT)
    assert manager.marker_count(1, CKPT) == 0
    assert manager.mark_non_preemptible(1, CKPT)
    assert manager.marker_count(1, CKPT) == 1


def test_untracked_lease_markers_return_false(manager: PreemptionManager) -> None:
    assert not manager.mark_non_preemptible(99, CKPT)
    assert not manager.clear_non_preemptible(99, CKPT)
    assert manager.reasons(99) == frozenset()
    manager.track(5, 0, 1)
    manager.mark_non_preemptible(5, CKPT)
    assert manager.untrack(5)
    assert not manager.untrack(5)
    assert not manager.clear_non_preemptible(5, CKPT)
    assert manager.marker_count(5, CKPT) == 0


def test_marker_rejects_a_non_reason(manager: PreemptionManager) -> None:
    manager.track(1, 0, 1)
    with pytest.raises(InvalidRequest, match="'checkpoint_in_progress'"):
        manager.mark_non_preemptible(1, "checkpoint_in_progress")  # type: ignore[arg-type]


def test_unmarked_lease_is_preempted_at_once(manager: PreemptionManager) -> None:
    manager.track(1, 0, 1)
    decision = manager.request_preemption(1, "room")
    assert decision.outcome is PreemptionOutcome.PREEMPTED
    assert decision.reasons == frozenset()
    assert decision.deadline is None
    assert not manager.is_tracked(1)
    assert manager.request_preemption(1, "again").outcome is PreemptionOutcome.NOT_TRACKED


def test_deferred_runs_when_last_marker_clears(
    manager: PreemptionManager, clock: ManualClock
) -> None:
    manager.track(1, 0, 1)
    manager.mark_non_preemptible(1, CKPT)
    manager.mark_non_preemptible(1, CKPT)
    clock.advance(1.0)
    decision = manager.request_preemption(1, "room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.reasons == {CKPT}
    assert decision.deadline == 11.0
    # A second request keeps the first deadline.
    clock.advance(1.0)
    again = manager.request_preemption(1, "other")
    assert again.deadline == 11.0
    assert again.cause == "room"
    manager.wake.clear()
    manager.clear_non_preemptible(1, CKPT)
    assert manager.take_due() == []
    assert not manager.wake.is_set()
    manager.clear_non_preemptible(1, CKPT)
    assert manager.wake.is_set()  # the clear only signals ...
    assert manager.is_tracked(1)  # ... and carries nothing out
    (due,) = manager.take_due()
    assert due.lease_id == 1
    assert not due.forced
    assert not manager.is_tracked(1)


def test_remarked_before_executor_waits_on(manager: PreemptionManager) -> None:
    manager.track(1, 0, 1)
    manager.mark_non_preemptible(1, CKPT)
    manager.request_preemption(1, "room")
    manager.clear_non_preemptible(1, CKPT)
    manager.mark_non_preemptible(1, CKPT)  # a new flush began first
    assert manager.take_due() == []
    assert manager.pending(1) is not None


def test_forced_at_deadline(manager: PreemptionManager, clock: ManualClock) -> None:
    manager.track(1, 0, 1)
    manager.mark_non_preemptible(1, HOLD)
    decision = manager.request_preemption(1, "room")
    assert decision.deadline == 10.0
    assert manager.next_deadline() == 10.0
    clock.advance(9.999)
    assert manager.take_due() == []
    clock.advance(0.001)
    (due,) = manager.take_due()
    assert due.forced
    assert due.reasons == {HOLD}
    assert manager.next_deadline() is None


def test_remote_reasons_defer_like_markers(manager: PreemptionManager) -> None:
    manager.track(1, 0, 1)
    assert manager.report_reasons(1, [CKPT])
    assert manager.reasons(1) == {CKPT}
    assert manager.request_preemption(1, "room").outcome is PreemptionOutcome.DEFERRED
    assert manager.take_due() == []
    assert manager.report_reasons(1, [])
    (due,) = manager.take_due()
    assert not due.forced
    assert not manager.report_reasons(1, [])


def _manager_with(clock: ManualClock, leases: list[tuple[int, int, int]]) -> PreemptionManager:
    manager = PreemptionManager(clock)
    for lease_id, priority, slots in leases:
        manager.track(lease_id, priority, slots)
    return manager


def test_victims_only_below_priority(clock: ManualClock) -> None:
    manager = _manager_with(clock, [(1, 5, 1), (2, 3, 1)])
    assert manager.select_victims(1, 5) == [2]
    assert manager.select_victims(2, 5) == []  # cannot free enough: preempt nothing
    assert manager.select_victims(1, 3) == []
    assert manager.select_victims(0, 9) == []


def test_victims_lowest_priority_first(clock: ManualClock) -> None:
    manager = _manager_with(clock, [(1, 2, 1), (2, 0, 1), (3, 1, 1)])
    assert manager.select_victims(1, 9) == [2]
    assert manager.select_victims(2, 9) == [2, 3]


def test_victims_preemptible_now_before_deferred(clock: ManualClock) -> None:
    manager = _manager_with(clock, [(1, 0, 1), (2, 1, 1)])
    manager.mark_non_preemptible(1, CKPT)
    assert manager.select_victims(1, 9) == [2]
    assert manager.select_victims(2, 9) == [2, 1]


def test_victims_youngest_then_most_recent_flush(clock: ManualClock) -> None:
    manager = _manager_with(clock, [(1, 0, 1), (2, 0, 1), (3, 0, 1)])
    assert manager.select_victims(1, 9) == [3]  # never flushed: youngest grant
    manager.mark_non_preemptible(1, CKPT)
    manager.clear_non_preemptible(1, CKPT)  # 1 just flushed: least work at risk
    assert manager.select_victims(1, 9) == [1]
    assert manager.select_victims(2, 9) == [1, 3]


def test_victims_skip_pending(clock: ManualClock) -> None:
    manager = _manager_with(clock, [(1, 0, 1), (2, 0, 1)])
    manager.mark_non_preemptible(2, CKPT)
    manager.request_preemption(2, "room")
    assert manager.pending_slots() == 1
    assert manager.select_victims(1, 9) == [1]
    assert manager.select_victims(2, 9) == []


def test_victim_set_is_minimal(clock: ManualClock) -> None:
    # Greedy takes 1 (1 slot) then 2 (4 slots); 2 alone is enough, so 1 is dropped.
    manager = _manager_with(clock, [(2, 0, 4), (1, 0, 1)])
    assert manager.select_victims(3, 9) == [2]


def test_select_victims_is_correct_at_scale(clock: ManualClock) -> None:
    # Timing lives in benchmarks/bench_preemption.py; this checks the choice.
    manager = PreemptionManager(clock)
    for i in range(1, 20_001):
        manager.track(i, i % 7, 1)
    assert manager.select_victims(3, 3) == [19999, 19992, 19985]  # priority 0, youngest
    for i in (19999, 19992):
        manager.mark_non_preemptible(i, CKPT)
    assert manager.select_victims(3, 3) == [19985, 19978, 19971]
    assert manager.select_victims(3, 1) == [19985, 19978, 19971]


def test_max_defer_validated(clock: ManualClock) -> None:
    with pytest.raises(InvalidRequest, match="max_defer -1"):
        PreemptionManager(clock, max_defer=-1)
    manager = PreemptionManager(clock)
    manager.track(1, 0, 1)
    with pytest.raises(InvalidRequest, match="already tracked"):
        manager.track(1, 0, 1)


def test_an_empty_checkpoint_clear_does_not_reorder_victims(clock: ManualClock) -> None:
    manager = PreemptionManager(clock)
    manager.track(1, 0, 1)
    manager.track(2, 0, 1)
    assert manager.clear_non_preemptible(1, CKPT)  # tracked, but no marker to clear
    assert manager.select_victims(1, 9) == [2], "the youngest still goes first"


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
