"""The `grafos-scheduler` console script that the wheel installs beside the interpreter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_the_console_script_is_installed_and_runs() -> None:
    # Next to this interpreter: in a venv that has the package (editable or the wheel),
    # never one found elsewhere on PATH.
    script = shutil.which("grafos-scheduler", path=str(Path(sys.executable).parent))
    assert script is not None, f"no grafos-scheduler script beside {sys.executable}"
    done = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: grafos-scheduler")
    assert "demo" in done.stdout
