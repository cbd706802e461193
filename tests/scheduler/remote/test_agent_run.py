"""The API over a real uvicorn on 127.0.0.1 (a random free port), through SchedulerClient."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from grafos_pipeline import Checkpoint, DirectoryCheckpointStore, MemoryCheckpointStore, Pipeline
from grafos_scheduler import Scheduler
from grafos_scheduler._cli._demo._run import Mix, RunningSum, Sink, expected_output
from grafos_scheduler._remote._agent import RunOutcome, WorkerAgent
from grafos_scheduler._remote._client import (
    AuthenticationFailed,
    LeaseGone,
    NotFound,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    ServiceUnavailable,
    TokenConflict,
)
from grafos_scheduler._service._app import BackgroundServer


def test_server_binds_loopback_and_serves(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_client_round_trip(alice: SchedulerClient, admin: SchedulerClient) -> None:
    granted = alice.acquire("job-a", slots=1, ttl=30)
    assert granted.status == "granted"
    assert granted.lease is not None
    lease = granted.lease
    renewed = alice.renew(lease.lease_id, lease.fencing_token, ["checkpoint_in_progress"])
    assert renewed.preemption_requested is False
    assert alice.get(lease.lease_id).reasons == ["checkpoint_in_progress"]
    decision = admin.preempt(lease.lease_id, "test")
    assert decision.outcome == "deferred"
    with pytest.raises(TokenConflict):
        alice.renew(lease.lease_id, lease.fencing_token + 1)
    still_flushing = ["checkpoint_in_progress"]
    assert alice.renew(lease.lease_id, lease.fencing_token, still_flushing).preemption_requested
    admin.fence(lease.lease_id)
    with pytest.raises(LeaseGone) as gone:
        alice.renew(lease.lease_id, lease.fencing_token)
    assert gone.value.status == 410
    assert admin.audit_verify().ok
    assert admin.audit_head().seq == admin.audit(limit=1000).records[-1].seq
    assert [x.state for x in admin.leases("fenced")] == ["fenced"]
    assert "grafos_leases" in admin.metrics()


def test_client_errors_carry_status_and_field(
    server: BackgroundServer, alice: SchedulerClient
) -> None:
    with pytest.raises(RequestRejected) as bad:
        alice.acquire("job-a", slots=0, ttl=1)
    assert bad.value.field == "slots"
    with pytest.raises(NotFound):
        alice.get("0" * 32)
    with pytest.raises(PermissionDenied):
        alice.audit_verify()
    stranger = SchedulerClient(server.url, "not-a-real-token-0000")
    with stranger, pytest.raises(AuthenticationFailed):
        stranger.leases()
    with SchedulerClient("http://127.0.0.1:9", "x" * 20, timeout=0.5) as nowhere:
        with pytest.raises(ServiceUnavailable):
            nowhere.leases()
        assert nowhere.healthz() is False


def _pipeline(name: str, store: object, flush_delay: float = 0.0) -> Pipeline:
    return Pipeline(name, [Mix(), RunningSum(), Sink(flush_delay)], store)  # type: ignore[arg-type]


def test_agent_runs_a_pipeline_to_the_end(alice: SchedulerClient, tmp_path: Path) -> None:
    agent = WorkerAgent(alice, "job-a", ttl=3.0)
    agent.acquire(timeout=10)
    store = DirectoryCheckpointStore(tmp_path)
    result = agent.run(_pipeline("job-a", store), range(50), checkpoint_every=10)
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
    first = agent.run(_pipeline("job-a", store), records, checkpoint_every=7)
    assert outcomes == ["deferred"]
    assert first.outcome is RunOutcome.PREEMPTED
    assert first.position == 35  # right after the deferred flush: a safe point
    assert admin.get(lease_id).state == "released"
    agent.acquire(timeout=10)
    assert agent.fencing_token > first.fencing_token
    second = agent.run(_pipeline("job-a", store), records, checkpoint_every=7)
    assert second.outcome is RunOutcome.FINISHED
    latest = store.latest("job-a")
    assert latest is not None
    final = Sink()
    final.restore(latest.stage_states["sink"])
    assert final.rows == expected_output("job-a", 200)
