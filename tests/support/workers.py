"""Starting real ``grafos-scheduler worker`` processes against a test server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]  # the folder that holds `support`
SUMMARY = re.compile(
    r"job '(?P<job>[^']+)' (?P<how>.+) at position (?P<position>\d+): (?P<leases>\d+) leases?, "
    r"(?P<preemptions>\d+) preemptions?, (?P<lost>\d+) lost leases?, (?P<checkpoints>\d+) "
    r"checkpoints?, work lost (?P<records>\d+) records? (?P<seconds>[0-9.]+) s"
)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def summary(stdout: str) -> dict[str, str]:
    """The worker's one-line summary, parsed."""
    found = SUMMARY.search(stdout)
    assert found is not None, stdout
    return found.groupdict()


class Workers:
    """Starts worker processes for one server and one checkpoint directory."""

    def __init__(self, url: str, token: str, tmp_path: Path) -> None:
        self.url = url
        self.token_file = tmp_path / "worker.token"
        self.token_file.write_text(token + "\n")
        self.checkpoint_dir = tmp_path / "checkpoints"
        self.started: list[subprocess.Popen[str]] = []

    def command(self, job: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "grafos_scheduler",
            "worker",
            "--url",
            self.url,
            "--token-file",
            str(self.token_file),
            "--job",
            job,
            "--pipeline",
            "support.worker_pipeline:build",
            "--checkpoint-dir",
            str(self.checkpoint_dir),
            *extra,
        ]

    def start(
        self, job: str, *extra: str, records: int = 200, delay: float = 0.01
    ) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "GRAFOS_TEST_RECORDS": str(records),
            "GRAFOS_TEST_RECORD_DELAY": str(delay),
        }
        env.pop("GRAFOS_TOKEN", None)
        process = subprocess.Popen(
            self.command(job, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def workers_for() -> Iterator[Callable[[str, str, Path], Workers]]:
    made: list[Workers] = []

    def make(url: str, token: str, tmp_path: Path) -> Workers:
        made.append(Workers(url, token, tmp_path))
        return made[-1]

    yield make
    for workers in made:
        workers.stop_all()
