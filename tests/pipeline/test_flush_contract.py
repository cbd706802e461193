"""The CheckpointFlushObserver lifecycle contract, point by point, and as a property."""

from __future__ import annotations

import ast
import logging
import threading
from collections.abc import Iterable
from importlib import resources
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import grafos_pipeline
from grafos_pipeline import (
    Checkpoint,
    CheckpointError,
    CheckpointFlushObserver,
    InvalidCheckpoint,
    InvalidLeaseId,
    MemoryCheckpointStore,
    Pipeline,
    StaleFencingToken,
)

MAX_LEASE = 2**128 - 1
LEASE = 0xDEADBEEF_00000000_00000000_0000CAFE


class Log:
    """A shared, ordered record of what happened during a flush."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, kind: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((kind, value))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class RecordingObserver:
    def __init__(self, log: Log | None = None, *, raise_in: str | None = None) -> None:
        self.log = log or Log()
        self.raise_in = raise_in
        self.starts: list[int] = []
        self.completes: list[int] = []

    def on_flush_start(self, lease_id: int) -> None:
        self.starts.append(lease_id)
        self.log.add("start", lease_id)
        if self.raise_in == "start":
            raise RuntimeError("observer start exploded")

    def on_flush_complete(self, lease_id: int) -> None:
        self.completes.append(lease_id)
        self.log.add("complete", lease_id)
        if self.raise_in == "complete":
            raise RuntimeError("observer complete exploded")


class CounterStage:
    """Sums integer records; emits each record doubled."""

    def __init__(self, name: str, log: Log | None = None) -> None:
        self.name = name
        self.total = 0
        self.log = log
        self.fail_snapshot: BaseException | None = None
        self.bad_snapshot: object = None

    def process(self, record: Any) -> Iterable[Any]:
        self.total += int(record)
        return [int(record) * 2]

    def snapshot(self) -> bytes:
        if self.log is not None:
            self.log.add("snapshot", self.name)
        if self.fail_snapshot is not None:
            raise self.fail_snapshot
        if self.bad_snapshot is not None:
            return self.bad_snapshot  # type: ignore[return-value]
        return str(self.total).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(state)


class FaultyStore(MemoryCheckpointStore):
    """A real MemoryCheckpointStore with a fault that can be armed for the next commit."""

    def __init__(self, log: Log | None = None) -> None:
        super().__init__()
        self.log = log
        self.fail_commit: BaseException | None = None
        self.during_commit: threading.Event | None = None
        self.release_commit: threading.Event | None = None

    def commit(self, checkpoint: Checkpoint) -> None:
        if self.log is not None:
            self.log.add("commit", checkpoint.sequence)
        if self.during_commit is not None and self.release_commit is not None:
            self.during_commit.set()
            assert self.release_commit.wait(30), "test never released the commit"
        if self.fail_commit is not None:
            fault, self.fail_commit = self.fail_commit, None
            raise fault
        super().commit(checkpoint)


def make_pipeline(
    log: Log | None = None,
    *,
    observer: CheckpointFlushObserver | None = None,
    lease_id: int | None = None,
    token: int = 1,
) -> tuple[Pipeline, FaultyStore, list[CounterStage]]:
    stages = [CounterStage("parse", log), CounterStage("sum", log)]
    store = FaultyStore(log)
    pipeline = Pipeline(
        "orders", stages, store, observer=observer, lease_id=lease_id, fencing_token=token
    )
    return pipeline, store, stages


# -- 1. notifications only when both an observer and a lease id are wired ------------


@pytest.mark.parametrize(
    ("wire_observer", "wire_lease"), [(False, False), (True, False), (False, True)]
)
def test_no_notification_unless_both_are_wired(wire_observer: bool, wire_lease: bool) -> None:
    observer = RecordingObserver()
    pipeline, _, _ = make_pipeline(
        observer=observer if wire_observer else None, lease_id=LEASE if wire_lease else None
    )
    pipeline.process([1, 2, 3])
    pipeline.checkpoint()
    assert observer.starts == []
    assert observer.completes == []


def test_wiring_after_construction_is_seen_by_the_next_checkpoint() -> None:
    observer = RecordingObserver()
    pipeline, _, _ = make_pipeline()
    pipeline.checkpoint()
    pipeline.observer = observer
    pipeline.checkpoint()
    assert observer.starts == []
    pipeline.lease_id = LEASE
    pipeline.checkpoint()
    assert (observer.starts, observer.completes) == ([LEASE], [LEASE])
    pipeline.lease_id = None
    pipeline.checkpoint()
    assert (observer.starts, observer.completes) == ([LEASE], [LEASE])


# -- 2. start exactly once, before any stage is snapshotted ---------------------------


def test_start_comes_before_any_snapshot_and_complete_after_commit() -> None:
    log = Log()
    observer = RecordingObserver(log)
    pipeline, _, _ = make_pipeline(log, observer=observer, lease_id=LEASE)
    pipeline.process([5])
    checkpoint = pipeline.checkpoint()
    assert log.kinds() == ["start", "snapshot", "snapshot", "commit", "complete"]
    assert observer.starts == [LEASE]
    assert observer.completes == [LEASE]
    assert checkpoint.lease_id == LEASE
    assert dict(checkpoint.stage_states) == {"parse": b"5", "sum": b"10"}


# -- 3. complete exactly once, on every failure path ----------------------------------


def arm_snapshot_failure(stages: list[CounterStage], store: FaultyStore) -> None:
    stages[1].fail_snapshot = OSError("disk full while serialising")


def arm_non_bytes_snapshot(stages: list[CounterStage], store: FaultyStore) -> None:
    stages[0].bad_snapshot = "not bytes"


def arm_store_failure(stages: list[CounterStage], store: FaultyStore) -> None:
    store.fail_commit = OSError("EIO")


def arm_stale_token(stages: list[CounterStage], store: FaultyStore) -> None:
    store.fence("orders", 99)


@pytest.mark.parametrize(
    ("arm", "expected", "cause"),
    [
        (arm_snapshot_failure, CheckpointError, OSError),
        (arm_non_bytes_snapshot, InvalidCheckpoint, type(None)),
        (arm_store_failure, CheckpointError, OSError),
        (arm_stale_token, StaleFencingToken, type(None)),
    ],
    ids=["snapshot-raises", "snapshot-not-bytes", "store-raises", "stale-token"],
)
def test_complete_is_called_once_on_every_failure(
    arm: Any, expected: type[Exception], cause: type[BaseException]
) -> None:
    log = Log()
    observer = RecordingObserver(log)
    pipeline, store, stages = make_pipeline(log, observer=observer, lease_id=LEASE)
    pipeline.process([1, 2])
    arm(stages, store)
    with pytest.raises(expected) as caught:
        pipeline.checkpoint()
    assert isinstance(caught.value.__cause__, cause)
    assert observer.starts == [LEASE]
    assert observer.completes == [LEASE]
    assert log.kinds()[0] == "start"
    assert log.kinds()[-1] == "complete"
    assert store.latest("orders") is None, "a failed flush must commit nothing"
    assert pipeline.sequence == 0


def test_keyboard_interrupt_in_the_store_propagates_unchanged_and_completes() -> None:
    observer = RecordingObserver()
    pipeline, store, _ = make_pipeline(observer=observer, lease_id=LEASE)
    interrupt = KeyboardInterrupt()
    store.fail_commit = interrupt
    with pytest.raises(KeyboardInterrupt) as caught:
        pipeline.checkpoint()
    assert caught.value is interrupt
    assert observer.starts == [LEASE]
    assert observer.completes == [LEASE]
    # The pipeline is still usable afterwards: its lock was released.
    assert pipeline.checkpoint().sequence == 1


def test_rewiring_during_a_flush_does_not_split_the_pair() -> None:
    first, second = RecordingObserver(), RecordingObserver()
    pipeline, store, _ = make_pipeline(observer=first, lease_id=LEASE)
    store.during_commit, store.release_commit = threading.Event(), threading.Event()
    result: list[Checkpoint] = []
    flusher = threading.Thread(target=lambda: result.append(pipeline.checkpoint()))
    flusher.start()
    assert store.during_commit.wait(30)
    # Another thread re-wires while the commit is in progress.
    pipeline.observer = second
    pipeline.lease_id = 7
    store.release_commit.set()
    flusher.join(30)
    assert not flusher.is_alive()
    assert (first.starts, first.completes) == ([LEASE], [LEASE])
    assert (second.starts, second.completes) == ([], [])
    assert result[0].lease_id == LEASE
    # The next flush uses the new wiring.
    store.during_commit = store.release_commit = None
    pipeline.checkpoint()
    assert (second.starts, second.completes) == ([7], [7])


# -- 4. one guard does the pairing ----------------------------------------------------


def _calls_to(method: str) -> list[str]:
    """Modules of the installed package that call ``<something>.<method>(...)``."""
    found = []
    package = resources.files(grafos_pipeline)
    for entry in package.iterdir():
        if not entry.name.endswith(".py"):
            continue
        tree = ast.parse(entry.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == method
            ):
                found.append(entry.name)
    return found


def test_one_guard_pairs_start_and_complete() -> None:
    # Exactly one call site for each notification: no cleanup repeated per error path.
    assert _calls_to("on_flush_start") == ["_pipeline.py"]
    assert _calls_to("on_flush_complete") == ["_pipeline.py"]


# -- 5. a raising observer is logged once and changes nothing else --------------------


@pytest.mark.parametrize("raise_in", ["start", "complete"])
def test_raising_observer_is_logged_once_and_changes_nothing(
    raise_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    silent = RecordingObserver()
    loud = RecordingObserver(raise_in=raise_in)
    quiet_pipeline, _, _ = make_pipeline(observer=silent, lease_id=LEASE)
    loud_pipeline, _, _ = make_pipeline(observer=loud, lease_id=LEASE)
    for p in (quiet_pipeline, loud_pipeline):
        p.process([3, 4])
    expected = quiet_pipeline.checkpoint()
    with caplog.at_level(logging.WARNING, logger="grafos_pipeline"):
        got = loud_pipeline.checkpoint()
    assert (got.sequence, got.position, dict(got.stage_states)) == (
        expected.sequence,
        expected.position,
        dict(expected.stage_states),
    )
    assert (loud.starts, loud.completes) == ([LEASE], [LEASE])
    records = [r for r in caplog.records if r.name == "grafos_pipeline"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert str(LEASE) in message
    assert f"on_flush_{raise_in}" in message


@pytest.mark.parametrize("raise_in", ["start", "complete"])
def test_raising_observer_does_not_change_a_failing_flush(
    raise_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = []
    for observer in (RecordingObserver(), RecordingObserver(raise_in=raise_in)):
        pipeline, store, _ = make_pipeline(observer=observer, lease_id=LEASE)
        store.fail_commit = OSError("EIO")
        with (
            caplog.at_level(logging.WARNING, logger="grafos_pipeline"),
            pytest.raises(CheckpointError) as caught,
        ):
            pipeline.checkpoint()
        outcomes.append((type(caught.value), str(caught.value), type(caught.value.__cause__)))
        assert (observer.starts, observer.completes) == ([LEASE], [LEASE])
    assert outcomes[0] == outcomes[1]


def test_observer_interrupted_in_start_still_gets_its_complete() -> None:
    class InterruptedObserver(RecordingObserver):
        def on_flush_start(self, lease_id: int) -> None:
            super().on_flush_start(lease_id)
            raise KeyboardInterrupt

    observer = InterruptedObserver()
    pipeline, store, _ = make_pipeline(observer=observer, lease_id=LEASE)
    with pytest.raises(KeyboardInterrupt):
        pipeline.checkpoint()
    assert (observer.starts, observer.completes) == ([LEASE], [LEASE])
    assert store.latest("orders") is None


# -- 6. lease ids are unsigned 128-bit ints ------------------------------------------


BAD_LEASE_IDS: list[object] = [-1, 2**128, True, False, 1.0, "1", None.__class__, b"1"]


@pytest.mark.parametrize("bad", BAD_LEASE_IDS, ids=repr)
def test_bad_lease_ids_are_refused_where_wired(bad: object) -> None:
    with pytest.raises(InvalidLeaseId, match="lease id") as at_construction:
        make_pipeline(lease_id=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(at_construction.value)
    assert isinstance(at_construction.value, ValueError)
    pipeline, _, _ = make_pipeline(lease_id=5)
    with pytest.raises(InvalidLeaseId) as at_setter:
        pipeline.lease_id = bad  # type: ignore[assignment]
    assert repr(bad) in str(at_setter.value)
    assert pipeline.lease_id == 5, "a refused wiring leaves the old one in place"


@pytest.mark.parametrize("good", [0, 1, 2**64, MAX_LEASE])
def test_boundary_lease_ids_are_accepted(good: int) -> None:
    observer = RecordingObserver()
    pipeline, _, _ = make_pipeline(observer=observer, lease_id=good)
    assert pipeline.checkpoint().lease_id == good
    assert observer.completes == [good]


def test_lease_id_error_message_names_the_value() -> None:
    with pytest.raises(InvalidLeaseId, match=r"lease id -3 is not an unsigned 128-bit integer"):
        grafos_pipeline.validate_lease_id(-3)


# -- 7. serialised per pipeline, parallel across pipelines ----------------------------


def test_concurrent_checkpoints_of_one_pipeline_are_serialised() -> None:
    observer = RecordingObserver()
    pipeline, store, _ = make_pipeline(observer=observer, lease_id=LEASE)
    threads = 8
    per_thread = 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(30)
            for _ in range(per_thread):
                pipeline.process([1])
                pipeline.checkpoint()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    total = threads * per_thread
    sequences = [c.sequence for c in store.history("orders")]
    assert sequences == list(range(1, total + 1)), "gap-free, unique, in commit order"
    assert len(observer.starts) == len(observer.completes) == total
    positions = [c.position for c in store.history("orders")]
    assert positions == sorted(positions)
    assert pipeline.position == total


def test_different_pipelines_checkpoint_in_parallel() -> None:
    both_inside = threading.Barrier(2)

    class RendezvousStore(MemoryCheckpointStore):
        def commit(self, checkpoint: Checkpoint) -> None:
            # Passes only if the other pipeline's commit is in progress at the same time.
            both_inside.wait(30)
            super().commit(checkpoint)

    store = RendezvousStore()
    pipelines = [Pipeline(name, [CounterStage("s")], store) for name in ("left", "right")]
    results: list[Checkpoint] = []
    errors: list[BaseException] = []

    def flush(p: Pipeline) -> None:
        try:
            results.append(p.checkpoint())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(p,)) for p in pipelines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(c.pipeline for c in results) == ["left", "right"]


# -- the whole contract as a property, with a fault injected at every step ----------


FAULTS = [
    "none",
    "snapshot-raises",
    "snapshot-not-bytes",
    "store-raises",
    "stale-token",
    "store-interrupt",
    "observer-start-raises",
    "observer-complete-raises",
]


class FlushContractMachine(RuleBasedStateMachine):
    """Random wiring, processing and faulty flushes; the contract holds after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.observers = [RecordingObserver(), RecordingObserver()]
        self.stages = [CounterStage("a"), CounterStage("b"), CounterStage("c")]
        self.store = FaultyStore()
        self.pipeline = Pipeline("prop", self.stages, self.store, fencing_token=1)
        self.expected_pairs = [0, 0]
        self.committed = 0
        self.fenced = 1

    @rule(records=st.lists(st.integers(-1000, 1000), max_size=5))
    def process(self, records: list[int]) -> None:
        before = self.pipeline.position
        self.pipeline.process(records)
        assert self.pipeline.position == before + len(records)

    @rule(which=st.sampled_from([None, 0, 1]))
    def wire_observer(self, which: int | None) -> None:
        self.pipeline.observer = None if which is None else self.observers[which]

    @rule(lease=st.one_of(st.none(), st.integers(0, MAX_LEASE)))
    def wire_lease(self, lease: int | None) -> None:
        self.pipeline.lease_id = lease

    @rule(bad=st.sampled_from(BAD_LEASE_IDS))
    def wire_bad_lease(self, bad: object) -> None:
        before = self.pipeline.lease_id
        with pytest.raises(InvalidLeaseId):
            self.pipeline.lease_id = bad  # type: ignore[assignment]
        assert self.pipeline.lease_id == before

    @rule()
    def new_holder_takes_over(self) -> None:
        # A newer holder resumes: it fences, and this pipeline adopts its token.
        self.fenced += 1
        self.pipeline.fencing_token = self.fenced
        restored = self.pipeline.resume()
        latest = self.store.latest("prop")
        assert restored == latest
        if latest is not None:
            assert self.pipeline.sequence == latest.sequence

    @rule(fault=st.sampled_from(FAULTS), stage=st.integers(0, 2))
    def checkpoint(self, fault: str, stage: int) -> None:
        observer, lease = self.pipeline.observer, self.pipeline.lease_id
        notified = observer is not None and lease is not None
        index = self.observers.index(observer) if observer in self.observers else None
        original_raise = [o.raise_in for o in self.observers]
        before_sequence = self.pipeline.sequence
        before_latest = self.store.latest("prop")
        observer_fault = fault.startswith("observer-")
        superseded = self.pipeline.fencing_token < self.fenced
        expected: type[BaseException] | None = {
            "snapshot-raises": CheckpointError,
            "snapshot-not-bytes": InvalidCheckpoint,
            "store-raises": CheckpointError,
            "store-interrupt": KeyboardInterrupt,
            "stale-token": StaleFencingToken,
        }.get(fault, StaleFencingToken if superseded else None)
        if fault == "snapshot-raises":
            self.stages[stage].fail_snapshot = ValueError("boom")
        elif fault == "snapshot-not-bytes":
            self.stages[stage].bad_snapshot = 42
        elif fault == "store-raises":
            self.store.fail_commit = OSError("EIO")
        elif fault == "store-interrupt":
            self.store.fail_commit = KeyboardInterrupt()
        elif fault == "stale-token":
            self.fenced += 1
            self.store.fence("prop", self.fenced)
        elif observer_fault and index is not None:
            self.observers[index].raise_in = "start" if "start" in fault else "complete"
        try:
            result: Checkpoint | None = self.pipeline.checkpoint()
            failure: BaseException | None = None
        except BaseException as exc:
            result, failure = None, exc
        finally:
            for s in self.stages:
                s.fail_snapshot = None
                s.bad_snapshot = None
            self.store.fail_commit = None
            for o, r in zip(self.observers, original_raise, strict=True):
                o.raise_in = r
        if notified and index is not None:
            self.expected_pairs[index] += 1
        if expected is not None:
            assert result is None
            assert type(failure) is expected, failure
            assert self.pipeline.sequence == before_sequence
            assert self.store.latest("prop") == before_latest
        else:
            assert failure is None, failure
            assert result is not None
            assert result.sequence == before_sequence + 1
            assert result.lease_id == lease
            assert result.position == self.pipeline.position
            assert dict(result.stage_states) == {s.name: str(s.total).encode() for s in self.stages}
            assert self.store.latest("prop") == result

    @invariant()
    def every_start_has_exactly_one_complete(self) -> None:
        for observer, expected in zip(self.observers, self.expected_pairs, strict=True):
            assert len(observer.starts) == expected
            assert observer.starts == observer.completes


FlushContractMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None
)
test_flush_contract_property = FlushContractMachine.TestCase
