"""The demo's pipeline: three stages over a finite input, and its uninterrupted output."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from grafos_pipeline import CheckpointStore, MemoryCheckpointStore, Pipeline

__all__ = ["Mix", "RunningSum", "Sink", "build_pipeline", "expected_output"]


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


class Sink:
    """Collects the output; its state is the output. A slow snapshot is a slow flush."""

    name = "sink"

    def __init__(
        self, flush_delay: float = 0.0, on_flush: Callable[[], object] | None = None
    ) -> None:
        self.rows: list[Any] = []
        self.flush_delay = flush_delay
        self.on_flush = on_flush

    def process(self, record: Any) -> Iterable[Any]:
        self.rows.append(record)
        return [record]

    def snapshot(self) -> bytes:
        if self.on_flush is not None:
            self.on_flush()
        if self.flush_delay:
            time.sleep(self.flush_delay)
        return json.dumps(self.rows, separators=(",", ":")).encode()

    def restore(self, state: bytes) -> None:
        self.rows = json.loads(state)


def build_pipeline(
    job: str,
    store: CheckpointStore,
    *,
    record_delay: float = 0.0,
    flush_delay: float = 0.0,
    on_flush: Callable[[], object] | None = None,
) -> Pipeline:
    return Pipeline(job, [Mix(record_delay), RunningSum(), Sink(flush_delay, on_flush)], store)


def expected_output(job: str, records: int) -> list[Any]:
    """The output of an uninterrupted run, in memory, with no delays."""
    pipeline = build_pipeline(job, MemoryCheckpointStore())
    pipeline.process(range(records))
    sink = pipeline.stages[-1]
    assert isinstance(sink, Sink)
    return sink.rows
