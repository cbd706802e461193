"""The operator's commands added with the server's holds and ticket reasons: leases
hold|unhold, tickets list, leases list --db on a lapsed lease, and the SIGHUP audit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from grafos_scheduler import Lease, Scheduler, SqliteStore, Ticket, TokenConfig
from support.internals import cli_main as main

from .conftest import ADMIN_TOKEN, one_line_error, run_cli


def _lease(scheduler: Scheduler, job: str = "job-a", slots: int = 1, priority: int = 0) -> Lease:
    lease = scheduler.acquire(job, "alice", priority, slots, 60.0)
    assert isinstance(lease, Lease)
    return lease


@pytest.mark.usefixtures("admin_env")
def test_leases_hold_and_unhold(scheduler: Scheduler, capsys: pytest.CaptureFixture[str]) -> None:
    lid = f"{_lease(scheduler).lease_id:032x}"
    assert (
        main(["leases", "hold", lid, "--reason", "disk swap", "--expires-in", "90", "--json"]) == 0
    )
    hold = json.loads(capsys.readouterr().out)["hold"]
    assert hold["reason"] == "disk swap"
    assert 89 < hold["expires_in"] <= 90
    assert main(["leases", "show", lid]) == 0
    assert "disk swap" in capsys.readouterr().out
    assert main(["leases", "unhold", lid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hold"] is None
    assert main(["leases", "unhold", lid]) == 1  # no hold left: refused, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no_hold" in err[0]
    kinds = [r.kind for r in scheduler.audit.records(limit=100)]
    assert kinds[-2:] == ["hold_set", "hold_cleared"]


def test_hold_needs_a_reason_and_good_seconds(admin_env: dict[str, str]) -> None:
    lid = "ab" * 16
    one_line_error(run_cli("leases", "hold", lid, env=admin_env), 2, "--reason")
    one_line_error(
        run_cli("leases", "hold", lid, "--reason", "x", "--expires-in", "soon", env=admin_env),
        2,
        "'soon'",
    )


@pytest.mark.usefixtures("admin_env")
def test_tickets_list_says_why_each_waits(
    scheduler: Scheduler, capsys: pytest.CaptureFixture[str]
) -> None:
    _lease(scheduler, "top", slots=1, priority=9)
    _lease(scheduler, "mid", slots=1, priority=7)
    wide = scheduler.acquire("wide", "alice", 5, 2, 60.0)
    assert isinstance(wide, Ticket)
    assert main(["tickets", "list"]) == 0
    table = capsys.readouterr().out
    assert "insufficient_victims" in table
    assert f"{wide.ticket_id:032x}" in table
    assert "waits for leases to end" in table
    assert main(["tickets", "list", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["wait"]["reason"] == "insufficient_victims"
    assert row["wait"]["shortfall"] == 2


def test_leases_list_db_shows_a_lapsed_lease_as_expired(tmp_path: Path) -> None:
    # The bug: `leases list --db` showed a lease whose expiry had passed as active.
    db = tmp_path / "s.db"
    # The system clock (walls the CLI compares with), and no executor to commit expiries.
    with Scheduler(2, SqliteStore(db), autostart=False) as scheduler:
        lapsed = scheduler.acquire("short", "alice", 0, 1, 0.5)
        kept = scheduler.acquire("long", "alice", 0, 1, 3600.0)
        assert isinstance(lapsed, Lease)
        assert isinstance(kept, Lease)
    time.sleep(0.6)  # past the first one's expiry by the wall clock; nothing committed it
    result = run_cli("leases", "list", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["job"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["short"]["state"] == "expired"
    assert rows["short"]["end_cause"] == "expired: not renewed within its ttl of 0.5 s"
    assert rows["long"]["state"] == "active"
    only = run_cli("leases", "list", "--db", str(db), "--state", "active", "--json")
    assert [json.loads(line)["job"] for line in only.stdout.splitlines()] == ["long"]
    expired = run_cli("leases", "list", "--db", str(db), "--state", "expired", "--json")
    assert [json.loads(line)["job"] for line in expired.stdout.splitlines()] == ["short"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _audit(url: str, token: str) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{url}/v1/audit?limit=1000", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    records: list[dict[str, object]] = answer.json()["records"]
    return records


def _wait_for_kind(url: str, token: str, kind: str, count: int) -> list[dict[str, object]]:
    give_up = time.monotonic() + 20
    while True:
        found = [r for r in _audit(url, token) if r["kind"] == kind]
        if len(found) >= count:
            return found
        assert time.monotonic() < give_up, kind
        time.sleep(0.05)


def test_sighup_reload_is_audited(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    TokenConfig(ADMIN_TOKEN, {"alice": "alice-token-for-cli-tests-1"}).dump(tokens)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFOS_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grafos_scheduler",
            "serve",
            "--tokens",
            str(tokens),
            "--db",
            str(tmp_path / "s.db"),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < give_up
            assert process.poll() is None
            time.sleep(0.05)
        TokenConfig(ADMIN_TOKEN, {"bob": "bob-token-for-cli-tests-12"}).dump(tokens)
        process.send_signal(signal.SIGHUP)
        [reloaded] = _wait_for_kind(url, ADMIN_TOKEN, "tokens_reloaded", 1)
        assert reloaded["data"] == {"source": str(tokens), "admin": True, "workers": ["bob"]}
        tokens.write_text('admin = "short"\n')
        process.send_signal(signal.SIGHUP)
        [failed] = _wait_for_kind(url, ADMIN_TOKEN, "tokens_reload_failed", 1)
        data = failed["data"]
        assert isinstance(data, dict)
        assert data["source"] == str(tokens)
        assert "short" not in json.dumps(data)
        verified = httpx.get(
            f"{url}/v1/audit/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()
        assert verified["ok"] is True
    finally:
        process.terminate()
        process.wait(timeout=20)
