"""Fixtures for the CLI tests: the command run as a user runs it, and a live service."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grafos_scheduler import BackgroundServer, Scheduler, SqliteStore, TokenConfig, create_app

ADMIN_TOKEN = "admin-token-for-cli-tests-01"
WORKER_TOKENS = {"alice": "alice-token-for-cli-tests-1"}


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m grafos_scheduler ARGS`` in a subprocess, without GRAFOS_* from outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRAFOS_")}
    return subprocess.run(
        [sys.executable, "-m", "grafos_scheduler", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, needle: str) -> str:
    """The one stderr line of a failed command, checked for its status and ``needle``."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grafos-scheduler: error:"), lines
    assert needle in lines[0], lines
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def no_grafos_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set GRAFOS_* themselves; the caller's environment must not leak in."""
    for key in list(os.environ):
        if key.startswith("GRAFOS_"):
            monkeypatch.delenv(key)


@pytest.fixture
def tokens() -> TokenConfig:
    return TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    with Scheduler(2, SqliteStore(tmp_path / "scheduler.db"), max_defer=30.0) as s:
        s.start()
        yield s


@pytest.fixture
def server(scheduler: Scheduler, tokens: TokenConfig) -> Iterator[BackgroundServer]:
    """The real app on a real port of 127.0.0.1."""
    with BackgroundServer(create_app(scheduler, tokens)) as running:
        yield running


@pytest.fixture
def admin_env(server: BackgroundServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """GRAFOS_URL and GRAFOS_TOKEN for the live server, set in this process too."""
    env = {"GRAFOS_URL": server.url, "GRAFOS_TOKEN": ADMIN_TOKEN}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
