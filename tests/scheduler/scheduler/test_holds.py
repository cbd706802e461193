"""Operator holds: set and cleared by the operator only, stored, audited, expiring,
and bounded by max_defer like every marker."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    InvalidRequest,
    LeaseNotActive,
    LeaseState,
    ManualClock,
    NoHold,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
)
from support.scheduling import SchedulerFactory, as_lease, audit_kinds

HOLD = NonPreemptibleReason.OPERATOR_HOLD
FLUSH = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def _records(scheduler: Scheduler, kind: str) -> list[dict[str, object]]:
    return [dict(r.data) for r in scheduler.audit.records(limit=10_000) if r.kind == kind]


def test_a_hold_defers_preemption_and_is_audited(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    held = scheduler.hold(lease.lease_id, "disk swap on node 7", 120.0)
    assert held.hold is not None
    assert held.hold.reason == "disk swap on node 7"
    assert held.hold.expires_at == pytest.approx(scheduler.clock.monotonic() + 120.0)
    assert scheduler.reasons(lease.lease_id) == {HOLD}
    decision = scheduler.request_preemption(lease.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert decision.reasons == {HOLD}
    assert _records(scheduler, "hold_set") == [
        {"reason": "disk swap on node 7", "expires_in": 120.0, "replaced": False}
    ]


def test_a_worker_renewal_never_clears_a_hold(scheduler: Scheduler) -> None:
    # The bug: a hold lived in the renewal's reported reasons, so the worker's next
    # plain renewal cleared it and the preemption it deferred went at once.
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    scheduler.hold(lease.lease_id, "keep it")
    assert scheduler.request_preemption(lease.lease_id, "x").outcome is PreemptionOutcome.DEFERRED
    scheduler.renew(lease.lease_id, lease.fencing_token, [], holder="w")
    scheduler.renew(lease.lease_id, lease.fencing_token, [FLUSH], holder="w")
    scheduler.renew(lease.lease_id, lease.fencing_token, [], holder="w")
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE
    assert scheduler.reasons(lease.lease_id) == {HOLD}
    assert scheduler.get(lease.lease_id).hold is not None


def test_unhold_carries_out_the_deferred_preemption(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    scheduler.hold(lease.lease_id, "keep it")
    scheduler.request_preemption(lease.lease_id, "make room")
    cleared = scheduler.unhold(lease.lease_id)
    assert cleared.hold is None
    scheduler.tick()
    ended = scheduler.get(lease.lease_id)
    assert ended.state is LeaseState.PREEMPTED
    assert ended.end_cause == "preempted: make room"
    assert _records(scheduler, "hold_cleared") == [{"reason": "keep it"}]
    with pytest.raises(LeaseNotActive):
        scheduler.unhold(lease.lease_id)


def test_unhold_without_a_hold_is_refused(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    with pytest.raises(NoHold, match=f"{lease.lease_id:032x} has no operator hold"):
        scheduler.unhold(lease.lease_id)


def test_a_hold_is_bounded_by_max_defer(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler(max_defer=10.0)
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 600.0))
    scheduler.hold(lease.lease_id, "forever")
    scheduler.request_preemption(lease.lease_id, "make room")
    clock.advance(10.0)
    scheduler.tick()
    ended = scheduler.get(lease.lease_id)
    assert ended.state is LeaseState.PREEMPTED
    assert ended.end_cause is not None
    assert "forced" in ended.end_cause
    assert "operator_hold" in ended.end_cause
    assert audit_kinds(scheduler)[-1] == "preemption_forced"


def test_a_hold_expires_and_is_audited(scheduler: Scheduler, clock: ManualClock) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 600.0))
    scheduler.hold(lease.lease_id, "brief", 5.0)
    scheduler.request_preemption(lease.lease_id, "make room")
    clock.advance(4.9)
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE
    clock.advance(0.2)
    scheduler.tick()
    assert scheduler.get(lease.lease_id).state is LeaseState.PREEMPTED
    kinds = audit_kinds(scheduler)
    assert kinds[-2:] == ["hold_expired", "preemption_executed"]
    assert _records(scheduler, "hold_expired")[0]["while_down"] is False


def test_setting_a_hold_again_replaces_it(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 600.0))
    scheduler.hold(lease.lease_id, "first", 5.0)
    again = scheduler.hold(lease.lease_id, "second")
    assert again.hold is not None
    assert again.hold.reason == "second"
    assert again.hold.expires_at is None
    assert scheduler.manager.marker_count(lease.lease_id, HOLD) == 1
    assert [r["replaced"] for r in _records(scheduler, "hold_set")] == [False, True]
    scheduler.unhold(lease.lease_id)
    assert scheduler.reasons(lease.lease_id) == frozenset()


def test_a_hold_survives_a_restart(make_scheduler: SchedulerFactory, clock: ManualClock) -> None:
    first = make_scheduler()
    lease = as_lease(first.acquire("job", "w", 0, 1, 600.0))
    brief = as_lease(first.acquire("brief", "w", 0, 1, 600.0))
    first.hold(lease.lease_id, "keep it", 100.0)
    first.hold(brief.lease_id, "brief", 5.0)
    first.close()
    clock.advance(10.0)  # the brief hold lapses while the scheduler is down
    second = make_scheduler()
    restored = second.get(lease.lease_id)
    assert restored.hold is not None
    assert restored.hold.reason == "keep it"
    assert restored.hold.expires_at == pytest.approx(clock.monotonic() + 90.0, abs=0.01)
    assert second.reasons(lease.lease_id) == {HOLD}
    assert second.get(brief.lease_id).hold is None
    assert second.reasons(brief.lease_id) == frozenset()
    lapsed = [r for r in second.audit.records(limit=100) if r.kind == "hold_expired"]
    assert [(r.lease_id, r.data["while_down"]) for r in lapsed] == [(brief.lease_id, True)]
    decision = second.request_preemption(lease.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    assert second.audit.verify()


def test_a_pending_preemption_stays_held_across_a_restart(
    make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    first = make_scheduler(max_defer=60.0)
    lease = as_lease(first.acquire("job", "w", 0, 1, 600.0))
    first.hold(lease.lease_id, "keep it")
    first.request_preemption(lease.lease_id, "make room")
    first.close()
    second = make_scheduler(max_defer=60.0)
    second.tick()
    assert second.get(lease.lease_id).state is LeaseState.ACTIVE  # the hold still defers
    clock.advance(60.0)
    second.tick()
    assert second.get(lease.lease_id).state is LeaseState.PREEMPTED


@pytest.mark.parametrize(
    ("reason", "expires_in", "needle"),
    [
        ("", None, "hold reason ''"),
        ("   ", None, "hold reason '   '"),
        ("x" * 501, None, "at most 500"),
        ("ok", 0, "expires_in 0"),
        ("ok", -1.0, "expires_in -1.0"),
        ("ok", float("inf"), "expires_in inf"),
        ("ok", 8 * 86400.0, "at most 604800"),
        ("ok", True, "expires_in True"),
    ],
)
def test_bad_holds_are_refused_naming_the_value(
    scheduler: Scheduler, reason: str, expires_in: float | None, needle: str
) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    with pytest.raises(InvalidRequest, match=needle.replace("(", r"\(")):
        scheduler.hold(lease.lease_id, reason, expires_in)
    assert scheduler.get(lease.lease_id).hold is None


def test_an_ended_lease_cannot_be_held(scheduler: Scheduler) -> None:
    lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
    scheduler.release(lease.lease_id)
    with pytest.raises(LeaseNotActive):
        scheduler.hold(lease.lease_id, "too late")
