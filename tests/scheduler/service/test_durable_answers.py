"""The service over group commit and in-memory renewals, as a real process:

- an answer waits for its commit to become durable (the WAL fsync held back);
- SIGKILL under load loses no acknowledged grant or release;
- a restart after in-memory renewals expires no lease before restart time plus its TTL.
"""

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

import httpx
import pytest

from grafos_scheduler import LeaseState, SqliteStore

WORKER = "alice"
WORKER_TOKEN = "alice-token-for-durability-01"
ADMIN = "admin-token-for-durability-01"

# `grafos-scheduler serve`, with the store's WAL fsync made to wait while a gate file
# exists: the test holds the disk back and watches the answers.
SERVE = """
import os, sys, time
from grafos_scheduler._store._sqlite import SqliteStore
from grafos_scheduler._cli._main import main

gate = os.environ.get("GRAFOS_TEST_FSYNC_GATE")
if gate:
    real = SqliteStore._fsync_wal

    def held(self):
        while os.path.exists(gate):
            time.sleep(0.01)
        real(self)

    SqliteStore._fsync_wal = held
sys.exit(main(["serve", *sys.argv[1:]]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``serve`` process on a db file; restartable on the same file and port."""

    def __init__(self, tmp: Path, gate: Path | None = None) -> None:
        self.db = tmp / "scheduler.db"
        self.tokens = tmp / "tokens.toml"
        self.tokens.write_text(f'admin = "{ADMIN}"\n\n[workers]\n{WORKER} = "{WORKER_TOKEN}"\n')
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "server.log"
        self.env = dict(os.environ)
        if gate is not None:
            self.env["GRAFOS_TEST_FSYNC_GATE"] = str(gate)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until it answers; returns the monotonic time it did."""
        args = ["--db", str(self.db), "--port", str(self.port), "--tokens", str(self.tokens)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SERVE,
                    *args,
                    "--capacity",
                    "1000",
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"the server did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {WORKER_TOKEN}"}, timeout=10
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_an_answer_waits_until_its_commit_is_durable(tmp_path: Path) -> None:
    gate = tmp_path / "hold-fsync"
    server = Server(tmp_path, gate)
    try:
        server.start()
        with server.client() as client:
            first = client.post("/v1/leases", json={"job": "before", "slots": 1, "ttl": 30})
            assert first.status_code == 201
            gate.touch()  # from now on the WAL fsync waits
            answers: list[httpx.Response] = []
            thread = threading.Thread(
                target=lambda: answers.append(
                    client.post("/v1/leases", json={"job": "held", "slots": 1, "ttl": 30})
                ),
                daemon=True,
            )
            thread.start()
            thread.join(1.0)
            assert thread.is_alive(), "the grant was answered before its commit was durable"
            assert not answers
            gate.unlink()
            thread.join(10)
            assert answers[0].status_code == 201, answers[0].text
    finally:
        server.stop()


def test_sigkill_under_load_loses_no_acknowledged_grant_or_release(server: Server) -> None:
    server.start()
    granted: list[tuple[str, int]] = []
    released: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with server.client() as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    answer = client.post(
                        "/v1/leases", json={"job": f"load-{worker}-{n}", "slots": 1, "ttl": 60}
                    )
                    if answer.status_code != 201:
                        continue
                    lease = answer.json()["lease"]
                    granted.append((lease["lease_id"], lease["fencing_token"]))
                    if n % 2:
                        gone = client.post(f"/v1/leases/{lease['lease_id']}/release")
                        if gone.status_code == 200:
                            released.append(lease["lease_id"])
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.kill()  # mid-load: requests are in flight
    stop.set()
    for t in threads:
        t.join(15)
    assert len(granted) > 20, "the load did run"
    with SqliteStore(server.db, read_only=True) as store:
        for lease_id, token in granted:
            row = store.get_lease(int(lease_id, 16))
            assert row is not None, f"acknowledged grant {lease_id} was lost"
            assert row.fencing_token == token
        for lease_id in released:
            row = store.get_lease(int(lease_id, 16))
            assert row is not None
            assert row.state is LeaseState.RELEASED, f"acknowledged release {lease_id} was lost"


def test_a_restart_after_renewals_in_memory_expires_no_lease_early(server: Server) -> None:
    server.start()
    ttl = 6.0  # longer than a slow start of the server on a busy machine
    with server.client() as client:
        lease = client.post("/v1/leases", json={"job": "kept", "slots": 1, "ttl": ttl}).json()
        lease_id, token = lease["lease"]["lease_id"], lease["lease"]["fencing_token"]
        renew = {"fencing_token": token, "reasons": []}
        for _ in range(4):  # each renewal lives in memory only (checkpoints every 5 s)
            time.sleep(0.3)
            answer = client.post(f"/v1/leases/{lease_id}/renew", json=renew)
            assert answer.status_code == 200, answer.text
    server.kill()
    killed = time.monotonic()
    with SqliteStore(server.db, read_only=True) as store:
        row = store.get_lease(int(lease_id, 16))
        assert row is not None
        # The file holds the grant's expiry, older than the last renewal's.
        assert row.expires_wall < time.time() + ttl - 1.0
    server.start()
    with server.client() as client:
        after = client.get(f"/v1/leases/{lease_id}").json()
        assert after["state"] == "active"
        # A fresh TTL counted from the restart, which came after the kill: the lease
        # lives at least as long as the last "renewed" promised, and longer.
        assert time.monotonic() + after["expires_in"] >= killed + ttl - 0.05
        time.sleep(max(0.0, killed + ttl - 0.3 - time.monotonic()))
        assert client.get(f"/v1/leases/{lease_id}").json()["state"] == "active"
        # The holder that was told "renewed" renews again with its token.
        assert client.post(f"/v1/leases/{lease_id}/renew", json=renew).status_code == 200
        # Then it stops renewing, and the lease expires one TTL later.
        time.sleep(ttl + 1.0)
        assert client.get(f"/v1/leases/{lease_id}").json()["state"] == "expired"
