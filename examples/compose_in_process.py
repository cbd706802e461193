"""A pipeline wired to the scheduler's PreemptionFlushObserver, in one process.

What it shows, step by step (each step is checked; the script exits 1 if one fails):

1. worker-a holds a lease on job "etl" and checkpoints through a store whose commit
   is slow (it waits for a signal), so the flush is in flight;
2. a higher-priority acquire arrives mid-flush: the preemption of worker-a's lease is
   DEFERRED, because the flush marked it CHECKPOINT_IN_PROGRESS;
3. the commit finishes; on_flush_complete only clears the marker, and the scheduler's
   executor thread carries the preemption out right after it;
4. worker-b re-acquires "etl" with a higher fencing token and resumes from the
   checkpoint (the store is fenced first);
5. worker-a, a zombie now, tries a late commit: refused with StaleFencingToken.

Run: python examples/compose_in_process.py
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grafos_pipeline import (
    Checkpoint,
    DirectoryCheckpointStore,
    Pipeline,
    StaleFencingToken,
)
from grafos_scheduler import (
    Lease,
    LeaseState,
    NonPreemptibleReason,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
    Ticket,
)

WAIT = 30.0  # generous: a loaded machine must not make the example flaky


class RunningTotal:
    """A stage that sums what it sees; its state is the total."""

    def __init__(self, name: str = "total") -> None:
        self.name = name
        self.total = 0

    def process(self, record: Any) -> Iterable[Any]:
        self.total += int(record)
        return [self.total]

    def snapshot(self) -> bytes:
        return json.dumps({"total": self.total}).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(json.loads(state)["total"])


class SlowCommitStore:
    """A DirectoryCheckpointStore whose next commit waits until it is let go."""

    def __init__(self, inner: DirectoryCheckpointStore) -> None:
        self.inner = inner
        self.hold_next = False
        self.in_commit = threading.Event()
        self.let_go = threading.Event()

    def commit(self, checkpoint: Checkpoint) -> None:
        if self.hold_next:
            self.hold_next = False
            self.in_commit.set()
            if not self.let_go.wait(WAIT):
                raise TimeoutError("the example never released the commit")
        self.inner.commit(checkpoint)

    def latest(self, pipeline: str) -> Checkpoint | None:
        return self.inner.latest(pipeline)

    def fence(self, pipeline: str, token: int) -> None:
        self.inner.fence(pipeline, token)


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failed += 1


def main() -> int:
    # The observer's misses (the zombie's flush) are logged at WARNING: show them.
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s %(message)s")
    check = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = SlowCommitStore(DirectoryCheckpointStore(root / "checkpoints"))
        with Scheduler(1, SqliteStore(root / "scheduler.sqlite3"), max_defer=30.0) as scheduler:
            scheduler.start()

            print("1. worker-a acquires job 'etl' and starts a slow checkpoint")
            lease_a = scheduler.acquire("etl", "worker-a", 0, 1, 60.0)
            assert isinstance(lease_a, Lease)
            preempted = threading.Event()
            seen: list[tuple[str, Lease]] = []

            def on_preempt(lease: Lease) -> None:
                seen.append((threading.current_thread().name, lease))
                preempted.set()

            scheduler.on_preempt(lease_a.lease_id, on_preempt)
            pipeline_a = Pipeline(
                "etl",
                [RunningTotal()],
                store,
                observer=scheduler.observer,
                lease_id=lease_a.lease_id,
                fencing_token=lease_a.fencing_token,
            )
            pipeline_a.process([1, 2, 3, 4])
            store.hold_next = True
            flushed: list[Checkpoint] = []
            flusher = threading.Thread(target=lambda: flushed.append(pipeline_a.checkpoint()))
            flusher.start()
            check(store.in_commit.wait(WAIT), "the flush is in flight (commit waiting)")
            reasons = scheduler.reasons(lease_a.lease_id)
            check(
                reasons == {NonPreemptibleReason.CHECKPOINT_IN_PROGRESS},
                f"the lease is marked non-preemptible: {sorted(r.value for r in reasons)}",
            )

            print("2. a priority-5 job asks for the only slot, mid-flush")
            urgent = scheduler.acquire("urgent", "worker-u", 5, 1, 60.0)
            check(isinstance(urgent, Ticket), "the urgent acquire waits on a ticket")
            pending = scheduler.pending_preemption(lease_a.lease_id)
            check(pending is not None, f"worker-a's preemption is deferred: {pending}")
            check(not preempted.is_set(), "nothing was preempted during the flush")
            again = scheduler.request_preemption(lease_a.lease_id, "operator")
            check(again.outcome is PreemptionOutcome.DEFERRED, "a second request is DEFERRED")

            print("3. the commit finishes; the executor preempts right after")
            store.let_go.set()
            flusher.join(WAIT)
            check(len(flushed) == 1 and flushed[0].position == 4, "checkpoint 1 committed")
            check(preempted.wait(WAIT), "the preemption callback ran")
            check(
                bool(seen) and seen[0][0] == "grafos-scheduler-executor",
                f"it ran on the executor thread ({seen[0][0] if seen else None})",
            )
            state = scheduler.get(lease_a.lease_id).state
            check(state is LeaseState.PREEMPTED, f"worker-a's lease is {state.value}")
            assert isinstance(urgent, Ticket)
            granted = scheduler.poll(urgent.ticket_id)
            check(isinstance(granted, Lease), "the urgent ticket became a lease")
            assert isinstance(granted, Lease)
            scheduler.release(granted.lease_id)

            print("4. worker-b re-acquires 'etl' and resumes from the checkpoint")
            lease_b = scheduler.acquire("etl", "worker-b", 0, 1, 60.0)
            assert isinstance(lease_b, Lease)
            check(
                lease_b.fencing_token > lease_a.fencing_token,
                f"token {lease_b.fencing_token} > {lease_a.fencing_token}",
            )
            stage_b = RunningTotal()
            pipeline_b = Pipeline(
                "etl",
                [stage_b],
                store,
                observer=scheduler.observer,
                lease_id=lease_b.lease_id,
                fencing_token=lease_b.fencing_token,
            )
            resumed = pipeline_b.resume()
            check(
                resumed is not None and pipeline_b.position == 4 and stage_b.total == 10,
                f"resumed at position {pipeline_b.position} with total {stage_b.total}",
            )
            pipeline_b.process([5])
            pipeline_b.checkpoint()

            print("5. worker-a, a zombie, tries a late commit")
            pipeline_a.process([100])
            try:
                pipeline_a.checkpoint()
            except StaleFencingToken as exc:
                check(True, f"refused: {exc}")
            else:
                check(False, "the zombie's commit was accepted")
            latest = store.latest("etl")
            check(
                latest is not None and latest.fencing_token == lease_b.fencing_token,
                "the newest checkpoint is worker-b's",
            )
            check(scheduler.observer.misses >= 1, "the zombie's flush was counted as a miss")
            verification = scheduler.audit.verify()
            check(verification.ok, f"the audit chain verifies ({verification.records_checked})")
            for record in scheduler.audit.records(limit=100):
                lease = "-" if record.lease_id is None else f"{record.lease_id:032x}"[:8]
                print(f"     audit {record.seq:>2} {record.kind:<22} {lease} {record.job}")
    if check.failed:
        print(f"{check.failed} check(s) FAILED")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
