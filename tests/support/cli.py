"""Running the grafos-scheduler command as a user would: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m grafos_scheduler ARGS`` in this interpreter, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "grafos_scheduler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_one_line_status_2(result: subprocess.CompletedProcess[str], needle: str) -> None:
    """A usage or configuration error: status 2 and one line naming ``needle``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grafos-scheduler: error:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
