"""The lease event log: a bounded ring with cursors, the open requests, per holder."""

from __future__ import annotations

import pytest

from grafos_scheduler import InvalidRequest, LeaseEvent, LeaseEventKind, LeaseEventLog, LeaseState


def _requested(lease_id: int, holder: str = "alice") -> LeaseEvent:
    return LeaseEvent(
        kind=LeaseEventKind.PREEMPTION_REQUESTED,
        lease_id=lease_id,
        job=f"job-{lease_id}",
        holder=holder,
        state=LeaseState.ACTIVE,
        at=1.0,
        cause="make room",
        deadline=6.0,
        grace=5.0,
    )


def _ended(lease_id: int, holder: str = "alice") -> LeaseEvent:
    return LeaseEvent(
        kind=LeaseEventKind.LEASE_ENDED,
        lease_id=lease_id,
        job=f"job-{lease_id}",
        holder=holder,
        state=LeaseState.PREEMPTED,
        at=2.0,
        outcome="preemption_cooperative",
        work_lost_records=0,
        work_lost_seconds=0.0,
    )


def test_events_after_a_cursor_in_order_and_only_the_holders() -> None:
    log = LeaseEventLog("ab12", capacity=8)
    start = log.read(None)
    assert (start.events, start.reset, start.cursor) == ((), True, "ab12-0")
    log.append([_requested(1), _requested(2, "bob"), _ended(1)])
    batch = log.read(start.cursor, "alice")
    assert [(e.seq, e.kind) for e in batch.events] == [
        (1, LeaseEventKind.PREEMPTION_REQUESTED),
        (3, LeaseEventKind.LEASE_ENDED),
    ]
    assert (batch.cursor, batch.reset) == ("ab12-3", False)
    assert [e.lease_id for e in log.read(start.cursor, "bob").events] == [2]
    assert len(log.read(start.cursor).events) == 3  # the admin sees all
    assert log.read(batch.cursor, "alice").events == ()


def test_a_cursor_older_than_the_ring_or_of_another_process_resets_to_the_open_requests() -> None:
    log = LeaseEventLog("ab12", capacity=2)
    log.append([_requested(1), _requested(2), _ended(1), _requested(3, "bob")])
    assert len(log) == 2
    for cursor in ("ab12-0", "ffff-3", None):
        batch = log.read(cursor, "alice")
        assert batch.reset
        assert [e.lease_id for e in batch.events] == [2]  # 1 ended; 3 is bob's
        assert batch.cursor == "ab12-4"
    # The oldest cursor the ring still covers is a delta.
    assert not log.read("ab12-2").reset


@pytest.mark.parametrize("cursor", ["", "abc", "ab12-", "AB12-1", "ab12-1-2", "ab12-99"])
def test_a_malformed_or_future_cursor_is_refused_by_name(cursor: str) -> None:
    log = LeaseEventLog("ab12")
    with pytest.raises(InvalidRequest, match="cursor"):
        log.read(cursor)


def test_listeners_are_told_once_per_append_and_a_failing_one_is_contained() -> None:
    log = LeaseEventLog("ab12")
    calls: list[int] = []

    def failing() -> None:
        raise RuntimeError("listener bug")

    log.add_listener(failing)
    log.add_listener(lambda: calls.append(log.head))
    log.append([_requested(1), _ended(1)])
    log.append([])  # nothing appended: nobody is woken
    assert calls == [2]
    log.remove_listener(failing)
    log.append([_requested(2)])
    assert calls == [2, 3]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(InvalidRequest, match="capacity 0"):
        LeaseEventLog("ab12", capacity=0)
