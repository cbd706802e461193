"""WorkerAgent acquires (waiting, or giving up and leaving nothing behind) and runs a pipeline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from grafos_pipeline import DirectoryCheckpointStore
from grafos_scheduler import (
    BackgroundServer,
    LeaseState,
    RunOutcome,
    Scheduler,
    SchedulerClient,
    WorkerAgent,
)
from support.servers import WORKER_TOKENS
from support.stages import build_pipeline


def test_agent_runs_a_pipeline_to_the_end(alice: SchedulerClient, tmp_path: Path) -> None:
    agent = WorkerAgent(alice, "job-a", ttl=3.0)
    agent.acquire(timeout=10)
    store = DirectoryCheckpointStore(tmp_path)
    result = agent.run(build_pipeline("job-a", store), range(50), checkpoint_every=10)
    assert result.outcome is RunOutcome.FINISHED
    assert result.position == 50
    assert result.checkpoints == 5
    latest = store.latest("job-a")
    assert latest is not None
    assert latest.position == 50
    assert alice.get(result.lease_id).state == "released"


def test_agent_waits_while_pending(
    alice: SchedulerClient, admin: SchedulerClient, scheduler: Scheduler
) -> None:
    blocker = admin.acquire("blocker", slots=2, ttl=30).lease
    assert blocker is not None
    agent = WorkerAgent(alice, "job-a", ttl=3.0, poll_interval=0.02)
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(agent.acquire(timeout=20)))
    waiter.start()
    # The ticket is queued on the server before we free the slots.
    while not scheduler.tickets():
        waiter.join(0.01)
    admin.release(blocker.lease_id)
    waiter.join(20)
    assert len(got) == 1
    assert agent.lease is not None
    agent.release()


def test_agent_timeout_leaves_no_ticket_behind(
    server: BackgroundServer, alice: SchedulerClient, scheduler: Scheduler
) -> None:
    blocker = alice.acquire("big", slots=2, ttl=30).lease
    assert blocker is not None
    with SchedulerClient(server.url, WORKER_TOKENS["bob"]) as bob:
        agent = WorkerAgent(bob, "job-b", ttl=5.0, poll_interval=0.02)
        with pytest.raises(TimeoutError, match="still pending"):
            agent.acquire(timeout=0.2)
        assert scheduler.tickets() == []
        kinds = [r.kind for r in scheduler.audit.records(limit=1000)]
        assert kinds[-1] == "ticket_cancelled"
        # Freeing the slots grants nothing to the abandoned request ...
        alice.release(blocker.lease_id)
        assert scheduler.lease_counts()[LeaseState.ACTIVE] == 0
        assert [x.job for x in scheduler.leases()] == ["big"]
        # ... and a retry is not refused with 409: it gets the lease at once.
        lease = agent.acquire(timeout=5.0)
        assert lease.job == "job-b"
        agent.release()


def test_agent_releases_a_lease_granted_while_it_withdrew(
    server: BackgroundServer, alice: SchedulerClient, scheduler: Scheduler
) -> None:
    """The grant races the cancel: the cancel gets 409, the agent releases the lease."""
    blocker = alice.acquire("big", slots=2, ttl=30).lease
    assert blocker is not None
    blocker_id = blocker.lease_id

    class RacingClient(SchedulerClient):
        def cancel_ticket(self, ticket_id: int | str) -> Any:
            alice.release(blocker_id)  # the ticket is granted just before
            return super().cancel_ticket(ticket_id)

    with RacingClient(server.url, WORKER_TOKENS["bob"]) as bob:
        agent = WorkerAgent(bob, "job-b", ttl=5.0, poll_interval=0.05)
        # A poll interval longer than the timeout: no poll sees the grant.
        agent.poll_interval = 0.3
        with pytest.raises(TimeoutError):
            agent.acquire(timeout=0.1)
    assert scheduler.tickets() == []
    ours = [x for x in scheduler.leases() if x.job == "job-b"]
    assert [x.state for x in ours] == [LeaseState.RELEASED]
    assert scheduler.used_slots == 0
    assert agent.lease is None
    assert agent._renewer is None  # no renew thread was started for it
