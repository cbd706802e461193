"""A demo that runs out of time fails, and says where each job stood."""

from __future__ import annotations

import io
from pathlib import Path

from grafos_scheduler._cli._demo._run import DemoConfig, WorkerSpec, run_demo


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
        log_dir="/nonexistent",
    )
    assert "secret-token-0123456789" not in repr(spec)
