"""A hypothesis state machine over operator holds: renewals, restarts, expiry and
preemption never move a hold; only hold, unhold and its own lifetime do."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from grafos_scheduler import (
    JobAlreadyLeased,
    Lease,
    LeaseExpired,
    LeaseNotActive,
    LeaseState,
    ManualClock,
    NoHold,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
)

HOLD = NonPreemptibleReason.OPERATOR_HOLD
FLUSH = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
MAX_DEFER = 3.0
JOBS = ["a", "b", "c"]
STEPS = [0.25, 0.5, 1.0, 2.0]  # dyadic: deadlines recomputed from wall times stay exact


class HoldMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="grafos-holds-"))
        self.clock = ManualClock()
        self.scheduler = self._open()
        self.leases: list[int] = []
        # The model: each ACTIVE lease's hold, as (reason, lapses at or None).
        self.holds: dict[int, tuple[str, float | None]] = {}
        self.deadlines: dict[int, float] = {}
        self.audited = 0  # hold records expected in the chain

    def _open(self) -> Scheduler:
        store = SqliteStore(self.dir / "s.sqlite3")
        return Scheduler(3, store, clock=self.clock, max_defer=MAX_DEFER, autostart=False)

    def teardown(self) -> None:
        self.scheduler.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sync(self) -> None:
        now = self.clock.monotonic()
        for lease_id in list(self.holds):
            lapses = self.holds[lease_id][1]
            if lapses is not None and now >= lapses:
                del self.holds[lease_id]
                self.audited += 1  # hold_expired
        for lease_id in self.leases:
            lease = self.scheduler.get(lease_id)
            if lease.state is not LeaseState.ACTIVE:
                if lease.state is LeaseState.PREEMPTED and lease_id in self.holds:
                    # A held lease goes only when its deadline forces it.
                    assert now >= self.deadlines[lease_id], (now, self.deadlines, lease)
                self.holds.pop(lease_id, None)
                self.deadlines.pop(lease_id, None)

    @rule(job=st.sampled_from(JOBS), ttl=st.sampled_from([2.0, 8.0, 60.0]))
    def acquire(self, job: str, ttl: float) -> None:
        try:
            lease = self.scheduler.acquire(job, "w", 0, 1, ttl)
        except JobAlreadyLeased:
            return
        if isinstance(lease, Lease):
            self.leases.append(lease.lease_id)

    @precondition(lambda self: bool(self.leases))
    @rule(
        data=st.data(),
        reason=st.sampled_from(["drain", "disk"]),
        expires_in=st.sampled_from([None, 0.5, 1.0, 4.0]),
    )
    def hold(self, data: st.DataObject, reason: str, expires_in: float | None) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        try:
            held = self.scheduler.hold(lease_id, reason, expires_in)
        except (LeaseExpired, LeaseNotActive):
            assert lease_id not in self.holds
            return
        assert held.hold is not None
        now = self.clock.monotonic()
        self.holds[lease_id] = (reason, None if expires_in is None else now + expires_in)
        self.audited += 1

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def unhold(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        try:
            self.scheduler.unhold(lease_id)
        except NoHold:
            assert lease_id not in self.holds
        except (LeaseExpired, LeaseNotActive):
            assert lease_id not in self.holds
        else:
            del self.holds[lease_id]
            self.audited += 1
        self.scheduler.tick()
        self._sync()

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data(), flushing=st.booleans())
    def worker_renews(self, data: st.DataObject, flushing: bool) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        lease = self.scheduler.get(lease_id)
        with contextlib.suppress(LeaseExpired, LeaseNotActive):
            self.scheduler.renew(lease_id, lease.fencing_token, [FLUSH] if flushing else [])
        self.scheduler.tick()
        self._sync()

    @precondition(lambda self: bool(self.leases))
    @rule(data=st.data())
    def preempt(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(self.leases))
        decision = self.scheduler.request_preemption(lease_id, "room")
        if lease_id in self.holds:
            assert decision.outcome is PreemptionOutcome.DEFERRED
            assert HOLD in decision.reasons
        if decision.deadline is not None:
            self.deadlines.setdefault(lease_id, decision.deadline)
        self._sync()

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.scheduler.tick()
        self._sync()

    @rule()
    def restart(self) -> None:
        self.scheduler.close()
        self.scheduler = self._open()
        self.scheduler.tick()
        self._sync()

    @invariant()
    def holds_are_what_the_operator_set(self) -> None:
        now = self.clock.monotonic()
        for lease_id in self.leases:
            lease = self.scheduler.get(lease_id)
            if lease.state is not LeaseState.ACTIVE:
                continue
            expected = self.holds.get(lease_id)
            reasons = self.scheduler.reasons(lease_id)
            if expected is None:
                assert lease.hold is None, lease
                assert HOLD not in reasons
            else:
                assert lease.hold is not None, (lease, expected)
                assert lease.hold.reason == expected[0]
                assert (lease.hold.expires_at is None) == (expected[1] is None)
                assert HOLD in reasons
                assert expected[1] is None or expected[1] > now

    @invariant()
    def every_hold_change_is_audited(self) -> None:
        kinds = ("hold_set", "hold_cleared", "hold_expired")
        records = self.scheduler.audit.records(limit=10_000)
        assert sum(r.kind in kinds for r in records) == self.audited
        assert self.scheduler.audit.verify().ok


HoldMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHoldMachine = HoldMachine.TestCase
