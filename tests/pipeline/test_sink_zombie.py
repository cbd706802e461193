"""A frozen zombie, in another process, never commits output once a newer holder resumed.

The old holder (token 1) writes through a sink and is frozen with SIGSTOP at a phase of
its flush: halfway through the segment, after the pre-commit, after the checkpoint
commit, or at a random instant. A newer holder (token 2) resumes and commits more. Then
the old holder is let go with SIGCONT; whatever it tries, the committed output never
again holds a record of token 1 beyond the position the newer holder resumed from, and
it equals an uninterrupted run's output, with no duplicate.
"""

from __future__ import annotations

import importlib.util
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest

from grafos_pipeline import DirectoryCheckpointStore, DirectorySink, SqliteSink

PRODUCER = Path(__file__).parent / "sink_producer.py"
TIMEOUT = 60.0  # generous: a loaded machine may take long to start an interpreter

pytestmark = pytest.mark.slow


def load_producer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sink_producer", PRODUCER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


producer = load_producer()


class Holder:
    """A sink_producer.py process whose stdout a thread reads, so no read blocks forever."""

    def __init__(self, kind: str, tmp: Path, token: int, *args: str) -> None:
        sink = tmp / ("output" if kind == "directory" else "output.db")
        self.process = subprocess.Popen(
            [sys.executable, str(PRODUCER), kind, str(sink), str(tmp / "ckpt"), str(token), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, prefix: str) -> str:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"holder printed nothing for {TIMEOUT} s; so far: {self.seen}")
            assert line is not None, f"holder exited, expected {prefix!r}: {self.seen}"
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self) -> list[str]:
        """Close stdin, read to EOF, wait for exit 0; return every line printed."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self._reader.join(timeout=TIMEOUT)
        while (line := self.lines.get_nowait()) is not None:
            self.seen.append(line)
        assert self.process.wait(timeout=TIMEOUT) == 0, self.seen
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.seen


def committed(kind: str, tmp: Path) -> list[Any]:
    if kind == "directory":
        return DirectorySink(tmp / "output").read("produce")
    return SqliteSink(tmp / "output.db").read("produce")


def check(records: list[Any], resumed_at: int) -> None:
    """Exactly an uninterrupted run's output; from ``resumed_at`` on, only token 2's."""
    assert [[r[0], r[1], r[3]] for r in records] == producer.expected_outputs(len(records))
    late = [r[:3] for r in records if r[0] >= resumed_at and r[2] != 2]
    assert late == [], f"records of the old holder past position {resumed_at}"


def run_new_holder(kind: str, tmp: Path, commits: int) -> int:
    """Run the token-2 holder for ``commits`` checkpoints; return the position it resumed at."""
    new = Holder(kind, tmp, 2, "--limit", str(commits))
    lines = new.finish()
    resumed_at = int(lines[0].split()[2])
    assert [line.split()[0] for line in lines[1:]] == ["ack"] * commits, lines
    return resumed_at


@pytest.mark.parametrize("kind", ["directory", "sqlite"])
@pytest.mark.parametrize("phase", ["pre-committed", "committed", "mid-segment"])
def test_a_zombie_frozen_mid_flush_never_commits_after_the_new_holder_resumed(
    kind: str, phase: str, tmp_path: Path
) -> None:
    old = Holder(kind, tmp_path, 1, "--gate", f"{phase}:3", "--retries", "3")
    old.expect(f"gate {phase}")
    old.process.send_signal(signal.SIGSTOP)
    try:
        if phase == "mid-segment":
            # The old holder froze holding the sink's lock (or its write transaction):
            # the new holder's recovery waits for it, so let it go while it waits.
            new_result: list[int] = []
            new = threading.Thread(
                target=lambda: new_result.append(run_new_holder(kind, tmp_path, 3))
            )
            new.start()
            # Let go only once the new holder has fenced the store: its recovery of
            # the sink comes next, and waits for the old holder.
            store = DirectoryCheckpointStore(tmp_path / "ckpt")
            deadline = time.monotonic() + TIMEOUT
            while store.highest_token("produce") < 2:
                assert time.monotonic() < deadline, "the new holder never fenced the store"
                time.sleep(0.005)
            time.sleep(0.1)
            old.process.send_signal(signal.SIGCONT)
            old.send("go")
            new.join(TIMEOUT)
            assert not new.is_alive()
            [resumed_at] = new_result
            before = committed(kind, tmp_path)
        else:
            resumed_at = run_new_holder(kind, tmp_path, 3)
            before = committed(kind, tmp_path)
            old.process.send_signal(signal.SIGCONT)
            old.send("go")
    finally:
        old.process.send_signal(signal.SIGCONT)
    lines = old.finish()
    assert sum(line.startswith("stale") for line in lines) == 3, lines
    after = committed(kind, tmp_path)
    assert after == before, "the zombie changed the committed output"
    check(after, resumed_at)
    # Two flushes of the old holder committed, its third was in flight: the new holder
    # resumed from the second, or from the third if its checkpoint was committed.
    expected_resume = 3 if phase == "committed" else 2
    assert resumed_at == expected_resume * producer.BATCH
    assert len(after) == resumed_at + 3 * producer.BATCH


@pytest.mark.parametrize("kind", ["directory", "sqlite"])
@pytest.mark.parametrize("seed", range(3))
def test_a_zombie_frozen_at_a_random_instant_never_commits_after_the_new_holder_resumed(
    kind: str, seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    old = Holder(kind, tmp_path, 1, "--retries", "3")
    for _ in range(rng.randint(1, 4)):
        old.expect("ack")
    time.sleep(rng.uniform(0.0, 0.02))
    old.process.send_signal(signal.SIGSTOP)
    try:
        new_result: list[int] = []
        new = threading.Thread(target=lambda: new_result.append(run_new_holder(kind, tmp_path, 2)))
        new.start()
        # If the old holder froze holding a lock, the new one waits for it.
        new.join(rng.uniform(0.2, 0.6))
    finally:
        old.process.send_signal(signal.SIGCONT)
    new.join(TIMEOUT)
    assert not new.is_alive()
    [resumed_at] = new_result
    lines = old.finish()
    assert sum(line.startswith("stale") for line in lines) == 3, lines
    records = committed(kind, tmp_path)
    check(records, resumed_at)
    assert len(records) == resumed_at + 2 * producer.BATCH
