"""A checkpoint writer for test_crash.py, meant to be killed with SIGKILL at any instant.

Usage: crash_writer.py DIRECTORY PIPELINE TOKEN

It resumes from the newest valid checkpoint (fencing the store with TOKEN), prints
``fenced TOKEN``, then forever: consumes one record, checkpoints, and prints
``ack SEQUENCE`` once the commit has returned. Stage state is a pure function of the
position, and the position equals the sequence, so the test can check every byte.

Self-contained on purpose: tests/pipeline also runs from a copy outside the source
tree, with only grafos_pipeline, pytest and hypothesis installed.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable

from grafos_pipeline import DirectoryCheckpointStore, Pipeline

# Sizes cycle through small states, the single-pass path and the overlapped-hash path
# (256 KiB and above).
SIZES = (1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024 - 1, 256 * 1024, 300 * 1024, 600 * 1024)


def payload(position: int) -> bytes:
    """The blob stage's whole state after ``position`` records: deterministic."""
    size = SIZES[position % len(SIZES)]
    seed = hashlib.sha256(f"grafos-crash-{position}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class BlobStage:
    """Keeps a state derived from how many records it has seen."""

    name = "blob"

    def __init__(self) -> None:
        self.position = 0
        self.state = payload(0)

    def process(self, record: object) -> Iterable[object]:
        self.position += 1
        self.state = payload(self.position)
        return (record,)

    def snapshot(self) -> bytes:
        return self.state

    def restore(self, state: bytes) -> None:
        self.state = state


def main(argv: list[str]) -> int:
    directory, name, token = argv[1], argv[2], int(argv[3])
    stage = BlobStage()
    pipeline = Pipeline(name, [stage], DirectoryCheckpointStore(directory), fencing_token=token)
    restored = pipeline.resume()
    if restored is not None:
        stage.position = restored.position
    print(f"fenced {token}", flush=True)
    while True:
        pipeline.process([stage.position])
        checkpoint = pipeline.checkpoint()
        print(f"ack {checkpoint.sequence}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
