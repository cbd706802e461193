"""Exactly-once output under faults, as a property: a fault injected at every phase.

A hypothesis state machine drives a pipeline over a real sink (a directory or an SQLite
file) and processes, checkpoints with a fault at one phase (the encoder, the segment
write, the checkpoint commit, the publication, the observer), restarts the holder, and
hands over to a newer holder while the older one keeps trying as a zombie. After every
step the committed output is a prefix of the uninterrupted run's output (nothing
duplicated, nothing out of order); after every successful flush and every recovery it is
exactly the output of the input that the checkpoint covers. The observer contract holds
around the whole two-phase flush: start and complete exactly once each, in that order,
with every sink and store call of the flush between them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from grafos_pipeline import (
    Checkpoint,
    CheckpointError,
    DirectorySink,
    InvalidRecord,
    MemoryCheckpointStore,
    OutputNotPublished,
    Pipeline,
    SqliteSink,
    StaleFencingToken,
)

NAME = "prop"
LEASE = 0xFEED_0000_0000_0000_0000_0000_0000_BEEF


def outputs(stop: int) -> list[Any]:
    """The uninterrupted run's output for inputs ``0 .. stop-1``."""
    return [[i, i + 1] for i in range(stop) if i % 5 != 4]


class Numbering:
    """Numbers its inputs; every fifth one emits nothing (a flush with no output)."""

    name = "numbering"

    def __init__(self) -> None:
        self.count = 0

    def process(self, record: Any) -> Iterable[Any]:
        self.count += 1
        return [] if record % 5 == 4 else [[record, self.count]]

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, state: bytes) -> None:
        self.count = int(state)


class Events:
    def __init__(self) -> None:
        self.log: list[str] = []


class ArmedEncoder:
    """The sink's real encoder (compact JSON), which can be armed to fail once."""

    def __init__(self) -> None:
        self.armed = False

    def _check(self) -> None:
        if self.armed:
            self.armed = False
            raise ValueError("encoder fault")

    def as_bytes(self, record: Any) -> bytes:
        self._check()
        return json.dumps(record, separators=(",", ":")).encode()

    def as_text(self, record: Any) -> str:
        self._check()
        return json.dumps(record, separators=(",", ":"))


class FaultySink:
    """A real sink with a fault armed before or after one of its phases."""

    def __init__(self, inner: DirectorySink | SqliteSink, events: Events) -> None:
        self.inner = inner
        self.events = events
        self.fault: str | None = None

    def _maybe(self, when: str) -> None:
        if self.fault == when:
            self.fault = None
            raise OSError(f"injected: {when}")

    def pre_commit(self, pipeline: str, sequence: int, token: int, records: Sequence[Any]) -> None:
        self.events.log.append("pre_commit")
        self._maybe("segment-write-before")
        self.inner.pre_commit(pipeline, sequence, token, records)
        self._maybe("segment-write-after")

    def publish(self, pipeline: str, sequence: int) -> None:
        self.events.log.append("publish")
        self._maybe("publish-before")
        self.inner.publish(pipeline, sequence)
        self._maybe("publish-after")

    def recover(self, pipeline: str, sequence: int, token: int) -> None:
        self.events.log.append("recover")
        self.inner.recover(pipeline, sequence, token)


class FaultyStore(MemoryCheckpointStore):
    def __init__(self, events: Events) -> None:
        super().__init__()
        self.events = events
        self.fault: str | None = None

    def commit(self, checkpoint: Checkpoint) -> None:
        self.events.log.append("commit")
        fault, self.fault = self.fault, None
        if fault == "commit-before":
            raise OSError("injected: commit-before")
        if fault == "commit-interrupt":
            raise KeyboardInterrupt
        super().commit(checkpoint)
        if fault == "commit-after":
            raise OSError("injected: commit-after (the write happened)")


class Observer:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.raise_in: str | None = None
        self.starts = 0
        self.completes = 0

    def on_flush_start(self, lease_id: int) -> None:
        self.starts += 1
        self.events.log.append("start")
        if self.raise_in == "start":
            raise RuntimeError("observer start fault")

    def on_flush_complete(self, lease_id: int) -> None:
        self.completes += 1
        self.events.log.append("complete")
        if self.raise_in == "complete":
            raise RuntimeError("observer complete fault")


FAULTS = [
    "none",
    "encoder",
    "segment-write-before",
    "segment-write-after",
    "commit-before",
    "commit-after",
    "commit-interrupt",
    "publish-before",
    "publish-after",
    "observer-start",
    "observer-complete",
]


class ExactlyOnceMachine(RuleBasedStateMachine):
    kind = "directory"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="grafos-sink-prop-"))
        self.events = Events()
        self.encoder = ArmedEncoder()
        self.store = FaultyStore(self.events)
        self.observer = Observer(self.events)
        self.token = 1
        self.zombie: Pipeline | None = None
        self.pipeline = self.holder(self.token)
        self.resume_and_check(self.pipeline)

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- wiring ---------------------------------------------------------------------

    def open_sink(self) -> DirectorySink | SqliteSink:
        if self.kind == "directory":
            return DirectorySink(self.tmp / "out", encode=self.encoder.as_bytes)
        return SqliteSink(self.tmp / "out.db", encode=self.encoder.as_text)

    def holder(self, token: int) -> Pipeline:
        # A new holder is a new process: new sink and stage objects, the same files.
        self.sink = FaultySink(self.open_sink(), self.events)
        return Pipeline(
            NAME,
            [Numbering()],
            self.store,
            sink=self.sink,
            observer=self.observer,
            lease_id=LEASE,
            fencing_token=token,
        )

    def committed(self) -> list[Any]:
        return self.open_sink().read(NAME)

    def resume_and_check(self, pipeline: Pipeline) -> None:
        restored = pipeline.resume()
        assert pipeline.position == (0 if restored is None else restored.position)
        assert self.committed() == outputs(pipeline.position)

    # -- rules ----------------------------------------------------------------------

    @rule(count=st.integers(0, 7))
    def process(self, count: int) -> None:
        start = self.pipeline.position
        assert self.pipeline.process(range(start, start + count)) == []

    @rule(fault=st.sampled_from(FAULTS))
    def checkpoint(self, fault: str) -> None:
        pipeline = self.pipeline
        if fault == "encoder":
            self.encoder.armed = True
        elif fault.startswith(("segment-write", "publish")):
            self.sink.fault = fault
        elif fault.startswith("commit"):
            self.store.fault = fault
        elif fault.startswith("observer"):
            self.observer.raise_in = fault.removeprefix("observer-")
        before = len(self.events.log)
        try:
            result: Checkpoint | None = pipeline.checkpoint()
            failure: BaseException | None = None
        except BaseException as exc:
            result, failure = None, exc
        finally:
            # A fault that its phase never reached (no output to stage) is disarmed.
            self.encoder.armed = False
            self.sink.fault = None
            self.store.fault = None
            self.observer.raise_in = None
        flush = self.events.log[before:]
        assert flush[0] == "start"
        assert flush[-1] == "complete"
        assert flush.count("start") == flush.count("complete") == 1

        if failure is None:
            assert result is not None
            assert result.position == pipeline.position
            assert self.committed() == outputs(pipeline.position), "all of it, once"
        elif fault == "commit-interrupt":
            assert type(failure) is KeyboardInterrupt
        elif fault.startswith("publish"):
            assert isinstance(failure, OutputNotPublished)
        elif fault == "encoder":
            # Only reachable with output to stage; then nothing at all was committed.
            assert isinstance(failure, InvalidRecord)
            assert "cannot be encoded" in str(failure)
            assert "commit" not in flush
            # The record is poisoned for good: the holder restarts from its checkpoint.
            self.restart()
        else:
            assert isinstance(failure, CheckpointError), failure
            assert not isinstance(failure, StaleFencingToken)

    @rule()
    def restart(self) -> None:
        """The holder crashes and restarts under the same token."""
        self.pipeline = self.holder(self.token)
        self.resume_and_check(self.pipeline)

    @rule()
    def hand_over(self) -> None:
        """A newer holder resumes; the old one lives on as a zombie."""
        self.zombie = self.pipeline
        self.token += 1
        self.pipeline = self.holder(self.token)
        self.resume_and_check(self.pipeline)

    @precondition(lambda self: self.zombie is not None)
    @rule(count=st.integers(0, 3))
    def zombie_tries(self, count: int) -> None:
        zombie = self.zombie
        assert zombie is not None
        before = self.committed()
        zombie.process(range(zombie.position, zombie.position + count))
        with pytest.raises(StaleFencingToken):
            zombie.checkpoint()
        assert self.committed() == before, "a zombie committed output"

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def committed_output_is_a_prefix_of_the_uninterrupted_run(self) -> None:
        committed = self.committed()
        assert committed == outputs(10_000)[: len(committed)]

    @invariant()
    def observer_pairs(self) -> None:
        assert self.observer.starts == self.observer.completes


class ExactlyOnceSqliteMachine(ExactlyOnceMachine):
    kind = "sqlite"


SETTINGS = settings(max_examples=20, stateful_step_count=30, deadline=None)
ExactlyOnceMachine.TestCase.settings = SETTINGS
ExactlyOnceSqliteMachine.TestCase.settings = SETTINGS
test_directory_sink_exactly_once_under_faults = ExactlyOnceMachine.TestCase
test_sqlite_sink_exactly_once_under_faults = ExactlyOnceSqliteMachine.TestCase
