"""Group commit: decisions under the lock, one transaction and one fsync outside it for
every waiting commit, no answer and no read before its change is durable, a change that
fails undone alone, and a failed fsync (or a COMMIT that fails twice) stops everything.

The fsync is interposed (the store's ``_fsync_wal``, which the real one still runs), so
a test can hold it back and watch who waits. A killed process cannot show a missing
fsync (the page cache survives it); holding the fsync back can.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
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
from support.internals import DurabilityWaiter, FailingCommits, HeldFsync, book_of, wal_sync_of


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
        _in_thread(lambda: sched.audit.records()),
        _in_thread(lambda: sched.audit.head()),
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
    assert reads[4][1][0][-1].kind == "release"
    assert reads[5][1][0] == store.audit_head()


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


class Statements:
    """The transaction statements the store's connection runs (SQLite's trace hook)."""

    def __init__(self, store: SqliteStore) -> None:
        self.seen: list[str] = []
        store._query("SELECT 1")  # opened
        assert store._conn is not None
        store._conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"):
            self.seen.append(sql)


def _rows_on_disk(path: str) -> int:
    """Leases another connection sees: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return int(other.execute("SELECT count(*) FROM leases").fetchone()[0])


def test_the_changes_written_before_a_wait_share_one_transaction(
    sched: Scheduler, store: SqliteStore
) -> None:
    statements = Statements(store)
    leases = [_lease(sched.acquire(f"j{i}", "w", 0, 1, 30.0, wait=False)) for i in range(5)]
    # Written and visible to the store's own reads; not committed, not durable.
    assert not store.durable
    assert _rows_on_disk(store.path) == 0
    assert statements.seen == ["BEGIN IMMEDIATE"]
    sched.wait_durable()
    assert statements.seen == ["BEGIN IMMEDIATE", "COMMIT"]
    assert sched.durable
    assert _rows_on_disk(store.path) == 5
    assert all(sched.get(lease.lease_id).state is LeaseState.ACTIVE for lease in leases)
    assert sched.audit.verify().ok


def test_a_change_that_fails_in_a_group_is_undone_alone(
    sched: Scheduler, store: SqliteStore
) -> None:
    # Another writer left an ACTIVE row for job "taken" behind the scheduler's back, so
    # the store's one-active-lease-per-job index refuses the scheduler's grant of it.
    with contextlib.closing(sqlite3.connect(store.path)) as other:
        other.execute(
            "INSERT INTO leases (lease_id, job, holder, priority, slots, ttl, fencing_token, "
            "state, epoch, granted_at, expires_at, granted_wall, expires_wall) VALUES "
            "(?, 'taken', 'w', 0, 1, 30, 1, 'active', 'e', 0, 30, 0, 30)",
            ("f" * 32,),
        )
        other.commit()
    before = _lease(sched.acquire("before", "w", 0, 1, 30.0, wait=False))
    with pytest.raises(StoreError, match="IntegrityError"):
        sched.acquire("taken", "w", 0, 1, 30.0, wait=False)
    after = _lease(sched.acquire("after", "w", 0, 1, 30.0, wait=False))
    sched.wait_durable()
    assert sched.failed is None
    assert {r.job for r in book_of(sched).active.values()} == {"before", "after"}
    assert _rows_on_disk(store.path) == 3  # the other writer's row, before, after
    for lease in (before, after):
        assert sched.get(lease.lease_id).state is LeaseState.ACTIVE
    assert sched.audit.verify().ok


def test_a_full_disk_fails_one_change_and_the_group_before_it_is_written_again(
    sched: Scheduler, store: SqliteStore
) -> None:
    written = [_lease(sched.acquire(f"j{i}", "w", 0, 1, 30.0, wait=False)) for i in range(3)]
    pages = store._query("PRAGMA page_count")[0][0]
    store._query(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    refused: BaseException | None = None
    for i in range(90):
        try:
            written.append(_lease(sched.acquire(f"j{i}-" + "x" * 100, "w", 0, 1, 30.0, wait=False)))
        except StoreError as exc:
            refused = exc
            break
    assert refused is not None, "the disk never filled"
    assert "full" in str(refused)
    assert not isinstance(refused, StoreFailed)
    assert len(written) > 3  # the group held grants when the disk filled
    store._query("PRAGMA max_page_count = 1073741823")
    sched.wait_durable()
    assert sched.failed is None
    # Everything the scheduler holds is in the file; the refused grant is in neither.
    assert _rows_on_disk(store.path) == len(written) == len(book_of(sched).active)
    assert _lease(sched.acquire("later", "w", 0, 1, 30.0)).state is LeaseState.ACTIVE
    assert sched.audit.verify().ok


def test_durable_never_reads_true_while_a_group_is_on_its_way_to_the_disk(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``durable`` takes no lock: the group is counted as written before it empties.
    group_sync = type(wal_sync_of(store))
    seen: list[bool] = []
    real_wrote, real_fail = group_sync.wrote, group_sync.fail

    def wrote(self: Any) -> None:
        seen.append(store.durable)
        real_wrote(self)

    def fail(self: Any, failure: StoreFailed) -> None:
        seen.append(store.durable)
        real_fail(self, failure)

    monkeypatch.setattr(group_sync, "wrote", wrote)
    monkeypatch.setattr(group_sync, "fail", fail)
    sched.acquire("a", "w", 0, 1, 30.0, wait=False)
    sched.wait_durable()
    sched.acquire("b", "w", 0, 1, 30.0, wait=False)
    FailingCommits(store, times=2)
    with pytest.raises(StoreFailed):
        sched.wait_durable()
    assert seen == [False, False]


def test_a_group_that_sqlite_rolled_back_under_another_statement_is_written_again(
    sched: Scheduler, store: SqliteStore
) -> None:
    first = [_lease(sched.acquire(f"j{i}", "w", 0, 1, 30.0, wait=False)) for i in range(2)]
    # What SQLite does when a statement fails with a full disk or an I/O error, even a
    # read: it ends the transaction, and the group's changes go with it.
    store._query("ROLLBACK")
    third = _lease(sched.acquire("j2", "w", 0, 1, 30.0, wait=False))
    sched.wait_durable()
    assert sched.failed is None
    assert _rows_on_disk(store.path) == 3
    for lease in (*first, third):
        assert sched.get(lease.lease_id).state is LeaseState.ACTIVE
    assert sched.audit.verify().ok
    assert [r.seq for r in sched.audit.records()] == list(range(1, len(sched.audit.records()) + 1))


def test_a_failed_commit_is_tried_once_more_with_the_group_written_again(
    sched: Scheduler, store: SqliteStore
) -> None:
    leases = [_lease(sched.acquire(f"j{i}", "w", 0, 1, 30.0, wait=False)) for i in range(3)]
    failing = FailingCommits(store, times=1)
    sched.wait_durable()
    assert failing.failed == 1
    assert sched.failed is None
    assert _rows_on_disk(store.path) == 3
    assert all(sched.get(lease.lease_id).state is LeaseState.ACTIVE for lease in leases)


def test_a_commit_that_fails_twice_stops_the_store(
    sched: Scheduler, store: SqliteStore, tmp_path: Path
) -> None:
    kept = _lease(sched.acquire("kept", "w", 0, 1, 30.0))
    for i in range(3):
        sched.acquire(f"lost-{i}", "w", 0, 1, 30.0, wait=False)
    FailingCommits(store, times=2)
    with pytest.raises(StoreFailed, match=r"3 written change.*could not be committed"):
        sched.wait_durable()
    assert isinstance(sched.failed, StoreFailed)
    refused: list[Callable[[], object]] = [
        lambda: sched.acquire("again", "w", 0, 1, 30.0),
        lambda: sched.get(kept.lease_id),
    ]
    for call in refused:
        with pytest.raises(StoreFailed):
            call()
    sched.close()
    # What was acknowledged is in the file; what was lost was never answered.
    with Scheduler(10, SqliteStore(tmp_path / "s.db"), autostart=False) as after:
        assert [lease.job for lease in after.lease_page()[0]] == ["kept"]
        assert after.audit.verify().ok


def test_the_requests_of_one_loop_turn_share_one_commit_and_one_fsync(
    sched: Scheduler, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = HeldFsync(monkeypatch, store)
    statements = Statements(store)
    waiter = DurabilityWaiter(sched)

    async def request(i: int) -> Lease:
        lease = _lease(sched.acquire(f"j{i}", "w", 0, 1, 30.0, wait=False))
        await waiter.wait()
        assert store.durable  # answered only once durable
        return lease

    async def turn() -> list[Lease]:
        # gather starts every task in the same turn of the loop.
        return await asyncio.gather(*(request(i) for i in range(8)))

    try:
        leases = asyncio.run(turn())
    finally:
        waiter.stop()
    assert len(leases) == 8
    assert statements.seen == ["BEGIN IMMEDIATE", "COMMIT"]
    assert fsync.calls == 1


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
