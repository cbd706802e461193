"""A pipeline writing through a sink, for test_sink_crash.py and test_sink_zombie.py.

Usage: sink_producer.py KIND SINK_PATH STORE_DIR TOKEN [--stop PHASE:N] [--gate PHASE:N]
                        [--limit K] [--retries R]

KIND is ``directory`` or ``sqlite``. The producer resumes (fencing store and sink with
TOKEN), prints ``resumed SEQUENCE POSITION``, then consumes BATCH records and
checkpoints, printing ``ack SEQUENCE POSITION`` after each, until TOTAL records are done
(``done``; ``--total`` sets TOTAL), or K checkpoints were taken (``--limit``).

In its N-th flush it can stop at PHASE: ``mid-segment`` (half of the segment written:
the directory sink's temporary file half full, the SQLite transaction half inserted),
``pre-committed`` (output pre-committed, checkpoint not committed) or ``committed``
(checkpoint committed, output not published). ``--stop`` prints ``paused PHASE`` there
and sleeps until killed; ``--gate`` prints ``gate PHASE`` and waits for a line on stdin.
A refused flush prints ``stale SEQUENCE``; after R of them (``--retries``) it exits 0.

``sink_producer.py --serve`` starts producers faster than an interpreter can: it reads
``run OUTPUT ARGS...`` lines on stdin, forks a producer for each (printing ``started
PID``), whose stdout goes to the file OUTPUT; ``wait PID`` prints ``exited PID STATUS``
(a negative STATUS is the signal that ended it). The forked producer is a process of
its own, killed by a real signal; only the interpreter start is saved.

Output records are ``[input, count, token, payload]``: ``count`` is the stage's state,
``token`` the writer's. Self-contained on purpose: tests/pipeline also runs from a copy
outside the source tree, with only grafos_pipeline, pytest and hypothesis installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from grafos_pipeline import (
    Checkpoint,
    DirectoryCheckpointStore,
    DirectorySink,
    Pipeline,
    SqliteSink,
    StaleFencingToken,
)

TOTAL = 1_000_000  # the default: more than any test lets a producer get through
BATCH = 20


def payload(index: int) -> str:
    """Deterministic, of varying length (up to about 640 characters)."""
    return hashlib.sha256(str(index).encode()).hexdigest() * (index % 11)


def expected_outputs(stop: int) -> list[list[Any]]:
    """An uninterrupted run's output for inputs 0 .. stop-1, without the token field."""
    return [[i, i + 1, payload(i)] for i in range(stop)]


class Numbering:
    """Its state is a count; the output depends on it, so a wrong restore shows."""

    name = "numbering"

    def __init__(self, token: int) -> None:
        self.token = token
        self.count = 0

    def process(self, record: Any) -> Iterable[Any]:
        self.count += 1
        return ([record, self.count, self.token, payload(record)],)

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, state: bytes) -> None:
        self.count = int(state)


class Stopper:
    """Stops the process at one phase of one flush: sleeps (``--stop``) or waits for
    a line on stdin (``--gate``)."""

    def __init__(self, spec: str | None, gate: bool) -> None:
        self.phase: str | None = None
        self.flush = 0
        if spec is not None:
            self.phase, self.flush = _parse(spec)
        self.gate = gate
        self.current = 0  # the flush under way, counted from 1

    def at(self, phase: str) -> None:
        if phase != self.phase or self.current != self.flush:
            return
        self.phase = None  # once
        if self.gate:
            print(f"gate {phase}", flush=True)
            if not sys.stdin.readline():
                os._exit(0)
            return
        print(f"paused {phase}", flush=True)
        while True:
            time.sleep(60)


def _parse(spec: str) -> tuple[str, int]:
    phase, _, number = spec.partition(":")
    return phase, int(number)


class GatedStore(DirectoryCheckpointStore):
    """The real store, stopping just before and just after the commit."""

    stopper: Stopper

    def commit(self, checkpoint: Checkpoint) -> None:
        self.stopper.at("pre-committed")
        super().commit(checkpoint)
        self.stopper.at("committed")


def halfway_writes(stopper: Stopper, directory: str) -> None:
    """Stop the directory sink halfway through writing a segment's temporary file."""
    real_open: Callable[..., int] = os.open
    real_write: Callable[[int, Any], int] = os.write
    temps: set[int] = set()

    def tracking_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, **kwargs)
        if isinstance(path, str) and path.startswith(directory) and path.endswith(".tmp"):
            temps.add(fd)
        return fd

    def halving_write(fd: int, data: Any) -> int:
        if fd in temps:
            temps.discard(fd)
            if len(data) > 64 and stopper.phase == "mid-segment":
                half = len(data) // 2
                written = real_write(fd, data[:half])
                stopper.at("mid-segment")
                return written
        return real_write(fd, data)

    os.open = tracking_open
    os.write = halving_write


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["directory", "sqlite"])
    parser.add_argument("sink")
    parser.add_argument("store")
    parser.add_argument("token", type=int)
    parser.add_argument("--stop")
    parser.add_argument("--gate")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--total", type=int, default=TOTAL)
    args = parser.parse_args(argv[1:])
    stopper = Stopper(args.stop or args.gate, gate=args.gate is not None)

    sink: DirectorySink | SqliteSink
    if args.kind == "directory":
        sink = DirectorySink(args.sink)
        halfway_writes(stopper, os.fspath(sink.path))
    else:
        encoded = 0

        def encode(record: Any) -> str:
            # Rows are encoded as they are inserted: halfway, the transaction is open.
            nonlocal encoded
            encoded += 1
            if encoded == BATCH // 2:
                stopper.at("mid-segment")
            return json.dumps(record, separators=(",", ":"))

        sink = SqliteSink(args.sink, encode=encode)

    store = GatedStore(args.store)
    store.stopper = stopper
    stage = Numbering(args.token)
    pipeline = Pipeline("produce", [stage], store, sink=sink, fencing_token=args.token)
    restored = pipeline.resume()
    print(f"resumed {0 if restored is None else restored.sequence} {pipeline.position}", flush=True)
    taken = stale = 0
    total = args.total
    while pipeline.position < total:
        if args.limit is not None and taken >= args.limit:
            return 0
        start = pipeline.position
        pipeline.process(range(start, min(start + BATCH, total)))
        stopper.current += 1
        if args.kind == "sqlite":
            encoded = 0
        try:
            checkpoint = pipeline.checkpoint()
        except StaleFencingToken:
            stale += 1
            print(f"stale {pipeline.sequence + 1}", flush=True)
            if stale >= args.retries:
                return 0
            continue
        taken += 1
        print(f"ack {checkpoint.sequence} {checkpoint.position}", flush=True)
    print("done", flush=True)
    return 0


def serve() -> int:
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "run":
            output, args = rest[0], rest[1:]
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(fd, 1)
                    os.close(fd)
                    sys.stdin = open(os.devnull)  # noqa: SIM115  (the child never returns)
                    code = main([sys.argv[0], *args])
                    sys.stdout.flush()
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    os._exit(code)
            print(f"started {pid}", flush=True)
        elif command == "wait":
            pid = int(rest[0])
            _, status = os.waitpid(pid, 0)
            print(f"exited {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main(sys.argv))
