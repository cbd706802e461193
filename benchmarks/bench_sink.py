"""Sink benchmarks: the two-phase flush against its physical floor, and checkpoint size.

1. ``Pipeline.checkpoint()`` with 1 MiB of new output through a ``DirectorySink``
   (pre-commit, checkpoint commit, publication) against its floor in the same run: a
   bare atomic write of the same segment bytes (temp file, write, fsync,
   ``os.replace``, directory fsync) plus the checkpoint's own write
   (``DirectoryCheckpointStore.commit`` of the same checkpoint). Records arrive
   encoded (one line of bytes each), so the figure is what the sink adds: locking,
   fencing, the SHA-256, the publication's rename and directory fsync. The same with
   the default JSON encoder, and through an ``SqliteSink``, are reported beside it.
2. Checkpoint bytes after 10^3, 10^4 and 10^5 output records: a pipeline whose last
   stage holds its output in its state (the scheduler demo's ``Sink`` stage, before)
   against the same pipeline writing through a ``DirectorySink`` (after).

Run as a script for a table; ``benchmarks/run.py`` collects ``run()`` with the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grafos_pipeline import (
    Checkpoint,
    DirectoryCheckpointStore,
    DirectorySink,
    Pipeline,
    SqliteSink,
)

if TYPE_CHECKING:
    from benchmarks.harness import Row, Sample, markdown_table
else:
    from harness import Row, Sample, markdown_table

KIB = 1024
MIB = 1024 * KIB
ROOT = Path(__file__).resolve().parent.parent
SCRATCH_PARENT = ROOT / ".benchmarks"


@contextmanager
def scratch_dir() -> Iterator[Path]:
    SCRATCH_PARENT.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bench-sink-", dir=SCRATCH_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bare_atomic_write(directory: Path, payload: bytes) -> None:
    """The floor: what any durable atomic write of ``payload`` must do."""
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


class Passthrough:
    """A stateless stage: its output is its input."""

    name = "pass"

    def process(self, record: Any) -> Iterable[Any]:
        return (record,)

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


def line_records(total: int, size: int) -> list[bytes]:
    """``total`` bytes of pre-encoded records, one line of ``size - 1`` bytes each."""
    line = secrets.token_hex(size)[: size - 1].encode()
    return [line] * (total // size)


def json_records(total: int, size: int) -> list[dict[str, Any]]:
    """Records whose compact JSON is about ``size`` bytes, ``total`` bytes in all."""
    text = secrets.token_hex(size)[: size - 24]
    return [{"i": i, "payload": text} for i in range(total // size)]


def per_op(
    setup: Callable[[], None], ours: Callable[[], object], floor: Callable[[], object], number: int
) -> tuple[float, float]:
    """Seconds per call of ``ours`` (after an untimed ``setup``) and of ``floor``."""
    a = b = 0.0
    for i in range(number):
        for which in ("ours", "floor") if i % 2 == 0 else ("floor", "ours"):
            if which == "ours":
                setup()
            start = time.perf_counter()
            (ours if which == "ours" else floor)()
            elapsed = time.perf_counter() - start
            if which == "ours":
                a += elapsed
            else:
                b += elapsed
    return a / number, b / number


def bench_flush(kind: str, quick: bool) -> Row:
    rounds, number = (3, 3) if quick else (31, 8)
    with scratch_dir() as scratch:
        floor_dir = scratch / "floor"
        floor_dir.mkdir()
        records: list[Any]
        sink: DirectorySink | SqliteSink
        if kind == "json":
            records = json_records(MIB, KIB)
            sink = DirectorySink(scratch / "out")
        elif kind == "sqlite":
            records = json_records(MIB, KIB)
            sink = SqliteSink(scratch / "out.db")
        else:
            records = line_records(MIB, KIB)
            sink = DirectorySink(scratch / "out", encode=lambda record: record)
        pipeline = Pipeline(
            "bench", [Passthrough()], DirectoryCheckpointStore(scratch / "ours"), sink=sink
        )
        pipeline.resume()
        floor_store = DirectoryCheckpointStore(scratch / "floor-store")
        sequences = iter(range(1, 1_000_000))
        # The floor writes exactly the segment bytes the sink writes: read one back.
        pipeline.process(records)
        pipeline.checkpoint()
        if isinstance(sink, DirectorySink):
            segment = sink.segments("bench")[-1][1].read_bytes()
        else:
            encoded = [json.dumps(r, separators=(",", ":")) for r in records]
            segment = ("\n".join(encoded) + "\n").encode()

        def setup() -> None:
            if not pipeline.process(records) == []:
                raise AssertionError("the output went to the sink")

        def ours() -> None:
            pipeline.checkpoint()

        def floor() -> None:
            bare_atomic_write(floor_dir, segment)
            floor_store.commit(
                Checkpoint(
                    pipeline="bench",
                    sequence=next(sequences),
                    fencing_token=0,
                    lease_id=None,
                    position=pipeline.position,
                    stage_states={"pass": b""},
                    created_at=time.time(),
                )
            )

        a: list[float] = []
        b: list[float] = []
        for i in range(1 + rounds):
            gc.collect()
            gc.disable()
            try:
                first, second = per_op(setup, ours, floor, number)
            finally:
                gc.enable()
            if i:
                a.append(first)
                b.append(second)
    label = {
        "lines": "DirectorySink, records pre-encoded (1 KiB lines)",
        "json": "DirectorySink, default JSON encoding (1 KiB records)",
        "sqlite": "SqliteSink, JSON text (1 KiB records)",
    }[kind]
    row = Row(
        group="sink",
        name=f"Pipeline.checkpoint() with 1 MiB of new output, {label}",
        ours=Sample(tuple(a)),
        floor_name="bare atomic write of the segment bytes + the checkpoint's commit",
        floor=Sample(tuple(b)),
        target="<= 1.15" if kind == "lines" else "report only",
        passed=None,
    )
    return dataclasses.replace(row, passed=row.ratio <= 1.15) if kind == "lines" else row


class HeldOutput:
    """The state-held sink (the scheduler demo's ``Sink`` stage): its state is the output."""

    name = "sink"

    def __init__(self) -> None:
        self.rows: list[Any] = []

    def process(self, record: Any) -> Iterable[Any]:
        self.rows.append(record)
        return (record,)

    def snapshot(self) -> bytes:
        return json.dumps(self.rows, separators=(",", ":")).encode()

    def restore(self, state: bytes) -> None:
        self.rows = json.loads(state)


class RunningSum:
    name = "running-sum"

    def __init__(self) -> None:
        self.total = 0

    def process(self, record: Any) -> Iterable[Any]:
        value = (record * 2654435761) % 1_000_003
        self.total += value
        return ([record, value, self.total],)

    def snapshot(self) -> bytes:
        return str(self.total).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(state)


def checkpoint_bytes(records: int, with_sink: bool, scratch: Path) -> int:
    store = DirectoryCheckpointStore(scratch / f"ckpt-{records}-{with_sink}", keep=1)
    if with_sink:
        pipeline = Pipeline(
            "size", [RunningSum()], store, sink=DirectorySink(scratch / f"out-{records}")
        )
    else:
        pipeline = Pipeline("size", [RunningSum(), HeldOutput()], store)
    pipeline.process(range(records))
    pipeline.checkpoint()
    return store.files("size")[0].stat().st_size


def bench_sizes(quick: bool) -> list[Row]:
    rows = []
    counts = (10**3, 10**4) if quick else (10**3, 10**4, 10**5)
    with scratch_dir() as scratch:
        for count in counts:
            before = checkpoint_bytes(count, False, scratch)
            after = checkpoint_bytes(count, True, scratch)
            rows.append(
                Row(
                    group="sink",
                    name=(
                        f"checkpoint bytes after {count:,} output records: "
                        f"{after / count:.4f} B/record through DirectorySink, "
                        f"{before / count:.1f} B/record held in stage state"
                    ),
                    ours=Sample((float(after),)),
                    floor_name="output held in stage state (before)",
                    floor=Sample((float(before),)),
                    target="constant",
                    passed=None,
                    unit="B",
                )
            )
    sizes = [row.ours.median for row in rows]
    # Constant: only the decimal digits of the position and the sum may grow.
    return [dataclasses.replace(row, passed=max(sizes) - min(sizes) <= 16) for row in rows]


def run(quick: bool = False) -> list[Row]:
    """Every sink benchmark; ``quick`` takes a few seconds and proves nothing."""
    rows = [bench_flush(kind, quick) for kind in ("lines", "json", "sqlite")]
    rows.extend(bench_sizes(quick))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke")
    args = parser.parse_args()
    print(markdown_table(run(quick=args.quick)), end="")


if __name__ == "__main__":
    main()
