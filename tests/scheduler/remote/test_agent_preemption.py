"""WorkerAgent under preemption: deferred while a reported flush runs, then a cooperative
stop at a safe point; a 410 stops the run; a preemption that beats the report is fenced."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from grafos_pipeline import Checkpoint, MemoryCheckpointStore
from grafos_scheduler import BackgroundServer, RunOutcome, SchedulerClient, WorkerAgent
from support.checkpoint_stores import HookedStore
from support.servers import WORKER_TOKENS
from support.stages import Sink, build_pipeline, expected_output


def test_preemption_during_a_reported_flush_is_deferred_then_cooperative(
    alice: SchedulerClient, admin: SchedulerClient
) -> None:
    agent = WorkerAgent(alice, "job-coop", ttl=5.0, renew_interval=0.05)
    lease = agent.acquire(timeout=10)
    decisions: list[str] = []

    def during_flush(n: int) -> None:
        if n != 3:
            return
        # The flush is in flight; wait until a renewal has reported it to the server.
        give_up = time.monotonic() + 10
        while admin.get(lease.lease_id).reasons != ["checkpoint_in_progress"]:
            assert time.monotonic() < give_up, "the flush was never reported"
            time.sleep(0.01)
        decisions.append(admin.preempt(lease.lease_id, "make room").outcome)
        # The next renewal carries the request: the agent's stop signal, no sleeping.
        assert agent.preemption_requested.wait(10)
        assert not agent.lost.is_set()

    store = HookedStore(during_flush)
    result = agent.run(build_pipeline("job-coop", store), range(100), checkpoint_every=7)
    assert decisions == ["deferred"]
    assert result.outcome is RunOutcome.PREEMPTED, result.detail
    # The deferred flush committed under this lease, and the run stopped right there.
    latest = store.latest("job-coop")
    assert latest is not None
    assert latest.fencing_token == lease.fencing_token
    assert latest.position == result.position == 21
    assert result.checkpoints == 3
    ended = admin.get(lease.lease_id)
    assert ended.state == "released"
    kinds = [r.kind for r in admin.audit(limit=1000).records if r.lease_id == lease.lease_id]
    assert "preemption_deferred" in kinds
    assert "preemption_forced" not in kinds


def test_run_stops_without_committing_again_after_a_410(
    alice: SchedulerClient, admin: SchedulerClient
) -> None:
    # The renewal's 410 is the path under test: no watch to hear of the fence first
    # (test_agent_watch.py has the watch's own test of an end).
    agent = WorkerAgent(alice, "job-410", ttl=5.0, renew_interval=0.05, watch=False)
    lease = agent.acquire(timeout=10)
    fenced_at: list[int] = []

    def fence_once(position: int) -> None:
        if position == 10 and not fenced_at:
            admin.fence(lease.lease_id)
            fenced_at.append(len(store.commits))
            assert agent.lost.wait(10)  # the next renewal gets the 410

    store = HookedStore()
    result = agent.run(
        build_pipeline("job-410", store), range(100), checkpoint_every=3, on_progress=fence_once
    )
    assert result.outcome is RunOutcome.LOST
    assert "renewal refused" in result.detail
    assert len(store.commits) == fenced_at[0] == 3  # nothing after the fence
    assert result.position == 10  # it stopped before the next record
    assert agent.lease is None


class HeldClient(SchedulerClient):
    """Renewals wait for ``go`` while ``held``: a slow network between agent and server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = threading.Event()
        self.go = threading.Event()

    def renew(self, *args: Any, **kwargs: Any) -> Any:
        if self.held.is_set():
            self.go.wait(10)
        return super().renew(*args, **kwargs)


def test_preemption_before_the_flush_is_reported_is_late_but_fenced(
    server: BackgroundServer, admin: SchedulerClient
) -> None:
    alice = HeldClient(server.url, WORKER_TOKENS["alice"])
    agent = WorkerAgent(alice, "job-w", ttl=5.0)
    lease = agent.acquire(timeout=10)
    alice.held.set()  # the renewal that reports the flush is still on its way

    def preempt_in_window(n: int) -> None:
        if n == 1:
            assert admin.get(lease.lease_id).reasons == []  # not reported yet
            assert admin.preempt(lease.lease_id, "now").outcome == "preempted"
            alice.go.set()
            assert agent.lost.wait(10)  # the report gets a 410: the lease is gone

    store = HookedStore(preempt_in_window)
    result = agent.run(build_pipeline("job-w", store), range(50), checkpoint_every=5)
    # The flush in the window committed under the preempted lease's token...
    assert store.commits[0][1].fencing_token == lease.fencing_token
    assert admin.get(lease.lease_id).state == "preempted"
    assert result.outcome is RunOutcome.LOST
    assert len(store.commits) == 1  # the flush already under way, and nothing after it
    # ...and the next holder, with a higher token, fences it out of the store.
    with SchedulerClient(str(alice.base_url), WORKER_TOKENS["bob"]) as bob:
        nxt = WorkerAgent(bob, "job-w", ttl=5.0)
        nxt.acquire(timeout=10)
        assert nxt.fencing_token > lease.fencing_token
        successor = build_pipeline("job-w", store)
        successor.fencing_token = nxt.fencing_token
        successor.resume()
        late = build_pipeline("job-w", store)
        late.fencing_token = lease.fencing_token
        from grafos_pipeline import StaleFencingToken

        with pytest.raises(StaleFencingToken):
            late.checkpoint()
        nxt.release()
    alice.close()


def test_agent_stops_at_a_safe_point_on_preemption_and_resumes(
    alice: SchedulerClient, admin: SchedulerClient
) -> None:
    agent = WorkerAgent(alice, "job-a", ttl=3.0, renew_interval=0.05)
    agent.acquire(timeout=10)
    lease_id = agent.lease_id
    records = range(200)
    outcomes: list[str] = []

    class PreemptMidFlush(MemoryCheckpointStore):
        """Preempt inside the 5th flush, once the server has heard of it."""

        def commit(self, checkpoint: Checkpoint) -> None:
            if checkpoint.sequence == 5:
                while admin.get(lease_id).reasons != ["checkpoint_in_progress"]:
                    time.sleep(0.005)
                outcomes.append(admin.preempt(lease_id, "make room").outcome)
                assert agent.preemption_requested.wait(10)  # the next renewal brings it
            super().commit(checkpoint)

    store = PreemptMidFlush()
    first = agent.run(build_pipeline("job-a", store), records, checkpoint_every=7)
    assert outcomes == ["deferred"]
    assert first.outcome is RunOutcome.PREEMPTED
    assert first.position == 35  # right after the deferred flush: a safe point
    assert admin.get(lease_id).state == "released"
    agent.acquire(timeout=10)
    assert agent.fencing_token > first.fencing_token
    second = agent.run(build_pipeline("job-a", store), records, checkpoint_every=7)
    assert second.outcome is RunOutcome.FINISHED
    latest = store.latest("job-a")
    assert latest is not None
    final = Sink()
    final.restore(latest.stage_states["sink"])
    assert final.rows == expected_output("job-a", 200)
