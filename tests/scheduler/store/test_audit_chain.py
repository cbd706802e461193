"""The audit chain: verification, paging, and tampering through a second connection."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from grafos_scheduler import InvalidRequest, Lease, ManualClock, Scheduler
from support.scheduling import SchedulerFactory


def _populate(scheduler: Scheduler, n: int = 6) -> None:
    for i in range(n):
        lease = scheduler.acquire(f"job{i}", "w", 0, 1, 50.0)
        assert isinstance(lease, Lease)
        scheduler.release(lease.lease_id)


@pytest.fixture
def chain(make_scheduler: SchedulerFactory, db_path: Path) -> Path:
    scheduler = make_scheduler()
    _populate(scheduler)
    assert scheduler.audit.verify().ok
    scheduler.close()
    return db_path


def _verify(make_scheduler: SchedulerFactory) -> tuple[bool, int | None]:
    result = make_scheduler().audit.verify()
    return result.ok, result.first_bad_seq


def _tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_intact_chain_verifies(scheduler: Scheduler) -> None:
    _populate(scheduler)
    result = scheduler.audit.verify()
    assert result
    assert result.records_checked == 13
    assert result.head == scheduler.audit.head()
    assert result.first_bad_seq is None


def test_paging(scheduler: Scheduler) -> None:
    _populate(scheduler)
    first = scheduler.audit.records(limit=5)
    rest = scheduler.audit.records(after_seq=first[-1].seq, limit=100)
    assert [r.seq for r in first + rest] == list(range(1, 14))
    assert scheduler.audit.verify(page=2).ok
    assert rest[0].prev_hash == first[-1].hash
    assert json.loads(json.dumps(rest[0].to_json()))["seq"] == 6
    with pytest.raises(InvalidRequest, match="limit 0"):
        scheduler.audit.records(limit=0)
    with pytest.raises(InvalidRequest, match="after_seq -1"):
        scheduler.audit.records(after_seq=-1)


def test_edited_data_is_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, 'UPDATE audit SET data = \'{"holder":"mallory"}\' WHERE seq = 4')
    # Reopening appends a restart record after the tampered one; verify still names 4.
    assert _verify(make_scheduler) == (False, 4)


def test_edited_kind_is_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, "UPDATE audit SET kind = 'grant' WHERE seq = 3")
    assert _verify(make_scheduler) == (False, 3)


def test_garbage_data_is_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, "UPDATE audit SET data = 'not json' WHERE seq = 2")
    assert _verify(make_scheduler) == (False, 2)


def test_rehashed_edit_breaks_the_next_link(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, "UPDATE audit SET hash = '" + "a" * 64 + "' WHERE seq = 5")
    assert _verify(make_scheduler) == (False, 5)


def test_deleted_row_is_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, "DELETE FROM audit WHERE seq = 6")
    ok, bad = _verify(make_scheduler)
    assert (ok, bad) == (False, 6)


def test_deleted_first_row_is_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(chain, "DELETE FROM audit WHERE seq = 1")
    assert _verify(make_scheduler) == (False, 1)


def test_reordered_rows_are_found(chain: Path, make_scheduler: SchedulerFactory) -> None:
    _tamper(
        chain,
        "UPDATE audit SET seq = -1 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = 4",
        "UPDATE audit SET seq = 4 WHERE seq = -1",
    )
    assert _verify(make_scheduler) == (False, 3)


def test_truncated_tail_shows_in_the_head(
    chain: Path, make_scheduler: SchedulerFactory, clock: ManualClock
) -> None:
    scheduler = make_scheduler()
    exported = scheduler.audit.head()
    scheduler.close()
    _tamper(chain, "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    clock.advance(1.0)
    scheduler = make_scheduler()
    # A cut tail still verifies; only the exported head can reveal it.
    assert scheduler.audit.verify().ok
    (now_at_seq,) = scheduler.audit.records(after_seq=exported[0] - 1, limit=1)
    assert now_at_seq.hash != exported[1]


@pytest.mark.parametrize("page", [0, -1, 10_001])
def test_verify_refuses_a_bad_page(scheduler: Scheduler, page: int) -> None:
    with pytest.raises(InvalidRequest, match=f"page {page}"):
        scheduler.audit.verify(page=page)
