"""The agent's watch: a preemption request or an end reaches it within a round trip.

Renewals here are 10 s apart (ttl 30 s), so anything the agent learns within a second
came through ``GET /v1/watch``, not through a renewal.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from grafos_pipeline import DirectoryCheckpointStore
from grafos_scheduler import (
    BackgroundServer,
    RunOutcome,
    RunResult,
    SchedulerClient,
    TokenConfig,
    WorkerAgent,
)
from support.stages import build_pipeline, expected_output
from support.watch import server_has_watch
from support.workers import wait_for

TTL = 30.0  # renewals every 10 s


@pytest.fixture(autouse=True)
def _needs_watch(server: BackgroundServer, tokens: TokenConfig) -> None:
    if not server_has_watch(server.url, tokens.admin_token):
        pytest.skip("needs the server side of issue 10 (GET /v1/watch)")


def run_in_thread(
    agent: WorkerAgent, pipeline: Any, records: int, every: int = 10_000
) -> tuple[threading.Thread, list[RunResult]]:
    """Run in a thread; no checkpoint (so no flush-time renewal) before the stop."""
    results: list[RunResult] = []

    def run() -> None:
        results.append(agent.run(pipeline, range(records), checkpoint_every=every))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def test_a_preemption_request_reaches_the_agent_through_the_watch_at_once(
    alice: SchedulerClient, admin: SchedulerClient, tmp_path: Path
) -> None:
    latencies = []
    store = DirectoryCheckpointStore(tmp_path / "cp")
    with WorkerAgent(alice, "job-w", ttl=TTL, grace=20.0) as agent:
        for _ in range(5):
            lease = agent.acquire(timeout=10)
            pipeline = build_pipeline("job-w", store, record_delay=0.01)
            thread, results = run_in_thread(agent, pipeline, 100_000)
            assert agent.watch.wait_ready(5)
            wait_for(lambda p=pipeline: p.position > 0, "the run")  # type: ignore[misc]
            asked = time.monotonic()
            admin.preempt(lease.lease_id, "make room")
            assert agent.preemption_requested.wait(5)
            latencies.append(agent.preemption_heard_at - asked)  # type: ignore[operator]
            assert agent.preemption_heard_by == "watch"
            thread.join(10)
            (result,) = results
            assert result.outcome is RunOutcome.PREEMPTED
            assert result.work_lost_records == 0  # a final checkpoint within the grace
            assert admin.get(lease.lease_id).work_lost_records == 0
    assert max(latencies) < 1.0, latencies  # far inside one renewal interval (10 s)
    median = statistics.median(latencies) * 1000
    print(f"watch latency: median {median:.1f} ms, max {max(latencies) * 1000:.1f} ms")


def test_a_lease_ended_on_the_server_stops_the_run_at_once(
    alice: SchedulerClient, admin: SchedulerClient, tmp_path: Path
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "cp")
    with WorkerAgent(alice, "job-f", ttl=TTL) as agent:
        lease = agent.acquire(timeout=10)
        pipeline = build_pipeline("job-f", store, record_delay=0.01)
        thread, results = run_in_thread(agent, pipeline, 100_000)
        wait_for(lambda: pipeline.position > 0, "the run")
        fenced = time.monotonic()
        admin.fence(lease.lease_id)
        assert agent.lost.wait(5)
        assert time.monotonic() - fenced < 1.0
        thread.join(10)
    (result,) = results
    assert result.outcome is RunOutcome.LOST
    assert "ended on the server: an operator fenced it" in result.detail


def test_work_lost_without_a_final_checkpoint_is_counted_exactly(
    alice: SchedulerClient, admin: SchedulerClient, tmp_path: Path
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "cp")
    with WorkerAgent(alice, "job-l", ttl=TTL, grace=20.0) as agent:
        lease = agent.acquire(timeout=10)
        pipeline = build_pipeline("job-l", store, record_delay=0.01)
        results: list[RunResult] = []

        def run() -> None:
            results.append(
                agent.run(pipeline, range(100_000), checkpoint_every=25, final_checkpoint=False)
            )

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: pipeline.position > 30, "a checkpoint and some work after it")
        admin.preempt(lease.lease_id, "make room")
        thread.join(10)
    (result,) = results
    assert result.outcome is RunOutcome.PREEMPTED
    assert result.work_lost_records == result.position % 25
    checkpoint = store.latest("job-l")
    assert checkpoint is not None
    assert result.work_lost_records == result.position - checkpoint.position
    ended = admin.get(lease.lease_id)
    assert ended.work_lost_records == result.work_lost_records
    assert ended.work_lost_seconds == pytest.approx(result.work_lost_seconds, abs=1e-6)
    if result.work_lost_records:
        # ~10 ms a record: the seconds are those records' time, not the time since.
        assert 0.005 * result.work_lost_records < result.work_lost_seconds < 1.0
    # The next holder redoes exactly those records: the output is still exact.
    total = checkpoint.position + 50
    with WorkerAgent(alice, "job-l", ttl=TTL) as agent:
        agent.acquire(timeout=10)
        again = build_pipeline("job-l", store)
        assert agent.run(again, range(total), checkpoint_every=25).outcome is RunOutcome.FINISHED
    assert again.stages[-1].rows == expected_output("job-l", total)  # type: ignore[attr-defined]
