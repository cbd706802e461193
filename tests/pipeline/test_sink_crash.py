"""SIGKILL a producer writing through a sink, 200 times: its output is committed exactly once.

A producer process (sink_producer.py, forked by its server so that 200 starts take
seconds, not minutes) writes through a DirectorySink or an SqliteSink.
It is killed with SIGKILL at random instants, and at the phases where a two-phase sink
can go wrong: halfway through writing a segment, between the pre-commit and the
checkpoint, and between the checkpoint and the publication. After every kill the test
recovers in-process (a resume under a higher token) and the committed output must equal
an uninterrupted run's for the restored position, exactly: no record lost, none
duplicated, in order, and nothing acknowledged lost. At the end a last producer runs to
completion and the whole output must equal the uninterrupted run's.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from grafos_pipeline import DirectoryCheckpointStore, DirectorySink, Pipeline, SqliteSink

PRODUCER = Path(__file__).parent / "sink_producer.py"
KILLS = 200
PHASES = ("mid-segment", "pre-committed", "committed")
LINE_TIMEOUT = 60.0  # generous: a loaded 2-core machine may take seconds to start Python

pytestmark = pytest.mark.slow


def load_producer() -> ModuleType:
    # The producer's stage and expected output, from the file the subprocess runs.
    spec = importlib.util.spec_from_file_location("sink_producer", PRODUCER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


producer = load_producer()


class Zygote:
    """``sink_producer.py --serve``: forks producers, so that each start is cheap."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PRODUCER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: str) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().strip()
        assert reply, f"the producer server died answering {line!r}"
        return reply

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=LINE_TIMEOUT) == 0
        assert self.process.stdout is not None
        self.process.stdout.close()


class Producer:
    """One forked producer; its stdout goes to a file, which is polled for lines."""

    def __init__(self, zygote: Zygote, kind: str, tmp: Path, token: int, *args: str) -> None:
        self.zygote = zygote
        self.output = tmp / f"producer-{token}.out"
        command = " ".join(["run", str(self.output), kind, *paths(kind, tmp), str(token), *args])
        self.pid = int(zygote.ask(command).split()[1])
        self.seen: list[str] = []
        self._read = 0
        self.returncode: int | None = None

    def poll(self) -> None:
        try:
            data = self.output.read_text()
        except FileNotFoundError:
            return
        complete = data[: data.rfind("\n") + 1]
        self.seen.extend(complete[self._read :].splitlines())
        self._read = len(complete)

    def wait_for(self, prefix: str, count: int = 1) -> None:
        deadline = time.monotonic() + LINE_TIMEOUT
        while True:
            self.poll()
            if sum(line.startswith(prefix) for line in self.seen) >= count:
                return
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {prefix!r} from the producer in {LINE_TIMEOUT} s: {self.seen}")
            time.sleep(0.001)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.finish()

    def finish(self) -> int:
        self.returncode = int(self.zygote.ask(f"wait {self.pid}").split()[2])
        self.poll()
        return self.returncode


def paths(kind: str, tmp: Path) -> tuple[str, str]:
    sink = tmp / ("output" if kind == "directory" else "output.db")
    return str(sink), str(tmp / "checkpoints")


def open_sink(kind: str, tmp: Path) -> DirectorySink | SqliteSink:
    sink = paths(kind, tmp)[0]
    return DirectorySink(sink) if kind == "directory" else SqliteSink(sink)


def committed(kind: str, tmp: Path) -> list[Any]:
    return open_sink(kind, tmp).read("produce")


def check_output(records: list[Any], position: int) -> None:
    """Exactly the uninterrupted run's output for ``position`` inputs; tokens never fall."""
    assert [[r[0], r[1], r[3]] for r in records] == producer.expected_outputs(position)
    tokens = [r[2] for r in records]
    assert tokens == sorted(tokens)


def recover(kind: str, tmp: Path, token: int) -> int:
    """Resume as a new holder would, in this process; return the restored position."""
    pipeline = Pipeline(
        "produce",
        [producer.Numbering(token)],
        DirectoryCheckpointStore(paths(kind, tmp)[1]),
        sink=open_sink(kind, tmp),
        fencing_token=token,
    )
    pipeline.resume()
    return pipeline.position


@pytest.fixture
def zygote() -> Iterator[Zygote]:
    server = Zygote()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["directory", "sqlite"])
def test_sigkill_at_every_phase_never_loses_or_duplicates_output(
    kind: str, tmp_path: Path, zygote: Zygote
) -> None:
    rng = random.Random(f"grafos-sink-crash-{kind}")
    tokens = itertools.count(1)
    acked = 0  # the highest acknowledged position
    kills = dict.fromkeys(("random", *PHASES), 0)
    started = time.monotonic()
    for _ in range(KILLS):
        how = rng.choice(["random", "random", *PHASES])
        if how == "random":
            writer = Producer(zygote, kind, tmp_path, next(tokens))
            if rng.random() < 0.25:
                # Anywhere: interpreter start, resume() with its fence and recovery.
                time.sleep(rng.uniform(0.0, 0.1))
            else:
                writer.wait_for("ack", rng.randint(1, 2))
                time.sleep(rng.uniform(0.0, 0.01))
        else:
            writer = Producer(
                zygote, kind, tmp_path, next(tokens), "--stop", f"{how}:{rng.randint(1, 2)}"
            )
            writer.wait_for(f"paused {how}")
        writer.kill()
        assert writer.returncode == -signal.SIGKILL, writer.seen
        kills[how] += 1
        acks = [int(line.split()[2]) for line in writer.seen if line.startswith("ack")]
        acked = max([acked, *acks])

        position = recover(kind, tmp_path, next(tokens))
        assert position >= acked, f"acknowledged position {acked}, restored {position}"
        check_output(committed(kind, tmp_path), position)

    print(f"{KILLS} kills in {time.monotonic() - started:.1f} s: {kills}")
    assert acked > KILLS, "the producers made too little progress to mean much"
    assert min(kills.values()) >= KILLS // 10, kills
    total = position + 5 * producer.BATCH + 7  # a last, partial batch too
    last = Producer(zygote, kind, tmp_path, next(tokens), "--total", str(total))
    assert last.finish() == 0, last.seen
    assert last.seen[-1] == "done", last.seen
    check_output(committed(kind, tmp_path), total)
    if kind == "directory":
        leftovers = list((tmp_path / "output" / "produce").glob("*.tmp"))
        assert leftovers == [], "recovery removes the temporary files of killed writers"
