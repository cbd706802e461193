"""Checkpoint stores that let a test act in the middle of a flush."""

from __future__ import annotations

import time
from collections.abc import Callable

from grafos_pipeline import Checkpoint, MemoryCheckpointStore


class HookedStore(MemoryCheckpointStore):
    """A memory store that calls ``hook(n)`` inside the n-th flush, before committing."""

    def __init__(self, hook: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.hook = hook
        self.commits: list[tuple[float, Checkpoint]] = []
        self.flushes = 0

    def commit(self, checkpoint: Checkpoint) -> None:
        self.flushes += 1
        if self.hook is not None:
            self.hook(self.flushes)
        super().commit(checkpoint)
        self.commits.append((time.monotonic(), checkpoint))
