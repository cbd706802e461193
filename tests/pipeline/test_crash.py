"""SIGKILL a checkpoint writer at random instants: the acknowledged checkpoint survives.

After every kill, ``latest()`` returns a checkpoint that verifies, whose sequence is at
least the last one the writer acknowledged, and whose state is byte for byte what the
writer wrote for that sequence. Each restart fences with a higher token, so kills also
land inside ``fence()``; the highest token must survive them too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from grafos_pipeline import DirectoryCheckpointStore

WRITER = Path(__file__).parent / "crash_writer.py"
PIPELINE = "crashy"
KILLS = 200
# Generous: a loaded 2-core machine may take seconds to start an interpreter.
LINE_TIMEOUT = 60.0

# Must match crash_writer.py, which is self-contained on purpose.
SIZES = (1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024 - 1, 256 * 1024, 300 * 1024, 600 * 1024)


def expected_state(position: int) -> bytes:
    size = SIZES[position % len(SIZES)]
    seed = hashlib.sha256(f"grafos-crash-{position}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Writer:
    """One writer process, with its stdout read by a thread so that no read blocks."""

    def __init__(self, directory: Path, token: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WRITER), str(directory), PIPELINE, str(token)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str | None:
        try:
            return self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            self.kill()
            pytest.fail(f"the writer printed nothing for {LINE_TIMEOUT} s")

    def kill(self) -> list[str]:
        """SIGKILL the writer; return every line it printed that was not read yet."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=LINE_TIMEOUT)
        self._reader.join(timeout=LINE_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        rest: list[str] = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        return rest


def acked(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("ack ")]


@pytest.mark.slow
def test_sigkill_at_random_instants_never_loses_an_acknowledged_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    rng = random.Random(20240611)
    last_acked = 0
    fenced = 0
    kills_mid_commit_loop = 0
    for token in range(1, KILLS + 1):
        writer = Writer(tmp_path, token)
        seen: list[str] = []
        if rng.random() < 0.2:
            # Anywhere: during interpreter start, resume() and its fence, or commits.
            time.sleep(rng.uniform(0.0, 0.15))
        else:
            # After 1 to 3 acknowledged commits, a little later: mid-commit, mostly.
            wanted = rng.randint(1, 3)
            while len(acked(seen)) < wanted:
                line = writer.next_line()
                assert line is not None, f"the writer exited early: {seen}"
                seen.append(line)
            time.sleep(rng.uniform(0.0, 0.02))
            kills_mid_commit_loop += 1
        seen.extend(writer.kill())
        assert writer.process.returncode == -signal.SIGKILL, seen
        if f"fenced {token}" in seen:
            fenced = token
        last_acked = max([last_acked, *acked(seen)])

        store = DirectoryCheckpointStore(tmp_path)
        latest = store.latest(PIPELINE)
        if last_acked == 0:
            continue
        assert latest is not None, f"kill {token}: acknowledged {last_acked}, nothing stored"
        assert latest.sequence >= last_acked, (token, latest.sequence, last_acked)
        assert latest.position == latest.sequence
        assert dict(latest.stage_states) == {"blob": expected_state(latest.position)}
        assert store.highest_token(PIPELINE) >= fenced

    assert last_acked > KILLS // 2, "the writers made too little progress to mean much"
    assert kills_mid_commit_loop > KILLS // 2
    # A killed process leaves no torn file behind: nothing ever failed verification.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # Retention still holds after all that, and temp leftovers are at most one commit's.
    names = os.listdir(tmp_path)
    assert (
        len([n for n in names if n.endswith(".ckpt")]) <= 4
    )  # keep, plus one if killed between rename and retention
    assert len([n for n in names if n.endswith(".tmp")]) <= 1
