"""The grafos-scheduler command: help, one-line errors with status 2, audit and leases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grafos_scheduler import Scheduler, SqliteStore
from support.cli import assert_one_line_status_2, run_cli
from support.internals import cli_main as main


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["demo"],
        ["audit"],
        ["audit", "verify"],
        ["leases"],
        ["leases", "list"],
        ["worker"],
    ],
)
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: grafos-scheduler" in out
    assert len(out.splitlines()) > 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required"),
        (["serve"], "--tokens"),
        (["serve", "--tokens", "t.toml", "--port", "70000"], "port"),
        (["serve", "--tokens", "t.toml", "--capacity", "0"], "capacity"),
        (["serve", "--tokens", "t.toml", "--max-defer", "nan"], "max-defer"),
        (["demo", "--size", "huge"], "size"),
        (["leases", "list", "--db", "x", "--state", "zombie"], "state"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_bad_config_is_one_line_and_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.toml"
    bad.write_text('admin = "short"\n')
    for args in (
        ["serve", "--tokens", str(bad), "--db", str(tmp_path / "s.db")],
        ["serve", "--tokens", str(tmp_path / "absent.toml")],
        ["audit", "verify", "--db", str(tmp_path / "absent.db")],
        ["leases", "list", "--url", "http://127.0.0.1:9"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("grafos-scheduler: error:"), lines


def test_audit_verify_and_leases_list_read_a_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Scheduler(2, SqliteStore(db)) as scheduler:
        scheduler.acquire("job-a", "alice", 0, 1, 60.0)
    verified = run_cli("audit", "verify", "--db", str(db))
    assert verified.returncode == 0
    assert "verifies" in verified.stdout
    listed = run_cli("leases", "list", "--db", str(db))
    assert listed.returncode == 0
    assert "job-a" in listed.stdout
    assert "alice" in listed.stdout
    # Tamper with the chain: verify must fail with status 1 and name the seq.
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET job = 'job-b' WHERE job = 'job-a'")
    broken = run_cli("audit", "verify", "--db", str(db))
    assert broken.returncode == 1
    assert "first bad seq" in broken.stdout


def test_serve_on_a_port_in_use_or_a_bad_host_is_one_line_status_2(tmp_path: Path) -> None:
    import socket

    from grafos_scheduler import TokenConfig

    tokens = tmp_path / "t.toml"
    TokenConfig.generate(["w"]).dump(tokens)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = run_cli(
            "serve", "--tokens", str(tokens), "--db", str(tmp_path / "a.db"), "--port", port
        )
    assert_one_line_status_2(result, f":{port}")
    assert not (tmp_path / "a.db").exists()  # nothing started before the bind
    result = run_cli("serve", "--tokens", str(tokens), "--host", "no-such-host.invalid")
    assert_one_line_status_2(result, "no-such-host.invalid")


def test_audit_and_leases_refuse_a_foreign_database_and_change_nothing(tmp_path: Path) -> None:
    import sqlite3

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE audit (x)")
        conn.execute("CREATE TABLE notes (y)")
    before = foreign.read_bytes()
    assert_one_line_status_2(
        run_cli("audit", "verify", "--db", str(foreign)), "not a grafos-scheduler store"
    )
    assert_one_line_status_2(
        run_cli("leases", "list", "--db", str(foreign)), "not a grafos-scheduler store"
    )
    assert foreign.read_bytes() == before
    with sqlite3.connect(foreign) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"audit", "notes"}


def test_audit_and_leases_read_a_real_store_read_only(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Scheduler(2, SqliteStore(db)) as scheduler:
        scheduler.start()
        scheduler.acquire("job-a", "w", 0, 1, 30.0)
    os.chmod(db, 0o444)
    try:
        result = run_cli("audit", "verify", "--db", str(db))
        assert result.returncode == 0, result.stderr
        result = run_cli("leases", "list", "--db", str(db))
        assert result.returncode == 0, result.stderr
        assert "job-a" in result.stdout
    finally:
        os.chmod(db, 0o644)


def test_audit_and_leases_default_to_the_database_serve_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Nothing there yet: one line naming the default file, status 2.
    assert main(["audit", "verify"]) == 2
    err = capsys.readouterr().err
    assert "grafos-scheduler.db" in err
    assert len(err.strip().splitlines()) == 1
    # A scheduler's store at that name is read without --db.
    with Scheduler(2, SqliteStore(tmp_path / "grafos-scheduler.db"), autostart=False) as s:
        s.acquire("job-at-default", "w", 0, 1, 60.0)
    assert main(["audit", "verify"]) == 0
    assert main(["leases", "list"]) == 0
    assert "job-at-default" in capsys.readouterr().out
