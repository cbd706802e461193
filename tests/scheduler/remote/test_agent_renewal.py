"""WorkerAgent regressions: local expiry, a renewer that cannot die or leak, preemption."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grafos_pipeline import Checkpoint, MemoryCheckpointStore, Pipeline
from grafos_scheduler._cli._demo._run import Mix, RunningSum, Sink
from grafos_scheduler._remote._agent import RunOutcome, WorkerAgent
from grafos_scheduler._remote._client import LeaseGone, SchedulerClient
from grafos_scheduler._service._app import BackgroundServer
from grafos_scheduler._service._auth import TokenConfig

from .conftest import WORKER_TOKENS


def _pipeline(name: str, store: object, mix_delay: float = 0.0) -> Pipeline:
    return Pipeline(name, [Mix(mix_delay), RunningSum(), Sink()], store)  # type: ignore[arg-type]


class HookedStore(MemoryCheckpointStore):
    """A memory store that calls ``hook(n)`` inside the n-th flush, before committing."""

    def __init__(self, hook: Any = None) -> None:
        super().__init__()
        self.hook = hook
        self.commits: list[tuple[float, Checkpoint]] = []
        self.flushes = 0

    def commit(self, checkpoint: Checkpoint) -> None:
        self.flushes += 1
        if self.hook is not None:
            self.hook(self.flushes)
        super().commit(checkpoint)
        self.commits.append((time.monotonic(), checkpoint))


# ------------------------------------------------------------ 4: a server that stops


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_process(tmp_path: Path, tokens: TokenConfig) -> Iterator[tuple[str, int]]:
    token_file = tmp_path / "tokens.toml"
    tokens.dump(token_file)
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grafos_scheduler",
            "serve",
            "--db",
            str(tmp_path / "s.db"),
            "--port",
            str(port),
            "--tokens",
            str(token_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < give_up, "the server did not start"
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait(10)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_agent_stops_committing_when_its_lease_runs_out_under_a_paused_server(
    server_process: tuple[str, int],
) -> None:
    url, pid = server_process
    with SchedulerClient(url, WORKER_TOKENS["alice"]) as client:  # default timeout 5 s
        agent = WorkerAgent(client, "paused-job", ttl=1.5)
        sent = time.monotonic()
        lease = agent.acquire(timeout=10)
        expiry = sent + lease.expires_in + 0.01  # at the latest, by the agent's reading
        store = HookedStore()
        os.kill(pid, signal.SIGSTOP)
        try:
            result = agent.run(
                _pipeline("paused-job", store, mix_delay=0.01), range(3000), checkpoint_every=10
            )
            stopped = time.monotonic()
        finally:
            os.kill(pid, signal.SIGCONT)
    assert result.outcome is RunOutcome.LOST
    assert "expired" in result.detail
    late = [round(t - expiry, 3) for t, _ in store.commits if t > expiry]
    assert late == [], f"checkpoints committed after the lease ran out: {late}"
    assert store.commits  # it did work while the lease was good
    assert stopped - expiry < 1.0  # it noticed at once, not after an HTTP timeout


# ------------------------------------------------------------ 5: the renewer survives


class FlakyClient(SchedulerClient):
    """Renewals fail with ``errors`` (in order) before behaving."""

    def __init__(self, *args: Any, errors: list[BaseException], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors = errors
        self.calls = 0

    def renew(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return super().renew(*args, **kwargs)


def test_renewer_survives_unexpected_errors_and_keeps_the_lease(
    server: BackgroundServer,
) -> None:
    import msgspec

    errors: list[BaseException] = [
        msgspec.ValidationError("bad answer"),
        ValueError("not json"),
        RuntimeError("boom"),
    ]
    client = FlakyClient(server.url, WORKER_TOKENS["alice"], errors=errors)
    with client:
        agent = WorkerAgent(client, "job-flaky", ttl=3.0, renew_interval=0.05)
        agent.acquire(timeout=10)
        give_up = time.monotonic() + 10
        while agent.renewals < 2 and time.monotonic() < give_up:
            time.sleep(0.02)
        assert agent.renewals >= 2, "the renewer died"
        assert not agent.lost.is_set()
        assert client.calls >= 5
        agent.release()


def test_renewer_failing_every_time_marks_the_lease_lost_at_expiry(
    server: BackgroundServer,
) -> None:
    errors: list[BaseException] = [RuntimeError("boom")] * 1000
    client = FlakyClient(server.url, WORKER_TOKENS["alice"], errors=errors)
    with client:
        agent = WorkerAgent(client, "job-doomed", ttl=0.6, renew_interval=0.05)
        agent.acquire(timeout=10)
        assert agent.lost.wait(5), "the renewer died without marking the lease lost"
        assert "boom" in agent.lost_reason
        agent.abandon()


# ------------------------------------------------------------ 6: no orphan crosstalk


class BlockingClient(SchedulerClient):
    """The first lease's renewals block until ``gate`` opens, then get a 410."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.blocked = threading.Event()
        self.first: str | None = None

    def renew(self, lease_id: Any, *args: Any, **kwargs: Any) -> Any:
        if lease_id == self.first:
            self.blocked.set()
            self.gate.wait(30)  # longer than any join: the thread is truly left behind
            raise LeaseGone(410, "lease_expired", "gone")
        return super().renew(lease_id, *args, **kwargs)


def test_an_orphaned_renewer_cannot_mark_the_next_lease_lost(server: BackgroundServer) -> None:
    client = BlockingClient(server.url, WORKER_TOKENS["alice"])
    with client:
        agent = WorkerAgent(client, "job-o", ttl=3.0, renew_interval=0.05)
        agent.stop_timeout = 0.1
        client.first = agent.acquire(timeout=10).lease_id
        assert client.blocked.wait(5)
        agent.release()  # the renew thread is stuck in its call: it is left behind
        agent.acquire(timeout=10)
        client.gate.set()  # the orphan's call now fails with 410
        time.sleep(0.3)
        assert not agent.lost.is_set(), agent.lost_reason
        assert not agent.should_stop
        agent.release()


# ------------------------------------------------------------ 23: min gap


def test_flush_wakeups_do_not_renew_more_often_than_min_gap(server: BackgroundServer) -> None:
    with SchedulerClient(server.url, WORKER_TOKENS["alice"]) as client:
        agent = WorkerAgent(client, "job-gap", ttl=30.0, min_gap=0.1)
        agent.acquire(timeout=10)
        before = agent.renewals
        start = time.monotonic()
        while time.monotonic() - start < 0.5:
            agent.on_flush_start(agent.lease_id)
            agent.on_flush_complete(agent.lease_id)
            time.sleep(0.002)
        time.sleep(0.15)
        elapsed = time.monotonic() - start
        made = agent.renewals - before
        agent.release()
    assert 1 <= made <= elapsed / 0.1 + 1, made


# ------------------------------------------------------------ 7: cooperative preemption


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
    result = agent.run(_pipeline("job-coop", store), range(100), checkpoint_every=7)
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


# ------------------------------------------------------------ 8: run() after a 410


def test_run_stops_without_committing_again_after_a_410(
    alice: SchedulerClient, admin: SchedulerClient
) -> None:
    agent = WorkerAgent(alice, "job-410", ttl=5.0, renew_interval=0.05)
    lease = agent.acquire(timeout=10)
    fenced_at: list[int] = []

    def fence_once(position: int) -> None:
        if position == 10 and not fenced_at:
            admin.fence(lease.lease_id)
            fenced_at.append(len(store.commits))
            assert agent.lost.wait(10)  # the next renewal gets the 410

    store = HookedStore()
    result = agent.run(
        _pipeline("job-410", store), range(100), checkpoint_every=3, on_progress=fence_once
    )
    assert result.outcome is RunOutcome.LOST
    assert "renewal refused" in result.detail
    assert len(store.commits) == fenced_at[0] == 3  # nothing after the fence
    assert result.position == 10  # it stopped before the next record
    assert agent.lease is None


# ------------------------------------------------------------ 9: the inherent window


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
    result = agent.run(_pipeline("job-w", store), range(50), checkpoint_every=5)
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
        successor = _pipeline("job-w", store)
        successor.fencing_token = nxt.fencing_token
        successor.resume()
        late = _pipeline("job-w", store)
        late.fencing_token = lease.fencing_token
        from grafos_pipeline import StaleFencingToken

        with pytest.raises(StaleFencingToken):
            late.checkpoint()
        nxt.release()
    alice.close()
