"""Restart recovery: what a scheduler starting on a store must write and load.

The store's ACTIVE leases come back with times rebased onto this process's
monotonic clock, those that lapsed while it was down are expired, and the (re)start
is audited: all of it one Change. A capacity too small for what the store holds is
refused before anything is written.
"""

from __future__ import annotations

import attrs

from .._domain import _audit_entries as entries
from .._domain._audit import chain
from .._domain._change import Change
from .._domain._errors import InvalidRequest
from .._domain._lease import LeaseState
from .._domain._preemption import PreemptionManager
from .._domain._rows import LeaseRow, TicketRow
from .._store._protocol import SchedulerStore


@attrs.frozen
class Restart:
    """The Change a start commits, and the tickets to load once it committed."""

    change: Change
    tickets: tuple[TicketRow, ...]
    head: tuple[int, str]


def check_restored_capacity(
    capacity: int, rows: list[LeaseRow], tickets: list[TicketRow], wall: float
) -> None:
    """Refuse a capacity below the slots the store's unexpired leases hold, or below
    its widest pending ticket."""
    held = sum(r.slots for r in rows if r.expires_wall > wall)
    if held > capacity:
        raise InvalidRequest(
            f"capacity {capacity} is smaller than the {held} slots held by the "
            f"ACTIVE leases in the store; restart with a capacity of at least {held}"
        )
    widest = max((t.slots for t in tickets), default=0)
    if widest > capacity:
        raise InvalidRequest(
            f"capacity {capacity} is smaller than a pending ticket of {widest} "
            f"slots in the store; restart with a capacity of at least {widest}"
        )


def plan_restart(
    store: SchedulerStore,
    *,
    capacity: int,
    max_defer: float,
    epoch: str,
    now: float,
    wall: float,
) -> Restart:
    """Read the store and decide the start's Change; writes nothing."""
    head = store.audit_head()
    rows = store.active_leases()
    tickets = store.tickets()
    check_restored_capacity(capacity, rows, tickets, wall)
    audit = [
        entries.started(
            first=head[0] == 0,
            capacity=capacity,
            max_defer=max_defer,
            active_leases=len(rows),
            pending_tickets=len(tickets),
        )
    ]
    updated: list[LeaseRow] = []
    for row in rows:
        if row.expires_wall <= wall:
            updated.append(attrs.evolve(row, state=LeaseState.EXPIRED, ended_wall=wall))
            audit.append(entries.expired(row, while_down=True))
            continue
        # Remaining time comes from the wall clock; the old monotonic one is void.
        # It never exceeds a fresh TTL, whatever a clock did across the restart.
        updated.append(
            attrs.evolve(
                row,
                epoch=epoch,
                granted_at=now - (wall - row.granted_wall),
                expires_at=now + min(row.expires_wall - wall, row.ttl),
            )
        )
    rebased = tuple(attrs.evolve(t, requested_at=now - (wall - t.requested_wall)) for t in tickets)
    change = Change(updated_leases=tuple(updated), audit=chain(head, wall, audit))
    return Restart(change, rebased, head)


def restore_pending(
    manager: PreemptionManager, rows: list[LeaseRow], *, now: float, wall: float
) -> None:
    """Give the manager back the preemptions that were pending when the store was
    last written, with deadlines rebased and never beyond ``max_defer`` from now."""
    for row in rows:
        if row.preempt_cause is None:
            continue
        assert row.preempt_requested_wall is not None
        assert row.preempt_deadline_wall is not None
        manager.restore_pending(
            row.lease_id,
            row.preempt_cause,
            now - (wall - row.preempt_requested_wall),
            now + min(row.preempt_deadline_wall - wall, manager.max_defer),
        )
