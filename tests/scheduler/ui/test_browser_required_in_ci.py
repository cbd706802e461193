"""Under CI=true a missing browser fails the dashboard tests; elsewhere it skips them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BROWSER_TEST = (
    "tests/scheduler/ui/test_dashboard_browser.py::test_a_wrong_token_gives_a_clear_message"
)


def run_without_browser(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["GRAFOS_TEST_CHROMIUM"] = str(tmp_path / "no-chromium-here")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", BROWSER_TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("ci", "code", "said"), [("true", 1, "need a browser under CI"), (None, 0, "1 skipped")]
)
def test_a_missing_browser(tmp_path: Path, ci: str | None, code: int, said: str) -> None:
    result = run_without_browser(tmp_path, ci)
    assert result.returncode == code, result.stdout + result.stderr
    assert said in result.stdout
    assert "no-chromium-here is missing" in result.stdout
