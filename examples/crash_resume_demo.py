"""grafos_pipeline demo: a pipeline is SIGKILLed mid-stream, resumes, and a zombie is refused.

    python examples/crash_resume_demo.py [--dir DIRECTORY]

1. A worker process (fencing token 1) reads a stream of sensor readings, parses them
   and keeps a running total per sensor, checkpointing every 100 records into a
   directory. Its output (each reading's sensor and new running total) goes through a
   ``DirectorySink`` in the same directory: pre-committed, checkpointed, published.
2. Partway through, after a few acknowledged checkpoints, the demo kills it with
   SIGKILL: no chance to clean up.
3. A new worker (fencing token 2) resumes: it fences the store, restores the newest
   checkpoint and finishes the stream from the position recorded there.
4. The old writer (token 1) wakes up and tries a late commit: it is refused.
5. The committed output, read back from the sink, equals an uninterrupted run's: no
   record lost, none duplicated, in order. The checkpoints stay small: the output is in
   the sink, not in the stage state.

The demo exits non-zero if any of this does not hold. Only the standard library and
grafos_pipeline are needed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from grafos_pipeline import (
    Checkpoint,
    DirectoryCheckpointStore,
    DirectorySink,
    MemoryCheckpointStore,
    Pipeline,
    StaleFencingToken,
)

PIPELINE = "sensor-totals"
RECORDS = 2_000
EVERY = 100  # checkpoint every EVERY records
KILL_AFTER = 5  # acknowledged checkpoints before the SIGKILL
TIMEOUT = 120.0  # generous: the demo must also pass on a loaded machine


# -- the pipeline ------------------------------------------------------------------


def reading(index: int) -> str:
    """Record ``index`` of the stream: a deterministic CSV line ``sensor,value``."""
    return f"sensor-{(index * 7) % 5},{(index * 37 + 11) % 101}"


def stream(start: int) -> Iterator[str]:
    """The stream from ``start``: replayable, like a log read from an offset."""
    return (reading(index) for index in range(start, RECORDS))


class Parse:
    """Turns ``"sensor,value"`` into ``(sensor, value)``. Stateless."""

    name = "parse"

    def process(self, record: Any) -> Iterable[Any]:
        sensor, value = str(record).split(",")
        return ((sensor, int(value)),)

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


class RunningTotals:
    """Keeps a running total and count per sensor; emits the sensor's new total."""

    name = "totals"

    def __init__(self) -> None:
        self.totals: dict[str, list[int]] = {}

    def process(self, record: Any) -> Iterable[Any]:
        sensor, value = record
        entry = self.totals.setdefault(sensor, [0, 0])
        entry[0] += value
        entry[1] += 1
        return ((sensor, entry[0]),)

    def snapshot(self) -> bytes:
        return json.dumps(self.totals, sort_keys=True).encode()

    def restore(self, state: bytes) -> None:
        self.totals = json.loads(state)


def build(
    store: DirectoryCheckpointStore | MemoryCheckpointStore,
    token: int,
    sink: DirectorySink | None = None,
) -> Pipeline:
    return Pipeline(PIPELINE, [Parse(), RunningTotals()], store, sink=sink, fencing_token=token)


def output_sink(directory: Path) -> DirectorySink:
    """Where the workers' output is committed: segment files beside the checkpoints."""
    return DirectorySink(directory / "output")


def totals_of(pipeline: Pipeline) -> dict[str, list[int]]:
    stage = pipeline.stages[-1]
    assert isinstance(stage, RunningTotals)
    return stage.totals


# -- the worker (a subprocess) -----------------------------------------------------


def worker(directory: Path, token: int, records: Iterable[str] | None) -> int:
    """Resume, then process the stream, checkpointing every EVERY records.

    Records come from ``records`` if given (stdin, fed by the demo), else from the
    replayable stream at the resumed position. Prints one line per event.
    """
    pipeline = build(DirectoryCheckpointStore(directory), token, output_sink(directory))
    restored = pipeline.resume()
    sequence = 0 if restored is None else restored.sequence
    print(f"resumed {sequence} {pipeline.position}", flush=True)
    source = stream(pipeline.position) if records is None else records
    for record in source:
        pipeline.process([record.strip()])
        if pipeline.position % EVERY == 0 or pipeline.position == RECORDS:
            checkpoint = pipeline.checkpoint()
            print(f"checkpoint {checkpoint.sequence} {checkpoint.position}", flush=True)
    print(f"done {json.dumps(totals_of(pipeline), sort_keys=True)}", flush=True)
    return 0


def zombie(directory: Path) -> int:
    """The old writer, token 1, waking up with state it never committed: a late commit."""
    pipeline = build(DirectoryCheckpointStore(directory), 1, output_sink(directory))
    # A zombie does not know it was superseded: it does not resume, it just commits.
    pipeline.process(stream(0))
    try:
        pipeline.checkpoint()
    except StaleFencingToken as exc:
        print(f"refused {exc}", flush=True)
        return 0
    print("accepted", flush=True)
    return 0


# -- the demo ----------------------------------------------------------------------


def listing(directory: Path) -> list[tuple[str, int]]:
    """Every file under ``directory`` (checkpoints and output), with its size."""
    return sorted(
        (str(path.relative_to(directory)), path.stat().st_size)
        for path in directory.rglob("*")
        if path.is_file()
    )


class Demo:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.failures: list[str] = []
        self.expected_output: list[Any] = []

    def say(self, text: str) -> None:
        print(text, flush=True)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failures.append(what)

    def spawn(self, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, __file__, "--dir", str(self.directory), *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self) -> int:
        expected, self.expected_output = self.uninterrupted()
        self.say(f"Checkpoint directory: {self.directory}")
        self.say(
            f"The stream has {RECORDS} sensor readings; the pipeline (parse -> running "
            f"totals) checkpoints every {EVERY}."
        )
        killed_at = self.step_kill()
        if killed_at is None:
            return self.verdict()
        newest = self.step_resume(killed_at, expected)
        self.step_zombie(newest)
        return self.verdict()

    def uninterrupted(self) -> tuple[dict[str, list[int]], list[Any]]:
        pipeline = build(MemoryCheckpointStore(), 0)
        output = pipeline.process(stream(0))
        # The sink stores JSON lines: tuples come back as lists.
        return totals_of(pipeline), [list(record) for record in output]

    def step_kill(self) -> int | None:
        self.say("\n1. Worker A starts with fencing token 1.")
        worker_a = self.spawn("--worker", "--token", "1", "--stdin", stdin=subprocess.PIPE)
        assert worker_a.stdin is not None
        assert worker_a.stdout is not None
        acknowledged = 0
        first = worker_a.stdout.readline().split()
        self.check(first[:1] == ["resumed"] and first[2:] == ["0"], "it starts from nothing")
        # Feed the stream a little at a time, so that A is exactly where we want it
        # when it dies: a few checkpoints in, with uncommitted records in memory.
        fed = 0
        while acknowledged < KILL_AFTER:
            batch = [reading(i) for i in range(fed, min(fed + EVERY, RECORDS))]
            worker_a.stdin.write("".join(line + "\n" for line in batch))
            worker_a.stdin.flush()
            fed += len(batch)
            line = worker_a.stdout.readline().split()
            if line[:1] != ["checkpoint"]:
                self.check(False, f"worker A acknowledges checkpoints (it said {line})")
                worker_a.kill()
                return None
            acknowledged = int(line[1])
            self.say(f"   worker A acknowledged checkpoint {line[1]} at position {line[2]}")
        # Half a batch more: processed, never checkpointed, lost with the process.
        worker_a.stdin.write("".join(reading(i) + "\n" for i in range(fed, fed + EVERY // 2)))
        worker_a.stdin.flush()
        self.say(
            f"\n2. SIGKILL worker A (pid {worker_a.pid}) mid-stream: it has read "
            f"{EVERY // 2} records past checkpoint {acknowledged} that it never committed."
        )
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=TIMEOUT)
        worker_a.stdout.close()
        worker_a.stdin.close()
        self.check(worker_a.returncode == -signal.SIGKILL, "worker A died by SIGKILL")
        latest = DirectoryCheckpointStore(self.directory).latest(PIPELINE)
        self.check(
            latest is not None and latest.sequence == acknowledged,
            f"the newest checkpoint on disk is the last acknowledged one ({acknowledged})",
        )
        # Worker A may have died between a checkpoint and its publication: the sink
        # holds a prefix of the output, never more than the checkpoints cover.
        published = output_sink(self.directory).read(PIPELINE)
        position = 0 if latest is None else latest.position
        self.check(
            published == self.expected_output[: len(published)] and len(published) <= position,
            f"the sink holds {len(published)} committed records, none past the checkpoint",
        )
        return None if latest is None else latest.position

    def step_resume(self, killed_at: int, expected: dict[str, list[int]]) -> Checkpoint | None:
        self.say(
            f"\n3. Worker B starts with fencing token 2: it fences the store, restores the "
            f"newest checkpoint and replays the stream from position {killed_at}."
        )
        worker_b = self.spawn("--worker", "--token", "2")
        out, _ = worker_b.communicate(timeout=TIMEOUT)
        lines = [
            line.split(" ", 2 if line.startswith("checkpoint") else 1) for line in out.splitlines()
        ]
        self.check(worker_b.returncode == 0, "worker B finished the stream")
        resumed = lines[0][1].split() if lines and lines[0][0] == "resumed" else []
        self.check(
            resumed[1:] == [str(killed_at)],
            f"worker B fenced the store and resumed at position {killed_at} "
            f"(it said {' '.join(lines[0]) if lines else 'nothing'})",
        )
        commits = [line for line in lines if line[0] == "checkpoint"]
        if commits:
            self.say(
                f"   worker B committed checkpoints {commits[0][1]} to {commits[-1][1]}, "
                f"the last at position {commits[-1][2]}"
            )
        done = lines[-1] if lines else []
        totals = json.loads(done[1]) if done[:1] == ["done"] else None
        self.check(totals == expected, "the totals equal those of an uninterrupted run")
        self.say(f"   totals per sensor [sum, count]: {json.dumps(totals, sort_keys=True)}")
        newest = DirectoryCheckpointStore(self.directory).latest(PIPELINE)
        self.check(
            newest is not None
            and newest.fencing_token == 2
            and newest.position == RECORDS
            and json.loads(newest.stage_states["totals"]) == expected,
            "the newest checkpoint holds the whole stream's totals, under token 2",
        )
        committed = output_sink(self.directory).read(PIPELINE)
        self.check(
            committed == self.expected_output,
            f"the committed output ({len(committed)} records, read from the sink) equals "
            "an uninterrupted run's: none lost, none duplicated, in order",
        )
        size = len(newest.stage_states["totals"]) if newest is not None else 0
        self.check(size < 512, f"the checkpoint's stage state stays small ({size} bytes)")
        return newest

    def step_zombie(self, newest: Checkpoint | None) -> None:
        self.say("\n4. The old writer (token 1) wakes up and tries a late commit.")
        before = listing(self.directory)
        zombie_process = self.spawn("--zombie")
        out, _ = zombie_process.communicate(timeout=TIMEOUT)
        self.say(f"   it was told: {out.strip()}")
        self.check(
            zombie_process.returncode == 0 and out.startswith("refused"),
            "the late commit was refused with StaleFencingToken",
        )
        after = listing(self.directory)
        self.check(before == after, "it wrote nothing")
        self.check(
            DirectoryCheckpointStore(self.directory).latest(PIPELINE) == newest,
            "the newest checkpoint is still worker B's",
        )

    def verdict(self) -> int:
        if self.failures:
            self.say(f"\nFAILED: {len(self.failures)} check(s) did not hold.")
            return 1
        self.say("\nAll checks passed: crash, resume and fencing behaved as promised.")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, help="checkpoint directory (default: a fresh one)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--token", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--stdin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--zombie", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.dir, args.token, sys.stdin if args.stdin else None)
    if args.zombie:
        return zombie(args.dir)

    if args.dir is None:
        directory = Path(tempfile.mkdtemp(prefix="grafos-demo-"))
    else:
        directory = args.dir
        directory.mkdir(parents=True, exist_ok=True)
        if DirectoryCheckpointStore(directory).files(PIPELINE):
            print(f"{directory} already holds checkpoints of {PIPELINE!r}: use an empty one")
            return 2
    return Demo(directory).run()


if __name__ == "__main__":
    sys.exit(main())
