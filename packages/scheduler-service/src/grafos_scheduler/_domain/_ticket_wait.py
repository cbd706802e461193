"""Why a ticket waits: the values a ticket's explanation is made of (no I/O)."""

from __future__ import annotations

import enum

import attrs

from .._domain._lease import Ticket
from .._domain._preemption import NonPreemptibleReason, PendingPreemption

__all__ = ["MAX_LISTED_VICTIMS", "TicketWait", "VictimLease", "WaitReason"]

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
