"""WorkerAgent renewals: the lease runs out locally too, and the renewer cannot die, leak or
renew too often."""

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

from grafos_scheduler import (
    BackgroundServer,
    LeaseGone,
    RunOutcome,
    SchedulerClient,
    TokenConfig,
    WorkerAgent,
)
from support.checkpoint_stores import HookedStore
from support.servers import WORKER_TOKENS
from support.stages import build_pipeline


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
        assert lease.expires_in is not None
        expiry = sent + lease.expires_in + 0.01  # at the latest, by the agent's reading
        store = HookedStore()
        os.kill(pid, signal.SIGSTOP)
        try:
            result = agent.run(
                build_pipeline("paused-job", store, record_delay=0.01),
                range(3000),
                checkpoint_every=10,
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
