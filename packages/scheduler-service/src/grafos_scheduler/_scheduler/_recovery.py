"""Restart recovery: what a scheduler starting on a store must write and load.

The store's ACTIVE leases come back with times rebased onto this process's
monotonic clock, and the (re)start is audited: all of it one Change. A capacity too
small for what the store holds is refused before anything is written.

Every restored ACTIVE lease gets a fresh TTL counted from the restart, as etcd's
leases do when a leader takes over. Renewals live in memory and reach the store only
at checkpoints, so the stored expiry may be older than the last "renewed" a holder
was told; a fresh TTL is the only expiry that cannot cut a lease short. Fencing keeps
the longer life harmless: a holder that is gone simply lets it expire.
"""

from __future__ import annotations

import attrs

from .._domain import _audit_entries as entries
from .._domain._audit import chain
from .._domain._change import Change
from .._domain._errors import InvalidRequest
from .._domain._lease_book import unheld
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
    """Refuse a capacity below the slots the store's ACTIVE leases hold (all of them
    come back), or below its widest pending ticket."""
    held = sum(r.slots for r in rows)
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
    # The old monotonic readings are void; the grant time comes from the wall clock.
    # A hold's lifetime is wall-clock time: one that lapsed while down is audited.
    updated: list[LeaseRow] = []
    for row in rows:
        if row.hold_expires_wall is not None and row.hold_expires_wall <= wall:
            audit.append(entries.hold_expired(row, while_down=True))
            row = unheld(row)
        updated.append(
            attrs.evolve(
                row,
                epoch=epoch,
                granted_at=now - (wall - row.granted_wall),
                expires_at=now + row.ttl,
                expires_wall=wall + row.ttl,
                hold_expires_at=(
                    None if row.hold_expires_wall is None else now + (row.hold_expires_wall - wall)
                ),
            )
        )
    rebased = tuple(attrs.evolve(t, requested_at=now - (wall - t.requested_wall)) for t in tickets)
    change = Change(updated_leases=tuple(updated), audit=chain(head, wall, audit))
    return Restart(change, rebased, head)


def restore_pending(
    manager: PreemptionManager,
    rows: list[LeaseRow],
    *,
    now: float,
    wall: float,
    hold: bool = False,
) -> None:
    """Give the manager back the preemptions that were pending when the store was
    last written, with deadlines rebased and never beyond ``max_defer`` from now.

    ``hold`` (a change of leader): each waits for its original deadline, or for its
    holder's next renewal to report no flush in flight, as the markers it had are
    still held by live workers; otherwise each is carried out on the first tick.
    A lease with a grace window keeps what is left of it (the request plus the grace),
    and its bound stays the request plus ``max_defer``.
    """
    for row in rows:
        if row.preempt_cause is None:
            continue
        assert row.preempt_requested_wall is not None
        assert row.preempt_deadline_wall is not None
        requested_at = now - (wall - row.preempt_requested_wall)
        latest = now + manager.max_defer
        grace_deadline = None
        if row.grace:
            deadline = min(requested_at + manager.max_defer, latest)
            grace_deadline = min(requested_at + row.grace, deadline)
        else:
            deadline = now + min(row.preempt_deadline_wall - wall, manager.max_defer)
        manager.restore_pending(
            row.lease_id,
            row.preempt_cause,
            requested_at,
            deadline,
            grace_deadline,
            ready=not hold,
        )
