"""A zombie holder, in another process, can never commit once a newer holder resumed.

The old holder checkpoints with token 1; the new holder, with token 2, calls
``Pipeline.resume()``, which fences the store and then reads. From then on every commit
attempt of the old holder is refused with ``StaleFencingToken``, it writes nothing, and
the newest checkpoint on disk is never again the old holder's.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from grafos_pipeline import DirectoryCheckpointStore

HOLDER = Path(__file__).parent / "zombie_holder.py"
PIPELINE = "zombie"
TIMEOUT = 60.0  # generous: a loaded machine may take long to start an interpreter

pytestmark = pytest.mark.slow


class Holder:
    """A zombie_holder.py process whose stdout a thread reads, so no read blocks forever."""

    def __init__(self, directory: Path, token: int, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HOLDER), str(directory), PIPELINE, str(token), *args],
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

    def next_line(self, timeout: float = TIMEOUT, *, required: bool = True) -> str | None:
        """The next line, None at EOF (or after ``timeout`` if not ``required``)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            if not required:
                return None
            self.process.kill()
            pytest.fail(f"holder printed nothing for {timeout} s; so far: {self.seen}")
        if line is not None:
            self.seen.append(line)
            assert not line.startswith("error"), self.seen
        return line

    def expect(self, prefix: str) -> str:
        line = self.next_line()
        assert line is not None, f"holder exited, expected {prefix!r}: {self.seen}"
        assert line.startswith(prefix), (prefix, self.seen)
        return line

    def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def finish(self) -> list[str]:
        """Close stdin, read to EOF, wait for exit 0; return every line printed."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        while self.next_line() is not None:
            pass
        self._reader.join(timeout=TIMEOUT)
        assert self.process.wait(timeout=TIMEOUT) == 0, self.seen
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.seen


def run_new_holder(directory: Path, commits: int) -> tuple[int, int, str, list[int]]:
    """Run the token-2 holder to completion: (resumed seq, position, state, committed)."""
    new = Holder(directory, 2, "once", str(commits))
    lines = new.finish()
    _, seq, position, state = lines[0].split()
    committed = [int(line.split()[1]) for line in lines[1:]]
    assert committed == list(range(int(seq) + 1, int(seq) + 1 + commits)), lines
    return int(seq), int(position), state, committed


def snapshot_dir(directory: Path) -> dict[str, bytes]:
    return {
        name: (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
        if name.endswith((".ckpt", ".fence"))
    }


def check_old_holder_after_fence(
    old: Holder, directory: Path, resumed: int, newest: int, refusals: int
) -> None:
    """Read ``refusals`` more refusals from the looping old holder, checking the disk."""
    store = DirectoryCheckpointStore(directory)
    refused = 0
    while refused < refusals:
        line = old.expect("")
        if line.startswith("stale"):
            refused += 1
            latest = store.latest(PIPELINE)
            assert latest is not None
            assert (latest.sequence, latest.fencing_token) == (newest, 2), old.seen
        else:
            # A commit that won the lock before the fence, reported late.
            assert line.startswith("ok"), old.seen
            assert int(line.split()[1]) <= resumed, old.seen


def check_old_holder_lines(lines: list[str], resumed: int) -> None:
    """ok* stale+ resume-stale: once refused, never accepted again; no ok past the fence."""
    first_stale = next(i for i, line in enumerate(lines) if line.startswith("stale"))
    accepted = [int(line.split()[1]) for line in lines[:first_stale]]
    assert all(line.startswith("ok") for line in lines[:first_stale]), lines
    assert accepted == list(range(1, len(accepted) + 1)), lines
    assert accepted[-1] <= resumed, lines
    assert all(line.startswith("stale") for line in lines[first_stale:-1]), lines
    assert lines[-1] == "resume-stale", lines


def check_disk(directory: Path, resumed: int, newest: int) -> None:
    store = DirectoryCheckpointStore(directory)
    latest = store.latest(PIPELINE)
    assert latest is not None
    assert (latest.sequence, latest.fencing_token) == (newest, 2)
    assert store.highest_token(PIPELINE) == 2
    for path in store.files(PIPELINE):
        sequence, token = (int(part) for part in path.name.split(".")[1:3])
        assert token == 2 or sequence <= resumed, path.name


def test_old_holder_is_refused_once_the_new_holder_resumed(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    store_dir = tmp_path / "store"
    old = Holder(store_dir, 1, "loop", str(stop))
    for _ in range(3):
        old.expect("ok")

    resumed, position, state, committed = run_new_holder(store_dir, 3)
    # The new holder restored the old holder's newest checkpoint, exactly.
    assert state == f"token=1,position={resumed}"
    assert position == resumed
    check_old_holder_after_fence(old, store_dir, resumed, committed[-1], refusals=10)

    stop.touch()
    check_old_holder_lines(old.finish(), resumed)
    check_disk(store_dir, resumed, committed[-1])


def test_stopped_old_holder_wakes_up_and_its_late_commit_is_refused(tmp_path: Path) -> None:
    old = Holder(tmp_path, 1, "gated")
    for sequence in (1, 2, 3):
        old.expect(f"flushing {sequence}")
        old.send("go")
        assert old.expect("ok") == f"ok {sequence}"
    # Now inside its fourth flush (in a stage's snapshot, before the commit): freeze it.
    old.expect("flushing 4")
    old.process.send_signal(signal.SIGSTOP)
    try:
        resumed, _, state, committed = run_new_holder(tmp_path, 2)
        assert (resumed, state, committed) == (3, "token=1,position=3", [4, 5])
        before = snapshot_dir(tmp_path)
    finally:
        old.process.send_signal(signal.SIGCONT)
    old.send("go")
    assert old.expect("stale") == "stale 4"
    assert snapshot_dir(tmp_path) == before, "the refused commit wrote something"
    # And again: every later attempt is refused too.
    old.expect("flushing 4")
    old.send("go")
    assert old.expect("stale") == "stale 4"
    assert snapshot_dir(tmp_path) == before
    old.finish()
    check_disk(tmp_path, resumed=3, newest=5)


@pytest.mark.parametrize("seed", range(5))
def test_old_holder_stopped_at_a_random_instant_is_refused(tmp_path: Path, seed: int) -> None:
    # SIGSTOP may land while the old holder holds the store's lock: the new holder then
    # waits for it, and the old commit, ordered before the fence, is legitimately kept.
    rng = random.Random(seed)
    stop = tmp_path / "stop"
    store_dir = tmp_path / "store"
    old = Holder(store_dir, 1, "loop", str(stop))
    for _ in range(rng.randint(1, 5)):
        old.expect("ok")
    old.process.send_signal(signal.SIGSTOP)
    try:
        new = Holder(store_dir, 2, "once", "2")
        # Let the new holder get as far as it can while the old one is frozen: it
        # resumes, unless the old one froze holding the lock.
        new.next_line(timeout=rng.uniform(0.0, 0.5), required=False)
    finally:
        old.process.send_signal(signal.SIGCONT)
    lines = new.finish()
    _, seq, _, _ = lines[0].split()
    resumed = int(seq)
    assert lines[1:] == [f"ok {resumed + 1}", f"ok {resumed + 2}"], lines
    check_old_holder_after_fence(old, store_dir, resumed, resumed + 2, refusals=5)
    stop.touch()
    check_old_holder_lines(old.finish(), resumed)
    check_disk(store_dir, resumed, resumed + 2)
