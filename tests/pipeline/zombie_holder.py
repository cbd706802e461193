"""A pipeline holder process for test_zombie.py.

Usage: zombie_holder.py DIRECTORY PIPELINE TOKEN MODE [ARG]

Modes:
  loop STOP_FILE    resume, then consume a record and checkpoint, again and again,
                    printing ``ok SEQ`` or ``stale SEQ``; once STOP_FILE exists and a
                    commit was refused, try resume() once more (``resume-stale`` if
                    refused) and exit 0.
  gated             resume, then before each flush print ``flushing SEQ`` from inside
                    the stage's snapshot and wait for a line on stdin (EOF: exit 0),
                    then print ``ok SEQ`` or ``stale SEQ``.
  once COUNT        resume, print ``resumed SEQ POSITION STATE``, then consume a record
                    and checkpoint COUNT times, printing ``ok SEQ``; exit 0.

Any other failure prints ``error ...`` and exits 1. Stage state is a pure function of
the holder's token and its position, so the test can tell whose checkpoint it sees.
Self-contained on purpose: tests/pipeline also runs from a copy outside the tree.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from grafos_pipeline import DirectoryCheckpointStore, Pipeline, StaleFencingToken


class CountingStage:
    """Counts records; its state names the holder that wrote it."""

    name = "count"

    def __init__(self, token: int, before_snapshot: Callable[[], None] | None = None) -> None:
        self.token = token
        self.position = 0
        self.before_snapshot = before_snapshot

    def process(self, record: object) -> Iterable[object]:
        self.position += 1
        return (record,)

    def snapshot(self) -> bytes:
        if self.before_snapshot is not None:
            self.before_snapshot()
        return f"token={self.token} position={self.position}".encode()

    def restore(self, state: bytes) -> None:
        self.position = int(state.decode().rsplit("=", 1)[1])


def main(argv: list[str]) -> int:
    directory, name, token, mode = argv[1], argv[2], int(argv[3]), argv[4]
    stage = CountingStage(token)
    pipeline = Pipeline(name, [stage], DirectoryCheckpointStore(directory), fencing_token=token)
    restored = pipeline.resume()
    if mode == "once":
        state = "-" if restored is None else restored.stage_states["count"].decode()
        seq = 0 if restored is None else restored.sequence
        print(f"resumed {seq} {pipeline.position} {state.replace(' ', ',')}", flush=True)
        for _ in range(int(argv[5])):
            pipeline.process([None])
            print(f"ok {pipeline.checkpoint().sequence}", flush=True)
        return 0

    if mode == "gated":

        def wait_for_go() -> None:
            print(f"flushing {pipeline.sequence + 1}", flush=True)
            if not sys.stdin.readline():
                sys.exit(0)

        stage.before_snapshot = wait_for_go
        stop_file = None
    else:
        stop_file = Path(argv[5])

    stale = 0
    while not (stale and stop_file is not None and stop_file.exists()):
        pipeline.process([None])
        try:
            print(f"ok {pipeline.checkpoint().sequence}", flush=True)
        except StaleFencingToken:
            stale += 1
            print(f"stale {pipeline.sequence + 1}", flush=True)
            time.sleep(0.005)
    try:
        pipeline.resume()
    except StaleFencingToken:
        print("resume-stale", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as exc:
        print(f"error {exc!r}", flush=True)
        sys.exit(1)
