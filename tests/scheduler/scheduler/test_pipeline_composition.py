"""A Pipeline wired to the PreemptionFlushObserver, in one process, on real stores."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from grafos_pipeline import Checkpoint, MemoryCheckpointStore, Pipeline, StaleFencingToken
from grafos_scheduler import (
    Lease,
    LeaseNotActive,
    LeaseState,
    NonPreemptibleReason,
    PreemptionOutcome,
    Ticket,
)
from support.examples import EXAMPLES
from support.scheduling import SchedulerFactory, as_lease

WAIT = 30.0


class Total:
    name = "total"

    def __init__(self) -> None:
        self.total = 0

    def process(self, record: Any) -> Iterable[Any]:
        self.total += int(record)
        return [self.total]

    def snapshot(self) -> bytes:
        return json.dumps(self.total).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(json.loads(state))


class BlockingStore:
    """Commits wait on ``let_go`` while ``block`` is set, so a flush stays in flight."""

    def __init__(self) -> None:
        self.inner = MemoryCheckpointStore()
        self.block = False
        self.in_commit = threading.Event()
        self.let_go = threading.Event()

    def commit(self, checkpoint: Checkpoint) -> None:
        if self.block:
            self.in_commit.set()
            assert self.let_go.wait(WAIT)
        self.inner.commit(checkpoint)

    def latest(self, pipeline: str) -> Checkpoint | None:
        return self.inner.latest(pipeline)

    def fence(self, pipeline: str, token: int) -> None:
        self.inner.fence(pipeline, token)


@pytest.mark.parametrize("executor", ["tick", "thread"])
def test_preemption_mid_flush_is_deferred_then_fenced(
    make_scheduler: SchedulerFactory, executor: str
) -> None:
    scheduler = make_scheduler(1)
    store = BlockingStore()
    old = as_lease(scheduler.acquire("etl", "worker-a", 0, 1, 60.0))
    preempted = threading.Event()
    callback_threads: list[str] = []

    def on_preempt(lease: Lease) -> None:
        callback_threads.append(threading.current_thread().name)
        preempted.set()

    scheduler.on_preempt(old.lease_id, on_preempt)
    pipeline = Pipeline(
        "etl",
        [Total()],
        store,
        observer=scheduler.observer,
        lease_id=old.lease_id,
        fencing_token=old.fencing_token,
    )
    pipeline.process([1, 2, 3])
    store.block = True
    results: list[Checkpoint] = []
    flusher = threading.Thread(target=lambda: results.append(pipeline.checkpoint()))
    flusher.start()
    assert store.in_commit.wait(WAIT)

    # Mid-flush: a higher priority needs the slot; the marked lease is deferred.
    ticket = scheduler.acquire("urgent", "worker-u", 5, 1, 60.0)
    assert isinstance(ticket, Ticket)
    pending = scheduler.pending_preemption(old.lease_id)
    assert pending is not None
    assert pending.reasons == {NonPreemptibleReason.CHECKPOINT_IN_PROGRESS}
    decision = scheduler.request_preemption(old.lease_id, "operator")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    scheduler.tick()
    assert scheduler.get(old.lease_id).state is LeaseState.ACTIVE

    if executor == "thread":
        scheduler.start()
    if executor == "tick":
        # Cleared here, so only the flush's completion can set it again.
        scheduler.manager.wake.clear()
    store.block = False
    store.let_go.set()
    flusher.join(WAIT)
    assert not flusher.is_alive()
    assert results[0].position == 3
    if executor == "tick":
        # on_flush_complete returned without carrying anything out ...
        assert scheduler.get(old.lease_id).state is LeaseState.ACTIVE
        assert scheduler.manager.wake.is_set()
        scheduler.tick()  # ... the executor does it.
    assert preempted.wait(WAIT)
    expected = "grafos-scheduler-executor" if executor == "thread" else "MainThread"
    assert callback_threads == [expected]
    assert scheduler.get(old.lease_id).state is LeaseState.PREEMPTED
    with pytest.raises(LeaseNotActive):
        scheduler.renew(old.lease_id, old.fencing_token)
    urgent = as_lease(scheduler.poll(ticket.ticket_id))
    scheduler.release(urgent.lease_id)

    # Re-acquire with a higher token, fence and resume from the checkpoint.
    new = as_lease(scheduler.acquire("etl", "worker-b", 0, 1, 60.0))
    assert new.fencing_token > old.fencing_token
    stage = Total()
    resumed = Pipeline(
        "etl",
        [stage],
        store,
        observer=scheduler.observer,
        lease_id=new.lease_id,
        fencing_token=new.fencing_token,
    )
    checkpoint = resumed.resume()
    assert checkpoint is not None
    assert (resumed.position, stage.total) == (3, 6)

    # The old holder's late commit is refused and writes nothing.
    pipeline.process([100])
    misses = scheduler.observer.misses
    with pytest.raises(StaleFencingToken):
        pipeline.checkpoint()
    assert scheduler.observer.misses == misses + 2  # its lease is no longer tracked
    latest = store.latest("etl")
    assert latest is not None
    assert latest.position == 3
    kinds = [r.kind for r in scheduler.audit.records(limit=100)]
    assert kinds.index("preemption_deferred") < kinds.index("preemption_executed")
    assert scheduler.audit.verify().ok


def test_example_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "compose_in_process.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert "FAILED" not in proc.stdout
