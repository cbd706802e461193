"""The examples run, succeed and say what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_crash_resume_demo(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "crash_resume_demo.py"), "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in (
        f"Checkpoint directory: {directory}",
        "[ok] worker A died by SIGKILL",
        "[ok] the newest checkpoint on disk is the last acknowledged one (5)",
        "[ok] worker B fenced the store and resumed at position 500",
        "[ok] the totals equal those of an uninterrupted run",
        "[ok] the committed output (2000 records, read from the sink) equals an "
        "uninterrupted run's: none lost, none duplicated, in order",
        "[ok] the late commit was refused with StaleFencingToken",
        "[ok] it wrote nothing",
        "All checks passed",
    ):
        assert line in out, out
    assert "FAILED" not in out
    assert any(name.endswith(".ckpt") for name in (p.name for p in directory.iterdir()))


def test_crash_resume_demo_refuses_a_directory_already_in_use(tmp_path: Path) -> None:
    demo = [sys.executable, str(EXAMPLES / "crash_resume_demo.py"), "--dir", str(tmp_path)]
    subprocess.run(demo, capture_output=True, timeout=300, check=True)
    again = subprocess.run(demo, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 2
    assert "already holds checkpoints" in again.stdout
