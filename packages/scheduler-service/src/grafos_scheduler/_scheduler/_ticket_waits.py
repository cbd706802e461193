"""Why each waiting ticket waits: a read model over the lease book and the manager.

Tickets are granted in queue order with no overtaking, so a ticket needs room for
itself and every ticket ahead of it. What is free and what pending preemptions will
free count first; what is left is the shortfall, which only leases below the ticket's
priority can cover.
"""

from __future__ import annotations

from .._domain._lease_book import LeaseBook
from .._domain._ticket_wait import MAX_LISTED_VICTIMS, TicketWait, VictimLease, WaitReason
from .._scheduler._read_model import ReadModel

__all__ = ["explain_waits"]


def explain_waits(book: LeaseBook, read: ReadModel) -> list[TicketWait]:
    """Every waiting ticket in queue order, with its explanation (reads only)."""
    manager = book.manager
    free = book.free
    pending = manager.pending_slots()
    deferred = tuple(manager.pending_all())
    head = book.head_ticket()
    waits: list[TicketWait] = []
    needed = 0
    for position, ticket_id in enumerate(book.ticket_ids(), start=1):
        row = book.tickets[ticket_id]
        needed += row.slots
        shortfall = max(0, needed - free - pending)
        eligible_slots = manager.eligible_slots(row.priority)
        blocked_by = None
        if position > 1 and row.slots <= free:
            reason = WaitReason.BLOCKED_BEHIND_HEAD
            assert head is not None
            blocked_by = head.ticket_id
        elif shortfall > eligible_slots:
            reason = WaitReason.INSUFFICIENT_VICTIMS
        else:
            reason = WaitReason.AWAITING_PREEMPTIONS
        eligible = tuple(
            VictimLease(lease_id, book.active[lease_id].job, priority, slots, reasons)
            for lease_id, priority, slots, reasons in manager.eligible_leases(
                row.priority, MAX_LISTED_VICTIMS
            )
            if lease_id in book.active
        )
        waits.append(
            TicketWait(
                ticket=read.ticket(row),
                position=position,
                reason=reason,
                needed=needed,
                free=free,
                pending=pending,
                shortfall=shortfall,
                eligible_slots=eligible_slots,
                eligible=eligible,
                deferred=deferred,
                blocked_by=blocked_by,
            )
        )
    return waits
