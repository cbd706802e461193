"""One live owner per store file: a newer store takes over, another process's is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from grafos_scheduler import LeaseState, Scheduler, SqliteStore, StoreError, StoreSuperseded
from support.scheduling import SchedulerFactory, as_lease


def test_a_newer_store_in_the_same_process_takes_over_and_the_old_one_stops_writing(
    make_scheduler: SchedulerFactory, db_path: Path
) -> None:
    # An in-process "restart" that never closed the old store: the newer one owns the
    # file from its first write, and the old scheduler can no longer change anything,
    # so capacity and end states cannot diverge between the two.
    first = make_scheduler(1)
    held = as_lease(first.acquire("j1", "w", 0, 1, 10.0))
    second = make_scheduler(1)
    assert second.get(held.lease_id).state is LeaseState.ACTIVE
    assert second.used_slots == 1
    with pytest.raises(StoreSuperseded, match="superseded"):
        first.acquire("j2", "w", 0, 1, 10.0)
    with pytest.raises(StoreSuperseded):
        first.release(held.lease_id)
    assert second.get(held.lease_id).state is LeaseState.ACTIVE
    # Reading needs no lock: the CLI's audit verify and leases list keep working.
    with SqliteStore(db_path) as reader:
        assert [r.job for r in reader.list_leases()] == ["j1"]
    assert second.audit.verify().ok


_HOLDER = """
import sys
from grafos_scheduler import Scheduler, SqliteStore
scheduler = Scheduler(2, SqliteStore(sys.argv[1]))
scheduler.acquire("held-elsewhere", "w", 0, 1, 60.0)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_store_owned_by_another_live_process_is_refused(db_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match=re.escape(str(db_path) + ".lock")):
            Scheduler(2, SqliteStore(db_path), autostart=False)
    finally:
        holder.kill()
        holder.wait(30)
    # The owner is gone (killed, never closed): its lock went with it.
    with Scheduler(2, SqliteStore(db_path), autostart=False) as after:
        assert [lease.job for lease in after.leases()] == ["held-elsewhere"]
