"""Group commit: decisions under the lock, one fsync outside it for every waiting commit,
no answer and no read before its change is durable, and a failed fsync stops everything.

The fsync is interposed (the store's ``_fsync_wal``, which the real one still runs), so
a test can hold it back and watch who waits. A killed process cannot show a missing
fsync (the page cache survives it); holding the fsync back can.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from grafos_scheduler import (
    Lease,
    LeaseState,
    ManualClock,
    Scheduler,
    SchedulerError,
    SqliteStore,
    StoreError,
    StoreFailed,
    Ticket,
)
from support.internals import book_of, wal_sync_of


class HeldFsync:
    """Stands in for the store's WAL fsync: counts calls, can hold them, can fail them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: SqliteStore) -> None:
        self.real: Callable[[], None] = store._fsync_wal
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        monkeypatch.setattr(store, "_fsync_wal", self)
        # GroupSync holds the bound method it was given: point it here too.
        monkeypatch.setattr(wal_sync_of(store), "_fsync", self)

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.real()


def _lease(result: Lease | Ticket) -> Lease:
    assert isinstance(result, Lease), result
    return result


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "s.db")


@pytest.fixture
def sched(store: SqliteStore) -> Any:
    with Scheduler(100, store, clock=ManualClock(), autostart=False) as scheduler:
        yield scheduler


def test_a_grant_is_not_answered_until_its_commit_is_durable(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(monkeypatch, store)
    fsync.gate.clear()
    thread, out = _in_thread(lambda: sched.acquire("a", "w", 0, 1, 30.0))
    assert fsync.entered.wait(5), "the grant's commit reached the fsync"
    thread.join(0.3)
    assert thread.is_alive(), "the grant answered before its commit was durable"
    assert not out
    # The decision is made, the lock is free: other work goes on meanwhile.
    assert not sched.durable
    fsync.gate.set()
    thread.join(5)
    lease = _lease(out[0])
    assert store.durable
    assert sched.get(lease.lease_id).state is LeaseState.ACTIVE


def test_a_read_does_not_return_a_change_before_it_is_durable(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = _lease(sched.acquire("a", "w", 0, 1, 30.0))
    fsync = HeldFsync(monkeypatch, store)
    fsync.gate.clear()
    release, _ = _in_thread(lambda: sched.release(lease.lease_id))
    assert fsync.entered.wait(5)
    # The release is decided and written, not durable: a read must wait for it.
    reads = [
        _in_thread(lambda: sched.get(lease.lease_id)),
        _in_thread(lambda: sched.lease_page()),
        _in_thread(lambda: sched.lease_counts()),
        _in_thread(lambda: sched.used_slots),
    ]
    time.sleep(0.3)
    for thread, out in reads:
        assert thread.is_alive(), f"a read returned {out} before the release was durable"
    fsync.gate.set()
    release.join(5)
    for thread, _ in reads:
        thread.join(5)
    assert reads[0][1][0].state is LeaseState.RELEASED
    assert reads[1][1][0][0][0].state is LeaseState.RELEASED
    assert reads[2][1][0][LeaseState.RELEASED] == 1
    assert reads[3][1][0] == 0


def test_one_fsync_serves_every_commit_waiting_for_it(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(monkeypatch, store)
    fsync.gate.clear()
    first, first_out = _in_thread(lambda: sched.acquire("first", "w", 0, 1, 30.0))
    assert fsync.entered.wait(5)

    # While the first fsync is held, 16 more grants are decided and written.
    def grant(i: int) -> Callable[[], Lease | Ticket]:
        return lambda: sched.acquire(f"j{i}", "w", 0, 1, 30.0)

    others = [_in_thread(grant(i)) for i in range(16)]
    give_up = time.monotonic() + 5
    while len(book_of(sched).active) < 17 and time.monotonic() < give_up:
        time.sleep(0.01)
    assert len(book_of(sched).active) == 17, "grants were decided while the fsync was held"
    fsync.gate.set()
    for thread, _ in [(first, first_out), *others]:
        thread.join(5)
    assert all(isinstance(out[0], Lease) for _, out in [(first, first_out), *others])
    # One fsync for the first grant, one (rarely two) for the sixteen behind it.
    assert fsync.calls <= 3, fsync.calls


def test_a_failed_fsync_stops_the_scheduler_and_is_never_retried(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _lease(sched.acquire("kept", "w", 0, 1, 30.0))
    fsync = HeldFsync(monkeypatch, store)
    fsync.fail = OSError(5, "Input/output error")
    with pytest.raises(StoreFailed, match="never retried") as caught:
        sched.acquire("lost", "w", 0, 1, 30.0)
    assert isinstance(caught.value, StoreError)
    assert fsync.calls == 1
    assert sched.failed is caught.value
    # Every later call is refused with the same error, and none fsyncs again.
    for call in (
        lambda: sched.acquire("again", "w", 0, 1, 30.0),
        lambda: sched.renew(kept.lease_id, kept.fencing_token),
        lambda: sched.get(kept.lease_id),
        lambda: sched.release(kept.lease_id),
        lambda: sched.checkpoint(),
    ):
        with pytest.raises(StoreFailed):
            call()
    with pytest.raises(StoreFailed), store.transaction():
        pass  # the store refuses writes too
    with pytest.raises(StoreFailed):
        sched.tick()  # the executor stops on it
    assert fsync.calls == 1


def test_a_watcher_hears_of_a_change_only_once_it_is_durable(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = _lease(sched.acquire("a", "w", 0, 1, 30.0))
    start = sched.events.read(None)
    fsync = HeldFsync(monkeypatch, store)
    fsync.gate.clear()
    release, out = _in_thread(lambda: sched.release(lease.lease_id, wait=False))
    release.join(5)
    assert len(out) == 1
    assert isinstance(out[0], Lease), out
    # Written, not durable: the event log (the watch) has nothing yet.
    assert not sched.durable
    assert sched.events.read(start.cursor).events == ()
    waiter, _ = _in_thread(sched.wait_durable)
    assert fsync.entered.wait(5)
    assert sched.events.read(start.cursor).events == ()
    fsync.gate.set()
    waiter.join(5)
    ended = sched.events.read(start.cursor).events
    assert [(e.lease_id, e.outcome) for e in ended] == [(lease.lease_id, "release")]


def test_a_watcher_never_hears_of_a_change_whose_fsync_failed(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = _lease(sched.acquire("a", "w", 0, 1, 30.0))
    start = sched.events.read(None)
    fsync = HeldFsync(monkeypatch, store)
    fsync.fail = OSError(5, "Input/output error")
    with pytest.raises(StoreFailed):
        sched.release(lease.lease_id)
    assert sched.events.read(start.cursor).events == ()


def test_what_was_durable_before_a_failed_fsync_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "s.db")
    scheduler = Scheduler(10, store, autostart=False)
    kept = _lease(scheduler.acquire("kept", "w", 0, 1, 30.0))
    fsync = HeldFsync(monkeypatch, store)
    fsync.fail = OSError(5, "Input/output error")
    with pytest.raises(StoreFailed):
        scheduler.acquire("lost", "w", 0, 1, 30.0)
    scheduler.close()
    monkeypatch.undo()
    with Scheduler(10, SqliteStore(tmp_path / "s.db"), autostart=False) as after:
        assert after.get(kept.lease_id).state is LeaseState.ACTIVE
        assert after.audit.verify().ok


def test_commits_use_normal_sync_and_the_wal_is_fsynced_by_the_group(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store._query("PRAGMA synchronous")[0][0] == 1  # NORMAL: commits do not fsync
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", spy)
    with Scheduler(10, store, autostart=False) as scheduler:
        synced.clear()
        scheduler.acquire("a", "w", 0, 1, 30.0)
        assert synced == [store.path + "-wal"] or synced == [
            os.path.realpath(store.path) + "-wal"
        ], synced


def test_a_memory_store_needs_no_fsync() -> None:
    with Scheduler(2, SqliteStore(":memory:"), autostart=False) as scheduler:
        lease = _lease(scheduler.acquire("a", "w", 0, 1, 30.0))
        assert scheduler.durable
        assert scheduler.release(lease.lease_id).state is LeaseState.RELEASED


def test_checkpoint_interval_is_checked() -> None:
    for bad in (0, -1.0, 3601, True):
        with pytest.raises(SchedulerError, match="checkpoint_interval"):
            Scheduler(2, SqliteStore(":memory:"), autostart=False, checkpoint_interval=bad)
