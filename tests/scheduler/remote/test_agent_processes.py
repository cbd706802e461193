"""WorkerAgent in real processes against a real server: flush-aware preemption, zombies."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grafos_pipeline import DirectoryCheckpointStore, Pipeline
from grafos_scheduler import BackgroundServer, Scheduler, SchedulerClient, TokenConfig
from support.stages import Sink

WORKER = Path(__file__).with_name("agent_worker.py")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def spawn(
    tmp_path: Path, server: BackgroundServer, tokens: TokenConfig
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(mode: str, job: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                mode,
                server.url,
                tokens.worker_tokens["alice"],
                job,
                str(tmp_path / "checkpoints"),
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait(10)


def test_preemption_arriving_mid_flush_waits_for_the_flush(
    spawn: Callable[..., subprocess.Popen[str]],
    admin: SchedulerClient,
    scheduler: Scheduler,
    tmp_path: Path,
) -> None:
    worker = spawn("gate", "job-gate")
    wait_for(lambda: (tmp_path / "in-flush").exists() or worker.poll() is not None, "the flush")
    assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
    lease = admin.leases("active")[0]
    # The agent reports its flush in a renewal it sends as the flush starts.
    wait_for(lambda: admin.get(lease.lease_id).reasons == ["checkpoint_in_progress"], "the report")
    decision = admin.preempt(lease.lease_id, "make room mid-flush")
    assert decision.outcome == "deferred"
    assert decision.reasons == ["checkpoint_in_progress"]
    # However long the flush takes (within max_defer = 30 s), the lease stays ACTIVE.
    time.sleep(0.5)
    still = admin.get(lease.lease_id)
    assert still.state == "active"
    assert still.pending_preemption is not None
    opened = time.time()
    (tmp_path / "gate").touch()
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["outcome"] == "preempted"
    assert result["position"] >= 5  # it stopped after the flush, at a safe point
    # The flush committed under the old lease, and only then did the lease end.
    checkpoint = DirectoryCheckpointStore(tmp_path / "checkpoints").latest("job-gate")
    assert checkpoint is not None
    assert checkpoint.position >= 5
    assert checkpoint.fencing_token == lease.fencing_token
    ended = admin.get(lease.lease_id)
    assert ended.state == "released"
    records = [r for r in admin.audit(limit=1000).records if r.lease_id == lease.lease_id]
    kinds = [r.kind for r in records]
    assert kinds.index("preemption_deferred") < len(kinds) - 1
    end = next(r for r in records if r.kind in ("preemption_executed", "release"))
    assert end.kind != "preemption_forced"
    # It ended after the gate opened (audit times are wall-clock, to the millisecond).
    assert dt.datetime.fromisoformat(end.time).timestamp() >= opened - 0.001


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_sigstopped_worker_loses_its_lease_and_its_late_commit_is_refused(
    spawn: Callable[..., subprocess.Popen[str]],
    alice: SchedulerClient,
    admin: SchedulerClient,
    tmp_path: Path,
) -> None:
    worker = spawn("zombie", "job-z")
    wait_for(lambda: (tmp_path / "stopping").exists() or worker.poll() is not None, "the stop")
    wait_for(lambda: _stopped(worker.pid) or worker.poll() is not None, "SIGSTOP")
    assert worker.poll() is None
    old = admin.leases()[0]
    # The paused worker cannot renew: its lease expires (ttl 1 s) and stays expired.
    wait_for(lambda: admin.get(old.lease_id).state == "expired", "expiry", timeout=30)
    # A new holder takes the job over: a higher token, and recovery fences the store.
    granted = alice.acquire("job-z", slots=1, ttl=30)
    assert granted.lease is not None
    new = granted.lease
    assert new.fencing_token > old.fencing_token
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    successor = Pipeline("job-z", [Sink()], store, fencing_token=new.fencing_token)
    resumed = successor.resume()
    assert resumed is not None
    assert resumed.fencing_token == old.fencing_token
    successor.process([100, 101])
    mine = successor.checkpoint()
    os.kill(worker.pid, signal.SIGCONT)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["late_commit"] == "refused"
    assert result["lost"] is True
    # Woken after its lease ran out, the agent knows it from its own deadline, or from
    # the 410 of a renewal that was in flight when it stopped.
    assert "renewal refused" in result["reason"] or "expired" in result["reason"]
    latest = store.latest("job-z")
    assert latest is not None
    assert (latest.sequence, latest.fencing_token) == (mine.sequence, new.fencing_token)


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")
