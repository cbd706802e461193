"""The demo's pipeline: three stages over a finite input, and its uninterrupted output."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from grafos_pipeline import CheckpointStore, MemoryCheckpointStore, Pipeline, Sink, Stage

__all__ = ["Mix", "RunningSum", "SlowFlush", "build_pipeline", "expected_output"]


class Mix:
    """Stateless: a record number becomes a pseudo-random value."""

    name = "mix"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def process(self, record: Any) -> Iterable[Any]:
        if self.delay:
            time.sleep(self.delay)  # the "work" of the demo
        return [(record, (record * 2654435761) % 1_000_003)]

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


class RunningSum:
    """Stateful: emits each value with the running sum, which a resume must restore."""

    name = "running-sum"

    def __init__(self) -> None:
        self.total = 0

    def process(self, record: Any) -> Iterable[Any]:
        index, value = record
        self.total += value
        return [[index, value, self.total]]

    def snapshot(self) -> bytes:
        return str(self.total).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(state.decode())


class SlowFlush:
    """Stateless; its snapshot is where a slow disk shows: a slow snapshot is a slow flush.

    The output itself goes to the pipeline's sink, not into any stage's state, so a
    checkpoint stays the same size however much output the job has written.
    """

    name = "slow-flush"

    def __init__(
        self, flush_delay: float = 0.0, on_flush: Callable[[], object] | None = None
    ) -> None:
        self.flush_delay = flush_delay
        self.on_flush = on_flush

    def process(self, record: Any) -> Iterable[Any]:
        return [record]

    def snapshot(self) -> bytes:
        if self.on_flush is not None:
            self.on_flush()
        if self.flush_delay:
            time.sleep(self.flush_delay)
        return b""

    def restore(self, state: bytes) -> None:
        pass


def build_pipeline(
    job: str,
    store: CheckpointStore,
    *,
    record_delay: float = 0.0,
    flush_delay: float = 0.0,
    on_flush: Callable[[], object] | None = None,
    sink: Sink | None = None,
) -> Pipeline:
    stages: list[Stage] = [Mix(record_delay), RunningSum(), SlowFlush(flush_delay, on_flush)]
    return Pipeline(job, stages, store, sink=sink)


def expected_output(job: str, records: int) -> list[Any]:
    """The output of an uninterrupted run, in memory, with no delays and no sink."""
    pipeline = build_pipeline(job, MemoryCheckpointStore())
    return [list(row) for row in pipeline.process(range(records))]
