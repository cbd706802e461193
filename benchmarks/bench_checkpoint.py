"""Checkpoint benchmarks, each against its physical floor in the same run.

1. ``Pipeline.checkpoint()`` with a wired no-op observer against the same without
   one (``MemoryCheckpointStore``, 1 KiB of state): the observer's overhead.
2. ``DirectoryCheckpointStore.commit`` against a bare atomic write of the same bytes
   (temp file in the same directory, write, fsync, ``os.replace``, directory fsync), at
   1 KiB, 1 MiB and 16 MiB: what verification, fencing, locking and retention cost.

Run as a script for a table; ``benchmarks/run.py`` collects ``run()`` with the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from grafos_pipeline import Checkpoint, DirectoryCheckpointStore, MemoryCheckpointStore, Pipeline

if TYPE_CHECKING:
    # mypy (explicit package bases, from the repository root) sees benchmarks.harness;
    # at run time benchmarks/ itself is on sys.path (the script's own directory).
    from benchmarks.harness import Row, Sample, markdown_table, time_per_op
else:
    from harness import Row, Sample, markdown_table, time_per_op

KIB = 1024
MIB = 1024 * KIB
ROOT = Path(__file__).resolve().parent.parent
# On the repository's own disk (and git-ignored): the directory store and the floor
# write to the same filesystem, the one a checkpoint directory would live on.
SCRATCH_PARENT = ROOT / ".benchmarks"


class FixedStage:
    """A stage whose state is a fixed byte string."""

    name = "state"

    def __init__(self, size: int) -> None:
        self.state = os.urandom(size)

    def process(self, record: object) -> Iterable[object]:
        return (record,)

    def snapshot(self) -> bytes:
        return self.state

    def restore(self, state: bytes) -> None:
        self.state = state


class NoOpObserver:
    def on_flush_start(self, lease_id: int) -> None:
        pass

    def on_flush_complete(self, lease_id: int) -> None:
        pass


def alternating(
    setup: Callable[[], None],
    ours: Callable[[], object],
    floor: Callable[[], object],
    *,
    rounds: int,
    number: int,
    warmup: int = 1,
) -> tuple[Sample, Sample]:
    """``harness.interleaved`` with an untimed ``setup`` before every round.

    Like ``timeit``, the garbage collector is off while a round is timed.
    """
    a: list[float] = []
    b: list[float] = []
    for i in range(warmup + rounds):
        setup()
        gc.collect()
        gc.disable()
        try:
            # Alternate which goes first so neither always pays a cold cache.
            if i % 2 == 0:
                first, second = time_per_op(ours, number), time_per_op(floor, number)
            else:
                second, first = time_per_op(floor, number), time_per_op(ours, number)
        finally:
            gc.enable()
        if i >= warmup:
            a.append(first)
            b.append(second)
    return Sample(tuple(a)), Sample(tuple(b))


def bench_observer_overhead(quick: bool) -> Row:
    state_size = 1 * KIB
    pipelines: dict[str, Pipeline] = {}

    def setup() -> None:
        # A fresh store per round, so that neither side's history keeps growing.
        for key, observer in (("wired", NoOpObserver()), ("bare", None)):
            pipelines[key] = Pipeline(
                f"bench-{key}",
                [FixedStage(state_size)],
                MemoryCheckpointStore(),
                observer=observer,
                lease_id=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0,
            )

    def wired() -> object:
        return pipelines["wired"].checkpoint()

    def bare() -> object:
        return pipelines["bare"].checkpoint()

    ours, floor = alternating(
        setup, wired, bare, rounds=5 if quick else 61, number=200 if quick else 3000
    )
    row = Row(
        group="observer",
        name="Pipeline.checkpoint(), wired no-op observer, 1 KiB, MemoryCheckpointStore",
        ours=ours,
        floor_name="the same, no observer",
        floor=floor,
        target="<= 1.05",
        passed=None,
    )
    return _judged(row, 1.05)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    SCRATCH_PARENT.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bench-checkpoint-", dir=SCRATCH_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bare_atomic_write(directory: Path, payload: bytes) -> None:
    """The floor: what any durable atomic replace of ``payload`` must do."""
    temp = directory / f".floor.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, directory / "floor.bin")
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def bench_directory_commit(size: int, quick: bool) -> Row:
    rounds, number = {
        KIB: (5, 10) if quick else (41, 40),
        MIB: (3, 3) if quick else (31, 8),
        16 * MIB: (3, 1) if quick else (21, 2),
    }[size]
    state = os.urandom(size)
    with scratch_dir() as scratch:
        ours_dir, floor_dir = scratch / "store", scratch / "floor"
        floor_dir.mkdir()
        store = DirectoryCheckpointStore(ours_dir)  # keep=3, the default
        sequences = iter(range(1, 1_000_000))

        def checkpoint() -> Checkpoint:
            return Checkpoint(
                pipeline="bench",
                sequence=next(sequences),
                fencing_token=1,
                lease_id=None,
                position=0,
                stage_states={"state": state},
                created_at=time.time(),
            )

        # The floor writes exactly the bytes the store writes: read one back.
        store.commit(checkpoint())
        payload = store.files("bench")[0].read_bytes()
        queued: list[Checkpoint] = []

        def setup() -> None:
            # Build the round's checkpoints untimed: commit is what is measured.
            queued[:] = [checkpoint() for _ in range(number)]
            queued.reverse()

        def ours() -> None:
            store.commit(queued.pop())

        def floor() -> None:
            bare_atomic_write(floor_dir, payload)

        ours_sample, floor_sample = alternating(setup, ours, floor, rounds=rounds, number=number)
    label = {KIB: "1 KiB", MIB: "1 MiB", 16 * MIB: "16 MiB"}[size]
    limit = {KIB: 1.15, 16 * MIB: 1.05}.get(size)
    row = Row(
        group="directory store",
        name=f"DirectoryCheckpointStore.commit, {label} of state",
        ours=ours_sample,
        floor_name="bare atomic write of the same bytes",
        floor=floor_sample,
        target="report only" if limit is None else f"<= {limit:.2f}",
        passed=None,
    )
    return row if limit is None else _judged(row, limit)


def _judged(row: Row, limit: float) -> Row:
    return dataclasses.replace(row, passed=row.ratio <= limit)


def run(quick: bool = False) -> list[Row]:
    """Every checkpoint benchmark; ``quick`` takes a few seconds and proves nothing."""
    rows = [bench_observer_overhead(quick)]
    rows.extend(bench_directory_commit(size, quick) for size in (KIB, MIB, 16 * MIB))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke")
    args = parser.parse_args()
    print(markdown_table(run(quick=args.quick)), end="")


if __name__ == "__main__":
    main()
