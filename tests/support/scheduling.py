"""Factories and small readers for tests that drive a Scheduler directly."""

from __future__ import annotations

from collections.abc import Callable

from grafos_scheduler import Lease, Scheduler, Ticket

# `make_scheduler` (tests/scheduler/conftest.py): Scheduler(capacity, *, max_defer=...) on one
# SQLite file and one ManualClock; a restart is: close one, make another.
SchedulerFactory = Callable[..., Scheduler]


def as_lease(result: Lease | Ticket) -> Lease:
    """The acquire or poll result, which the test expects to be a granted lease."""
    assert isinstance(result, Lease), result
    return result


def as_ticket(result: Lease | Ticket) -> Ticket:
    """The acquire or poll result, which the test expects to be a waiting ticket."""
    assert isinstance(result, Ticket), result
    return result


def audit_kinds(scheduler: Scheduler) -> list[str]:
    """The kind of every audit record so far, oldest first."""
    return [r.kind for r in scheduler.audit.records(after_seq=0, limit=10_000)]


def churn(scheduler: Scheduler, holder: str, n: int) -> list[str]:
    """Grant and release ``n`` leases for ``holder``; their ids in grant order, as hex."""
    ids = []
    for i in range(n):
        lease = as_lease(scheduler.acquire(f"{holder}-{i}", holder, 0, 1, 60.0))
        scheduler.release(lease.lease_id)
        ids.append(f"{lease.lease_id:032x}")
    return ids
