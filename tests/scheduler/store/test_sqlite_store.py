"""SqliteStore: errors are StoreErrors naming the file, and a row never goes back to ACTIVE."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from grafos_scheduler import Lease, LeaseState, ManualClock, Scheduler, SqliteStore, StoreError
from support.internals import active_row, store_of
from support.scheduling import as_lease


def test_store_in_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "s.db"
    with pytest.raises(StoreError, match=re.escape(str(path))) as info:
        SqliteStore(path)
    assert info.value.path == str(path)


def test_sqlite_errors_in_a_transaction_become_store_errors(
    scheduler: Scheduler, db_path: Path
) -> None:
    lease = as_lease(scheduler.acquire("a", "w", 0, 1, 5.0))
    row = active_row(scheduler, lease.lease_id)
    store: Any = store_of(scheduler)
    with pytest.raises(StoreError, match="IntegrityError") as info, store.transaction() as txn:
        txn.insert_lease(row)
    assert str(db_path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert scheduler.audit.verify().ok


def test_busy_timeout_becomes_a_store_error(db_path: Path, clock: ManualClock) -> None:
    scheduler = Scheduler(2, SqliteStore(db_path, busy_timeout=0.05), clock=clock, autostart=False)
    try:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                scheduler.acquire("a", "w", 0, 1, 5.0)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert isinstance(scheduler.acquire("a", "w", 0, 1, 5.0), Lease)
    finally:
        scheduler.close()


def test_an_ended_lease_never_goes_back_to_active_in_the_store(
    scheduler: Scheduler, db_path: Path
) -> None:
    lease = as_lease(scheduler.acquire("j", "w", 0, 1, 10.0))
    stale = active_row(scheduler, lease.lease_id)  # the row as it was while ACTIVE
    scheduler.release(lease.lease_id)
    with (
        pytest.raises(StoreError, match="not an ACTIVE lease"),
        store_of(scheduler).transaction() as txn,
    ):
        txn.update_lease(stale)
    assert scheduler.get(lease.lease_id).state is LeaseState.RELEASED
