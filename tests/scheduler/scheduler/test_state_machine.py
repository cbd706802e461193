"""A hypothesis state machine over the scheduler, with a restart among its rules."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from grafos_scheduler import (
    CapacityExceeded,
    FencingTokenMismatch,
    JobAlreadyLeased,
    Lease,
    LeaseExpired,
    LeaseNotActive,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
    Ticket,
)

CAPACITY = 4
MAX_DEFER = 3.0
JOBS = ["a", "b", "c", "d", "e"]
REASONS = list(NonPreemptibleReason)
# Dyadic steps keep monotonic deadlines recomputed from wall ones exact.
STEPS = [0.25, 0.5, 1.0, 2.0, 4.0]


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="grafos-sm-"))
        self.clock = ManualClock()
        self.scheduler = self._open()
        self.leases: list[int] = []  # every lease ever granted
        self.tokens: dict[str, list[int]] = {}
        self.marks: dict[tuple[int, NonPreemptibleReason], int] = {}
        self.remote: dict[int, frozenset[NonPreemptibleReason]] = {}
        self.deadlines: dict[int, float] = {}  # deferred preemptions we were told of
        self.known_states: dict[int, LeaseState] = {}

    def _open(self) -> Scheduler:
        store = SqliteStore(self.dir / "s.sqlite3")
        return Scheduler(CAPACITY, store, clock=self.clock, max_defer=MAX_DEFER, autostart=False)

    def teardown(self) -> None:
        self.scheduler.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _held(self, lease_id: int) -> bool:
        total = sum(n for (lid, _), n in self.marks.items() if lid == lease_id)
        return total > 0 or bool(self.remote.get(lease_id))

    def _forget(self, lease_id: int) -> None:
        for key in [k for k in self.marks if k[0] == lease_id]:
            del self.marks[key]
        self.remote.pop(lease_id, None)

    def _note_grant(self, lease: Lease) -> None:
        history = self.tokens.setdefault(lease.job, [])
        assert not history or lease.fencing_token > history[-1], (history, lease)
        history.append(lease.fencing_token)
        self.leases.append(lease.lease_id)

    def _sync(self) -> None:
        """Check every lease that left ACTIVE since the last step."""
        now = self.clock.monotonic()
        for lease in self.scheduler.leases():
            before = self.known_states.get(lease.lease_id)
            granted = before is None and lease.state is LeaseState.ACTIVE
            if granted and lease.lease_id not in self.leases:
                self._note_grant(lease)  # a ticket granted by a release or a tick
            if lease.state is LeaseState.PREEMPTED and before is not LeaseState.PREEMPTED:
                deadline = self.deadlines.get(lease.lease_id)
                if self._held(lease.lease_id):
                    # A marked lease is never preempted before its deadline.
                    assert deadline is not None, lease
                    assert now >= deadline, (now, deadline, lease)
            if lease.state is not LeaseState.ACTIVE:
                self._forget(lease.lease_id)
                self.deadlines.pop(lease.lease_id, None)
            self.known_states[lease.lease_id] = lease.state

    def _active_ids(self) -> list[int]:
        return [x for x in self.leases if self.known_states.get(x) is LeaseState.ACTIVE]

    @rule(
        job=st.sampled_from(JOBS),
        priority=st.integers(0, 3),
        slots=st.integers(1, CAPACITY + 1),
        ttl=st.sampled_from([1.0, 2.0, 4.0, 8.0]),
    )
    def acquire(self, job: str, priority: int, slots: int, ttl: float) -> None:
        try:
            result = self.scheduler.acquire(job, "w", priority, slots, ttl)
        except CapacityExceeded:
            assert slots > CAPACITY
            return
        except JobAlreadyLeased:
            return
        if isinstance(result, Lease):
            self._note_grant(result)
            self.known_states[result.lease_id] = LeaseState.ACTIVE
        else:
            assert isinstance(result, Ticket)
        self._record_deferred()
        self._sync()

    def _record_deferred(self) -> None:
        for lease_id in self._active_ids():
            pending = self.scheduler.pending_preemption(lease_id)
            if pending is not None:
                self.deadlines.setdefault(lease_id, pending.deadline)

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), right_token=st.booleans())
    def renew(self, data: st.DataObject, right_token: bool) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        lease = self.scheduler.get(lease_id)
        token = lease.fencing_token if right_token else lease.fencing_token + 1
        expired = self.clock.monotonic() >= lease.expires_at
        try:
            renewed = self.scheduler.renew(lease_id, token)
        except LeaseExpired:
            assert lease.state in (LeaseState.ACTIVE, LeaseState.EXPIRED)
        except LeaseNotActive:
            assert lease.state not in (LeaseState.ACTIVE, LeaseState.EXPIRED)
        except FencingTokenMismatch:
            assert not right_token
        else:
            # A renewal after expiry never succeeds.
            assert not expired
            assert lease.state is LeaseState.ACTIVE
            assert right_token
            assert renewed.expires_at == self.clock.monotonic() + renewed.ttl
        self._sync()

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), reasons=st.frozensets(st.sampled_from(REASONS)))
    def renew_reporting(
        self, data: st.DataObject, reasons: frozenset[NonPreemptibleReason]
    ) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        lease = self.scheduler.get(lease_id)
        try:
            self.scheduler.renew(lease_id, lease.fencing_token, reasons=reasons)
        except (LeaseExpired, LeaseNotActive):
            pass
        else:
            self.remote[lease_id] = reasons
        self._sync()

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), fence=st.booleans())
    def end(self, data: st.DataObject, fence: bool) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        try:
            if fence:
                assert self.scheduler.fence(lease_id).state is LeaseState.FENCED
            else:
                assert self.scheduler.release(lease_id).state is LeaseState.RELEASED
        except (LeaseExpired, LeaseNotActive):
            pass
        self._sync()

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.scheduler.tick()
        self._sync()

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def mark(self, data: st.DataObject, reason: NonPreemptibleReason) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        tracked = self.scheduler.manager.mark_non_preemptible(lease_id, reason)
        assert tracked == self.scheduler.manager.is_tracked(lease_id)
        if tracked:
            self.marks[(lease_id, reason)] = self.marks.get((lease_id, reason), 0) + 1

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def clear(self, data: st.DataObject, reason: NonPreemptibleReason) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        if self.scheduler.manager.clear_non_preemptible(lease_id, reason):
            key = (lease_id, reason)
            self.marks[key] = max(0, self.marks.get(key, 0) - 1)

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def request_preemption(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        held = self._held(lease_id) and self.scheduler.manager.is_tracked(lease_id)
        decision = self.scheduler.request_preemption(lease_id, "test")
        if decision.outcome is PreemptionOutcome.DEFERRED:
            assert held
            assert decision.deadline is not None
            self.deadlines.setdefault(lease_id, decision.deadline)
            assert decision.deadline == self.deadlines[lease_id]
        elif decision.outcome is PreemptionOutcome.PREEMPTED:
            assert not held
        self._sync()

    @rule()
    def tick(self) -> None:
        self.scheduler.tick()
        self._sync()

    @rule()
    def restart(self) -> None:
        self.scheduler.close()
        self.scheduler = self._open()
        # Markers are in memory: they do not survive. Pending preemptions do.
        self.marks.clear()
        self.remote.clear()
        self._sync()

    @invariant()
    def capacity_never_exceeded(self) -> None:
        active = self.scheduler.leases(LeaseState.ACTIVE)
        assert sum(lease.slots for lease in active) <= CAPACITY
        assert self.scheduler.used_slots == sum(lease.slots for lease in active)

    @invariant()
    def one_active_lease_per_job(self) -> None:
        jobs = [lease.job for lease in self.scheduler.leases(LeaseState.ACTIVE)]
        assert len(jobs) == len(set(jobs))

    @invariant()
    def markers_match_and_never_negative(self) -> None:
        manager = self.scheduler.manager
        for (lease_id, reason), count in self.marks.items():
            assert count >= 0, (lease_id, reason, count)  # the model clamps at zero
            actual = manager.marker_count(lease_id, reason)
            if manager.is_tracked(lease_id):
                # Clears past zero were absorbed: one more mark makes exactly count + 1.
                assert actual == count, (lease_id, reason, actual, count)
                # A held marker is a reason (remote reports may add others).
                assert count == 0 or reason in manager.reasons(lease_id)
            else:
                assert actual == 0, (lease_id, reason, actual)
                assert manager.reasons(lease_id) == frozenset()

    @invariant()
    def deferred_preemptions_meet_their_deadline(self) -> None:
        now = self.clock.monotonic()
        for lease_id, deadline in self.deadlines.items():
            if now >= deadline:
                # tick() runs after every clock step, so it must have been carried out.
                assert self.known_states.get(lease_id) is not LeaseState.ACTIVE or (
                    self.scheduler.get(lease_id).state is not LeaseState.ACTIVE
                ), (lease_id, deadline, now)

    @invariant()
    def audit_chain_verifies(self) -> None:
        assert self.scheduler.audit.verify().ok


SchedulerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSchedulerMachine = SchedulerMachine.TestCase
