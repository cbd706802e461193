"""Replicas as real ``grafos-scheduler serve`` processes on the session's PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.postgres import PostgresCluster, free_port

from .tcp_proxy import TcpProxy

ADMIN_TOKEN = "admin-token-for-replica-tests-01"
WORKERS = {f"w{i}": f"worker-{i}-token-for-replica-tests" for i in range(8)}


class ReplicaProcess:
    """One ``serve --store postgresql://...`` subprocess, its port and its log."""

    def __init__(
        self,
        name: str,
        store_url: str,
        tokens: Path,
        log_dir: Path,
        *,
        leader_ttl: float,
        capacity: int = 16,
        port: int | None = None,
        advertise_url: str | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}.log"
        self.argv = [
            sys.executable, "-m", "grafos_scheduler", "serve",
            "--store", store_url,
            "--tokens", str(tokens),
            "--port", str(self.port),
            "--capacity", str(capacity),
            "--leader-ttl", str(leader_ttl),
            "--log-level", "warning",
        ]  # fmt: skip
        if advertise_url is not None:
            self.argv += ["--advertise-url", advertise_url]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            response = httpx.get(self.url + "/healthz", timeout=timeout)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def wait_up(self, timeout: float = 30.0) -> None:
        give_up = time.monotonic() + timeout
        while self.health() is None:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > give_up:
                raise AssertionError(
                    f"{self.name} did not come up:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                assert self.proc is not None
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


ReplicaFactory = Callable[..., ReplicaProcess]


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    lines = [f'admin = "{ADMIN_TOKEN}"', "[workers]"]
    lines += [f'{name} = "{token}"' for name, token in WORKERS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def start_replica(postgres_url: str, tokens_file: Path, tmp_path: Path) -> Iterator[ReplicaFactory]:
    """Start replicas on one fresh database; every one is stopped at the end."""
    started: list[ReplicaProcess] = []

    def start(name: str, *, leader_ttl: float = 1.0, **kwargs: Any) -> ReplicaProcess:
        replica = ReplicaProcess(
            name, kwargs.pop("store_url", postgres_url), tokens_file, tmp_path,
            leader_ttl=leader_ttl, **kwargs,
        )  # fmt: skip
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


def leader_of(replicas: list[ReplicaProcess], timeout: float = 30.0) -> ReplicaProcess:
    """The one replica that says it leads, once exactly one does."""
    give_up = time.monotonic() + timeout
    while True:
        leaders = [r for r in replicas if r.alive() and (r.health() or {}).get("role") == "leader"]
        if len(leaders) == 1:
            return leaders[0]
        if time.monotonic() > give_up:
            states = {r.name: r.health() for r in replicas}
            raise AssertionError(f"no single leader: {json.dumps(states)}")
        time.sleep(0.05)


def wait_health(
    replica: ReplicaProcess, want: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """The replica's /healthz once ``want`` holds for it."""
    give_up = time.monotonic() + timeout
    while True:
        health = replica.health()
        if health is not None and want(health):
            return health
        if time.monotonic() > give_up:
            raise AssertionError(f"{replica.name}: /healthz never matched; last {health}")
        time.sleep(0.05)


@pytest.fixture
def proxy(postgres_cluster: PostgresCluster) -> Iterator[TcpProxy]:
    """A fault-injecting TCP proxy in front of the session's PostgreSQL."""
    p = TcpProxy(postgres_cluster.port)
    yield p
    p.close()


def through(proxy: TcpProxy, postgres_url: str, postgres_cluster: PostgresCluster) -> str:
    """``postgres_url`` by way of ``proxy``."""
    return postgres_url.replace(f":{postgres_cluster.port}/", f":{proxy.port}/")
