"""Listing leases: counts by state come from the store, and the list is paged by a keyset
cursor, so neither costs more as the history grows."""

from __future__ import annotations

import re
import threading

import pytest

from grafos_scheduler import (
    InvalidRequest,
    LeaseState,
    ManualClock,
    Scheduler,
    SchedulerMetrics,
)
from support.scheduling import SchedulerFactory, as_lease


def _metric(scheduler_metrics: SchedulerMetrics, name: str, label: str) -> float:
    text = scheduler_metrics.render().decode()
    match = re.search(rf'^{name}\{{[a-z]+="{label}"\}} (\S+)$', text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


def test_lease_counts_follow_grants_releases_expiries_and_fences(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    metrics = SchedulerMetrics(scheduler)
    zero = dict.fromkeys(LeaseState, 0)
    assert scheduler.lease_counts() == zero

    a = as_lease(scheduler.acquire("a", "w", 0, 1, 10.0))
    b = as_lease(scheduler.acquire("b", "w", 0, 1, 10.0))
    as_lease(scheduler.acquire("c", "w", 0, 1, 100.0))
    d = as_lease(scheduler.acquire("d", "w", 0, 1, 100.0))
    assert scheduler.lease_counts() == zero | {LeaseState.ACTIVE: 4}

    scheduler.release(a.lease_id)
    scheduler.fence(d.lease_id)
    clock.advance(11.0)  # b expires; nobody has ticked: the count must not be stale
    counts = scheduler.lease_counts()
    assert counts == zero | {
        LeaseState.ACTIVE: 1,
        LeaseState.RELEASED: 1,
        LeaseState.EXPIRED: 1,
        LeaseState.FENCED: 1,
    }
    assert scheduler.get(b.lease_id).state is LeaseState.EXPIRED
    # The same numbers on /metrics, and the slots from the ACTIVE leases alone.
    for state, count in counts.items():
        assert _metric(metrics, "grafos_leases", state.value) == count
    assert _metric(metrics, "grafos_slots", "leased") == 1
    # And they agree with the full list, which is what /metrics used to count.
    listed = scheduler.leases()
    for state in LeaseState:
        assert counts[state] == sum(x.state is state for x in listed)


def test_lease_counts_survive_a_restart(make_scheduler: SchedulerFactory) -> None:
    first = make_scheduler()
    kept = as_lease(first.acquire("kept", "w", 0, 1, 600.0))
    first.release(as_lease(first.acquire("gone", "w", 0, 1, 600.0)).lease_id)
    first.close()
    second = make_scheduler()
    counts = second.lease_counts()
    assert counts[LeaseState.ACTIVE] == 1
    assert counts[LeaseState.RELEASED] == 1
    assert second.get(kept.lease_id).state is LeaseState.ACTIVE


def test_counts_read_while_the_scheduler_writes(scheduler: Scheduler) -> None:
    """The store read shares the connection safely with concurrent transactions."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        try:
            for i in range(200):
                lease = as_lease(scheduler.acquire(f"j{i}", "w", 0, 1, 60.0))
                scheduler.release(lease.lease_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=churn)
    thread.start()
    seen = 0
    while not stop.is_set():
        counts = scheduler.lease_counts()
        assert counts[LeaseState.ACTIVE] <= 1
        assert sum(counts.values()) >= seen  # leases are never removed
        seen = sum(counts.values())
    thread.join()
    assert errors == []
    assert scheduler.lease_counts()[LeaseState.RELEASED] == 200


def _grant_many(scheduler: Scheduler, clock: ManualClock, n: int, holder: str = "w") -> list[int]:
    ids = []
    for i in range(n):
        lease = as_lease(scheduler.acquire(f"{holder}-{i}", holder, 0, 1, 600.0))
        ids.append(lease.lease_id)
        clock.advance(0.001)
    return ids


def test_lease_page_bounds_and_cursor(scheduler: Scheduler, clock: ManualClock) -> None:
    ids = _grant_many(scheduler, clock, 7)
    seen: list[int] = []
    after = None
    pages = []
    while True:
        page, after = scheduler.lease_page(after=after, limit=3)
        assert len(page) <= 3
        pages.append(len(page))
        seen.extend(x.lease_id for x in page)
        if after is None:
            break
        assert after == page[-1].lease_id
    assert pages == [3, 3, 1]
    assert seen == ids  # grant order, each lease once
    assert [x.lease_id for x in scheduler.leases()] == ids  # the full list agrees
    # A last page that is exactly full says so: no cursor to an empty page.
    page, after = scheduler.lease_page(limit=7)
    assert len(page) == 7
    assert after is None
    page, after = scheduler.lease_page()  # the default page (100) holds them all
    assert len(page) == 7
    assert after is None


def test_lease_page_default_is_100_and_max_is_1000(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    for i in range(101):
        scheduler.release(as_lease(scheduler.acquire(f"j{i}", "w", 0, 1, 60.0)).lease_id)
        clock.advance(0.001)
    page, after = scheduler.lease_page()
    assert len(page) == 100
    assert after == page[-1].lease_id
    rest, end = scheduler.lease_page(after=after)
    assert len(rest) == 1
    assert end is None
    for bad in (0, 1001, -1, True, 2.0):
        with pytest.raises(InvalidRequest, match="limit"):
            scheduler.lease_page(limit=bad)  # type: ignore[arg-type]
    assert len(scheduler.lease_page(limit=1000)[0]) == 101


def test_lease_page_filters_and_a_cursor_that_outlives_its_state(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    mine = _grant_many(scheduler, clock, 4, holder="alice")
    theirs = _grant_many(scheduler, clock, 2, holder="bob")
    page, after = scheduler.lease_page(holder="alice", limit=2)
    assert [x.lease_id for x in page] == mine[:2]
    assert after == mine[1]
    # The cursor's lease ends between pages: the next page still starts after it.
    scheduler.release(mine[1])
    page, after = scheduler.lease_page(LeaseState.ACTIVE, holder="alice", after=mine[1])
    assert [x.lease_id for x in page] == mine[2:]
    assert after is None
    released, _ = scheduler.lease_page(LeaseState.RELEASED)
    assert [x.lease_id for x in released] == [mine[1]]
    # A cursor that is unknown, or another holder's, is refused alike.
    with pytest.raises(InvalidRequest, match="after"):
        scheduler.lease_page(holder="alice", after=theirs[0])
    with pytest.raises(InvalidRequest, match="after"):
        scheduler.lease_page(after=12345)
    with pytest.raises(InvalidRequest):
        scheduler.lease_page(after=-1)
    with pytest.raises(InvalidRequest):
        scheduler.lease_page("active")  # type: ignore[arg-type]
