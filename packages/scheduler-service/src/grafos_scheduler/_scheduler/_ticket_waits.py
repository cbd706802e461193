"""Why each waiting ticket waits: a read model over the lease book and the manager.

Tickets are granted in queue order with no overtaking, so a ticket needs room for
itself and every ticket ahead of it. What is free and what pending preemptions will
free count first; what is left is the shortfall, which only leases below the ticket's
priority can cover.
"""

from __future__ import annotations

import enum

import attrs

from .._domain._lease import Ticket
from .._domain._lease_book import LeaseBook
from .._domain._preemption import NonPreemptibleReason, PendingPreemption
from .._scheduler._read_model import ReadModel

__all__ = ["MAX_LISTED_VICTIMS", "TicketWait", "VictimLease", "WaitReason", "explain_waits"]

#: The most eligible victims one explanation lists (their slots are all counted).
MAX_LISTED_VICTIMS = 20


class WaitReason(enum.Enum):
    """Why a ticket is not granted yet."""

    #: It would fit in the free slots, but a ticket ahead of it does not (no overtaking).
    BLOCKED_BEHIND_HEAD = "blocked_behind_head"
    #: Preemptions under way (deferred by markers or holds, each with a deadline) will
    #: free the room it needs.
    AWAITING_PREEMPTIONS = "awaiting_preemptions"
    #: The leases below its priority cannot cover its shortfall: nothing is preempted
    #: for it, and it waits for leases to end.
    INSUFFICIENT_VICTIMS = "insufficient_victims"


@attrs.frozen
class VictimLease:
    """A lease below the ticket's priority that preemption could take."""

    lease_id: int
    job: str
    priority: int
    slots: int
    reasons: frozenset[NonPreemptibleReason]  # empty: preemptible now


@attrs.frozen
class TicketWait:
    """One waiting ticket and why it waits.

    ``needed`` is the slots of this ticket and every ticket ahead of it;
    ``shortfall`` is what ``free`` and ``pending`` (slots that pending preemptions
    will free) leave of it, never below 0. ``eligible_slots`` counts every lease
    below its priority not already pending; ``eligible`` lists the first
    :data:`MAX_LISTED_VICTIMS` of them. ``deferred`` is every pending preemption,
    earliest deadline first. ``blocked_by`` is the head ticket's id when ``reason``
    is BLOCKED_BEHIND_HEAD.
    """

    ticket: Ticket
    position: int  # 1: the head of the queue
    reason: WaitReason
    needed: int
    free: int
    pending: int
    shortfall: int
    eligible_slots: int
    eligible: tuple[VictimLease, ...]
    deferred: tuple[PendingPreemption, ...]
    blocked_by: int | None = None


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
