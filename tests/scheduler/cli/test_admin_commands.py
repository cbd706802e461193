"""The admin commands over a live service: GRAFOS_URL and GRAFOS_TOKEN, flags that win,
tables and --json, one-line errors with status 2 (bad arguments) or 1 (refused)."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from grafos_scheduler import (
    BackgroundServer,
    Lease,
    Scheduler,
    SchedulerClient,
    SqliteStore,
    Ticket,
    TokenConfig,
)
from support.internals import cli_main as main

from .conftest import ADMIN_TOKEN, one_line_error, run_cli


def _lease(scheduler: Scheduler, job: str = "job-a", slots: int = 1) -> Lease:
    lease = scheduler.acquire(job, "alice", 0, slots, 60.0)
    assert isinstance(lease, Lease)
    return lease


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


@pytest.mark.usefixtures("admin_env")
def test_show_release_preempt_fence_with_the_environment(
    scheduler: Scheduler, capsys: pytest.CaptureFixture[str]
) -> None:
    lease = _lease(scheduler)
    lid = f"{lease.lease_id:032x}"
    assert main(["leases", "show", lid]) == 0
    shown = _out(capsys)
    assert "job-a" in shown
    assert "active" in shown
    assert "fencing_token" in shown
    assert main(["leases", "show", lid, "--json"]) == 0
    data = json.loads(_out(capsys))
    assert data["lease_id"] == lid
    assert data["state"] == "active"

    assert main(["leases", "release", lid, "--json"]) == 0
    assert json.loads(_out(capsys))["state"] == "released"
    # Releasing it again is an operation the service refuses: status 1, one line.
    assert main(["leases", "release", lid]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("grafos-scheduler: error: refused: 410")

    second = _lease(scheduler, "job-b")
    assert main(["leases", "preempt", f"{second.lease_id:032x}", "--cause", "drain"]) == 0
    preempted = _out(capsys)
    assert "preempted" in preempted
    assert "drain" in preempted

    third = _lease(scheduler, "job-c")
    assert main(["leases", "fence", f"{third.lease_id:032x}", "--json"]) == 0
    assert json.loads(_out(capsys))["state"] == "fenced"
    assert main(["leases", "show", "0" * 32]) == 1  # no such lease: 404
    assert "404" in capsys.readouterr().err


@pytest.mark.usefixtures("admin_env")
def test_tickets_cancel(scheduler: Scheduler, capsys: pytest.CaptureFixture[str]) -> None:
    _lease(scheduler, "big", slots=2)
    ticket = scheduler.acquire("waits", "alice", 0, 1, 60.0)
    assert isinstance(ticket, Ticket)
    tid = f"{ticket.ticket_id:032x}"
    assert main(["tickets", "cancel", tid, "--json"]) == 0
    assert json.loads(_out(capsys))["ticket_id"] == tid
    assert main(["tickets", "cancel", tid]) == 1  # gone already
    assert "404" in capsys.readouterr().err


@pytest.mark.usefixtures("admin_env")
def test_audit_show_and_verify_over_the_url(
    scheduler: Scheduler, capsys: pytest.CaptureFixture[str]
) -> None:
    _lease(scheduler)
    assert main(["audit", "show"]) == 0
    table = _out(capsys)
    assert table.splitlines()[0].split() == ["seq", "time", "kind", "lease_id", "job", "data"]
    assert "grant" in table
    assert "job-a" in table
    assert main(["audit", "show", "--json", "--limit", "1"]) == 0
    lines = _out(capsys).splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["seq"] == 1
    seq, digest = scheduler.audit.head()
    assert main(["audit", "verify", "--head", f"{seq}:{digest}"]) == 0
    assert "holds the exported head" in _out(capsys)
    assert main(["audit", "verify", "--head", f"{seq + 5}:{digest}"]) == 1
    assert "tail was cut" in _out(capsys)


def test_audit_verify_head_catches_a_cut_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    with Scheduler(2, SqliteStore(db), autostart=False) as s:
        for job in ("a", "b", "c"):
            s.acquire(job, "w", 0, 1, 60.0)
        seq, digest = s.audit.head()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit WHERE seq >= ?", (seq - 1,))
    # The cut chain verifies by itself...
    assert main(["audit", "verify", "--db", str(db)]) == 0
    capsys.readouterr()
    # ...but not against the head exported before the cut.
    assert main(["audit", "verify", "--db", str(db), "--head", f"{seq}:{digest}"]) == 1
    out = _out(capsys)
    assert "does NOT hold the exported head" in out
    assert "tail was cut" in out
    earlier = f"{seq - 2}:{'0' * 64}"
    assert main(["audit", "verify", "--db", str(db), "--head", earlier]) == 1
    assert "rewritten" in _out(capsys)


def test_flags_win_over_the_environment(
    server: BackgroundServer,
    scheduler: Scheduler,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _lease(scheduler)
    monkeypatch.setenv("GRAFOS_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("GRAFOS_TOKEN", "a-wrong-token-0123456789")
    tokens = tmp_path / "tokens.toml"
    TokenConfig(ADMIN_TOKEN, {}).dump(tokens)
    assert main(["leases", "list", "--url", server.url, "--tokens", str(tokens)]) == 0
    assert "job-a" in _out(capsys)
    # The environment alone: its URL is down, and the command says so in one line.
    assert main(["leases", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "grafos-scheduler: error: cannot reach the scheduler at http://127.0.0.1:9"
    )
    # The right URL with the wrong token from the environment: 401, status 2.
    assert main(["leases", "list", "--url", server.url]) == 2
    assert "refused the token (401)" in capsys.readouterr().err


def test_leases_list_with_the_server_down_says_it_cannot_reach_it() -> None:
    result = run_cli(
        "leases",
        "list",
        "--url",
        "http://127.0.0.1:9",
        env={"GRAFOS_TOKEN": "any-token-0123456789"},
    )
    line = one_line_error(result, 2, "cannot reach the scheduler at http://127.0.0.1:9: ")
    assert "unreachable" not in line
    assert " 0 " not in line
    assert "refused" in line.lower()  # the socket's own words: connection refused


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["leases", "show", "xyz"], "'xyz' is not a 32-character hex id"),
        (["leases", "preempt"], "LEASE_ID"),
        (["tickets", "cancel", "1234"], "hex id"),
        (["audit", "verify", "--head", "12"], "SEQ:HASH"),
        (["leases", "show", "a" * 32], "GRAFOS_URL"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(args: list[str], needle: str) -> None:
    one_line_error(run_cli(*args), 2, needle)


def test_no_arguments_print_usage_and_the_commands() -> None:
    result = run_cli()
    assert result.returncode == 2
    err = result.stderr
    assert err.startswith("usage: grafos-scheduler")
    for command in ("serve", "demo", "worker", "leases", "tickets", "audit", "tokens", "config"):
        assert f"\n  {command} " in err, err
    assert err.strip().splitlines()[-1].startswith("grafos-scheduler: error:")


def test_version() -> None:
    import importlib.metadata

    result = run_cli("--version")
    assert result.returncode == 0
    assert (
        result.stdout.strip()
        == f"grafos-scheduler {importlib.metadata.version('grafos-scheduler')}"
    )


def test_tokens_generate_writes_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    result = run_cli("tokens", "generate", str(path), "--worker", "ingest-1", "--worker", "w2")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = TokenConfig.load(path)
    assert tokens.workers == ["ingest-1", "w2"]
    assert tokens.admin_token not in result.stdout + result.stderr
    before = path.read_bytes()
    one_line_error(run_cli("tokens", "generate", str(path)), 2, "--force")
    assert path.read_bytes() == before
    path.chmod(0o644)
    assert run_cli("tokens", "generate", str(path), "--force").returncode == 0
    assert path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.toml"]  # no temporaries
    one_line_error(run_cli("tokens", "generate", str(tmp_path)), 2, "is a directory")
    one_line_error(
        run_cli("tokens", "generate", str(tmp_path / "t2.toml"), "--worker", "bad name"),
        2,
        "bad name",
    )


def test_a_generated_file_serves_the_admin(tmp_path: Path, scheduler: Scheduler) -> None:
    from grafos_scheduler import create_app

    path = tmp_path / "tokens.toml"
    assert run_cli("tokens", "generate", str(path)).returncode == 0
    loaded = TokenConfig.load(path)
    with (
        BackgroundServer(create_app(scheduler, loaded)) as server,
        SchedulerClient(server.url, loaded.admin_token) as client,
    ):
        assert client.leases() == []


@pytest.mark.parametrize(
    "command",
    [
        ["leases", "show"],
        ["leases", "release"],
        ["leases", "preempt"],
        ["leases", "fence"],
        ["tickets"],
        ["tickets", "cancel"],
        ["audit", "show"],
        ["tokens", "generate"],
        ["config", "show"],
    ],
)
def test_help_of_the_new_commands(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: grafos-scheduler {' '.join(command)}")
    assert len(out.splitlines()) > 3
