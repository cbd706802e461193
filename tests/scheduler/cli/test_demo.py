"""grafos-scheduler demo: the small run passes its own checks; a bad directory or a timeout
fails, saying why."""

from __future__ import annotations

import io
import os
from pathlib import Path

from support.cli import assert_one_line_status_2, run_cli
from support.internals import DemoConfig, WorkerSpec, run_demo


def test_a_timed_out_demo_fails_and_reports_each_unfinished_job(tmp_path: Path) -> None:
    out = io.StringIO()
    config = DemoConfig.for_size("small").with_overrides(
        directory=str(tmp_path / "demo"), timeout=1.5, out=out
    )
    assert run_demo(config) is False
    text = out.getvalue()
    assert "timed out after 1.5 s" in text
    # Each job unfinished at the timeout gets a status line and its log's tail; the
    # urgent job, preempting the others, cannot have finished by 1.5 s.
    stuck = [job for job in ("ingest-1", "ingest-2", "urgent") if f"{job}: still " in text]
    assert "urgent" in stuck, text
    for job in stuck:
        assert f"{job} log: " in text, text
    assert "FAIL: demo directory" in text


def test_worker_spec_repr_holds_no_token() -> None:
    spec = WorkerSpec(
        job="j",
        role="steady",
        url="http://127.0.0.1:1",
        token="secret-token-0123456789",
        priority=0,
        slots=1,
        records=1,
        checkpoint_every=1,
        record_delay=0.0,
        flush_delay=0.0,
        ttl=1.0,
        checkpoint_dir="/nonexistent",
        output_dir="/nonexistent",
        log_dir="/nonexistent",
    )
    assert "secret-token-0123456789" not in repr(spec)


def test_demo_small_passes_its_own_verification(tmp_path: Path) -> None:
    result = run_cli("demo", "--size", "small", "--dir", str(tmp_path / "demo"), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "PASS" in out
    assert "[FAIL]" not in out
    assert "equals the uninterrupted run" in out
    assert "audit chain verifies" in out
    assert (tmp_path / "demo" / "scheduler.db").exists()


def test_demo_dir_that_is_a_file_or_unwritable_is_one_line_status_2(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_status_2(run_cli("demo", "--dir", str(a_file)), "not a directory")
    assert_one_line_status_2(run_cli("demo", "--dir", str(a_file / "sub")), "cannot be created")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_one_line_status_2(run_cli("demo", "--dir", str(locked)), "not writable")
