"""Columns added after schema version 1 (end cause, hold; grace and work lost): a writer
adds them to an older file; a reader of such a file is told what to do rather than
failing in SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from grafos_scheduler import LeaseState, ManualClock, Scheduler, SchedulerError, SqliteStore
from support.scheduling import as_lease

ADDED = ("end_cause", "hold_reason", "hold_set_wall", "hold_expires_at", "hold_expires_wall")


def _columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {str(r[1]) for r in conn.execute("PRAGMA table_info(leases)")}


def _as_before(path: Path, clock: ManualClock) -> int:
    """A store file as the earlier version wrote it: one ended lease, no added columns."""
    with Scheduler(2, SqliteStore(path), clock=clock, autostart=False) as scheduler:
        lease = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
        scheduler.release(lease.lease_id)
    with sqlite3.connect(path) as conn:
        for name in ADDED:
            conn.execute(f"ALTER TABLE leases DROP COLUMN {name}")
    assert not set(ADDED) & _columns(path)
    return lease.lease_id


def test_a_writer_adds_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    clock = ManualClock()
    lease_id = _as_before(path, clock)
    with Scheduler(2, SqliteStore(path), clock=clock, autostart=False) as scheduler:
        old = scheduler.get(lease_id)
        assert old.state is LeaseState.RELEASED
        assert old.end_cause is None  # ended before causes were stored
        fresh = as_lease(scheduler.acquire("job", "w", 0, 1, 60.0))
        scheduler.hold(fresh.lease_id, "after the upgrade")
        assert scheduler.audit.verify()
    assert set(ADDED) <= _columns(path)


def test_a_reader_of_an_old_file_is_told_to_start_the_scheduler(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _as_before(path, ManualClock())
    with pytest.raises(SchedulerError, match=r"lacks the lease columns end_cause.*serve"):
        SqliteStore(path, read_only=True)


GRACE_COLUMNS = (
    ("leases", "grace"),
    ("leases", "checkpoint_wall"),
    ("leases", "work_lost_records"),
    ("leases", "work_lost_seconds"),
    ("tickets", "grace"),
)


def test_a_file_without_the_grace_columns_is_upgraded_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with Scheduler(1, SqliteStore(path), autostart=False) as s:
        lease = as_lease(s.acquire("j", "alice", 0, 1, 60.0))
    # Make the file what was written before grace windows: no grace or work-lost columns.
    with sqlite3.connect(path) as conn:
        for table, column in GRACE_COLUMNS:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with pytest.raises(
        SchedulerError,
        match=r"lacks the lease columns grace, checkpoint_wall, work_lost_records, "
        r"work_lost_seconds and the ticket columns grace: start the scheduler on it once",
    ):
        SqliteStore(path, read_only=True)
    with Scheduler(1, SqliteStore(path), autostart=False) as s:
        restored = s.get(lease.lease_id)
        assert (restored.state, restored.grace) == (LeaseState.ACTIVE, 0.0)
        assert s.release(lease.lease_id).work_lost_seconds is not None
    with sqlite3.connect(path) as conn:
        tickets = {str(r[1]) for r in conn.execute("PRAGMA table_info(tickets)")}
    assert {c for t, c in GRACE_COLUMNS if t == "leases"} <= _columns(path)
    assert "grace" in tickets
    SqliteStore(path, read_only=True).close()
