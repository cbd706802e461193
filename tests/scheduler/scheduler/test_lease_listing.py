"""Review findings 14 and 22 at the scheduler level.

14: leases by state come from a count on the store, and the lease list is paged by a
keyset cursor, so neither costs more as the history grows.
22: a waiting ticket can be cancelled (audited, in queue order, durable).
"""

from __future__ import annotations

import re
import threading

import pytest

from grafos_scheduler import (
    InvalidRequest,
    Lease,
    LeaseState,
    ManualClock,
    Scheduler,
    SchedulerMetrics,
    Ticket,
    TicketGranted,
    UnknownTicket,
)

from .conftest import SchedulerFactory


def _lease(result: Lease | Ticket) -> Lease:
    assert isinstance(result, Lease), result
    return result


def _ticket(result: Lease | Ticket) -> Ticket:
    assert isinstance(result, Ticket), result
    return result


def _metric(scheduler_metrics: SchedulerMetrics, name: str, label: str) -> float:
    text = scheduler_metrics.render().decode()
    match = re.search(rf'^{name}\{{[a-z]+="{label}"\}} (\S+)$', text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


# ------------------------------------------------------------ 14: counts by state


def test_lease_counts_follow_grants_releases_expiries_and_fences(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    metrics = SchedulerMetrics(scheduler)
    zero = dict.fromkeys(LeaseState, 0)
    assert scheduler.lease_counts() == zero

    a = _lease(scheduler.acquire("a", "w", 0, 1, 10.0))
    b = _lease(scheduler.acquire("b", "w", 0, 1, 10.0))
    _lease(scheduler.acquire("c", "w", 0, 1, 100.0))
    d = _lease(scheduler.acquire("d", "w", 0, 1, 100.0))
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
    kept = _lease(first.acquire("kept", "w", 0, 1, 600.0))
    first.release(_lease(first.acquire("gone", "w", 0, 1, 600.0)).lease_id)
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
                lease = _lease(scheduler.acquire(f"j{i}", "w", 0, 1, 60.0))
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


# ------------------------------------------------------------ 14: the paged list


def _grant_many(scheduler: Scheduler, clock: ManualClock, n: int, holder: str = "w") -> list[int]:
    ids = []
    for i in range(n):
        lease = _lease(scheduler.acquire(f"{holder}-{i}", holder, 0, 1, 600.0))
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
        scheduler.release(_lease(scheduler.acquire(f"j{i}", "w", 0, 1, 60.0)).lease_id)
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


# ------------------------------------------------------------ 22: cancel a ticket


def test_cancel_ticket_is_audited_frees_the_queue_and_keeps_slots(
    scheduler: Scheduler,
) -> None:
    # Capacity 10: 9 slots held at a high priority, so no ticket below can preempt.
    holder = _lease(scheduler.acquire("big", "w", 10, 9, 600.0))
    head = _ticket(scheduler.acquire("head", "alice", 5, 2, 60.0))  # does not fit
    mid = _ticket(scheduler.acquire("mid", "bob", 5, 1, 60.0))  # fits, but waits its turn
    low = _ticket(scheduler.acquire("low", "carol", 1, 1, 60.0))
    assert [t.ticket_id for t in scheduler.tickets()] == [
        head.ticket_id,
        mid.ticket_id,
        low.ticket_id,
    ]
    assert scheduler.used_slots == 9
    seq_before = scheduler.audit.head()[0]

    cancelled = scheduler.cancel_ticket(head.ticket_id)
    assert cancelled == head

    # One record, in the chain, naming the ticket.
    records = scheduler.audit.records(after_seq=seq_before, limit=100)
    assert records[0].kind == "ticket_cancelled"
    assert records[0].job == "head"
    assert records[0].lease_id is None
    assert records[0].data == {
        "ticket_id": f"{head.ticket_id:032x}",
        "holder": "alice",
        "priority": 5,
        "slots": 2,
    }
    assert scheduler.audit.verify().ok
    # The ticket behind it moved up and fitted: granted at once.
    granted = scheduler.poll(mid.ticket_id)
    assert isinstance(granted, Lease)
    assert granted.holder == "bob"
    assert scheduler.used_slots == 10
    assert [t.ticket_id for t in scheduler.tickets()] == [low.ticket_id]
    assert records[1].kind == "grant"
    assert records[1].data["ticket_id"] == f"{mid.ticket_id:032x}"
    # The cancelled ticket is gone; the job may ask again.
    with pytest.raises(UnknownTicket):
        scheduler.poll(head.ticket_id)
    with pytest.raises(UnknownTicket):
        scheduler.cancel_ticket(head.ticket_id)
    again = _ticket(scheduler.acquire("head", "alice", 5, 2, 60.0))
    assert [t.ticket_id for t in scheduler.tickets()] == [again.ticket_id, low.ticket_id]
    assert scheduler.get(holder.lease_id).state is LeaseState.ACTIVE


def test_cancel_keeps_the_order_of_the_rest(scheduler: Scheduler) -> None:
    _lease(scheduler.acquire("full", "w", 10, 10, 600.0))
    t = [_ticket(scheduler.acquire(f"t{i}", "w", p, 1, 60.0)) for i, p in enumerate([3, 5, 3, 1])]
    order = [x.ticket_id for x in scheduler.tickets()]
    assert order == [t[1].ticket_id, t[0].ticket_id, t[2].ticket_id, t[3].ticket_id]
    scheduler.cancel_ticket(t[0].ticket_id)
    assert [x.ticket_id for x in scheduler.tickets()] == [
        t[1].ticket_id,
        t[2].ticket_id,
        t[3].ticket_id,
    ]
    assert scheduler.used_slots == 10


def test_cancel_a_granted_ticket_names_its_lease(scheduler: Scheduler) -> None:
    first = _lease(scheduler.acquire("a", "w", 0, 10, 60.0))
    ticket = _ticket(scheduler.acquire("b", "w", 0, 1, 60.0))
    scheduler.release(first.lease_id)
    lease = _lease(scheduler.poll(ticket.ticket_id))
    with pytest.raises(TicketGranted) as caught:
        scheduler.cancel_ticket(ticket.ticket_id)
    assert caught.value.lease_id == lease.lease_id
    assert caught.value.ticket_id == ticket.ticket_id
    assert f"{lease.lease_id:032x}" in str(caught.value)
    assert scheduler.get(lease.lease_id).state is LeaseState.ACTIVE  # untouched


def test_cancel_unknown_or_bad_ids(scheduler: Scheduler) -> None:
    with pytest.raises(UnknownTicket):
        scheduler.cancel_ticket(12345)
    with pytest.raises(InvalidRequest):
        scheduler.cancel_ticket(-1)
    with pytest.raises(InvalidRequest):
        scheduler.cancel_ticket("00")  # type: ignore[arg-type]


def test_a_cancelled_ticket_stays_cancelled_after_a_restart(
    make_scheduler: SchedulerFactory,
) -> None:
    first = make_scheduler(1)
    _lease(first.acquire("a", "w", 0, 1, 600.0))
    ticket = _ticket(first.acquire("b", "w", 0, 1, 600.0))
    first.cancel_ticket(ticket.ticket_id)
    first.close()
    second = make_scheduler(1)
    assert second.tickets() == []
    with pytest.raises(UnknownTicket):
        second.poll(ticket.ticket_id)
    assert second.audit.verify().ok
