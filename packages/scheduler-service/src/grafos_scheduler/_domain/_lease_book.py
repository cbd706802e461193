"""The LeaseBook: the in-memory book of ACTIVE leases and waiting tickets, and the
decisions that produce :class:`Change` values.

Pure domain code: no I/O, no clock of its own (callers pass ``now`` and ``wall``).
A decision method reads the book and returns a Change; the book itself changes only
in :meth:`LeaseBook.apply`, which the scheduler calls after the store committed that
Change. So memory can never hold what the store refused.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator

import attrs

from .._domain import _audit_entries as entries
from .._domain._audit import GENESIS_HASH, AuditEntry, chain
from .._domain._change import Change
from .._domain._ids import id_hex
from .._domain._lease import LeaseState
from .._domain._preemption import NonPreemptibleReason, PreemptionManager
from .._domain._rows import LeaseRow, TicketRow
from .._domain._work_lost import WorkLost


def unheld(row: LeaseRow) -> LeaseRow:
    """``row`` with its hold gone."""
    return attrs.evolve(
        row, hold_reason=None, hold_set_wall=None, hold_expires_at=None, hold_expires_wall=None
    )


def expiry_cause(row: LeaseRow) -> str:
    """An expiry in words: the end cause of an EXPIRED lease."""
    return f"expired: not renewed within its ttl of {row.ttl:g} s"


class LeaseBook:
    """ACTIVE leases (by id and job, with an expiry heap), tickets in grant order, the
    slots in use and the audit head; not thread-safe (the scheduler's lock guards it).
    """

    def __init__(self, capacity: int, epoch: str, manager: PreemptionManager) -> None:
        self.capacity = capacity
        #: The process's epoch: monotonic readings in rows of another epoch are void.
        self.epoch = epoch
        self.manager = manager
        self.active: dict[int, LeaseRow] = {}
        self.active_by_job: dict[str, int] = {}
        self.used = 0
        self._expiry: list[tuple[float, int]] = []
        self._hold_expiry: list[tuple[float, int]] = []  # (hold_expires_at, lease id)
        self.tickets: dict[int, TicketRow] = {}
        self._order: list[tuple[int, int, int]] = []  # (-priority, position, id)
        self.ticket_by_job: dict[str, int] = {}
        self._next_position = 1
        # The last refusal audited per ticket, (shortfall, eligible): audited on change.
        self._refused: dict[int, tuple[int, int]] = {}
        #: (seq, hash) of the last committed audit record; every Change chains onto it.
        self.head: tuple[int, str] = (0, GENESIS_HASH)

    # -- reading -----------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def ticket_ids(self) -> list[int]:
        """Waiting tickets, in the order they will be granted."""
        return [key[2] for key in self._order]

    def head_ticket(self) -> TicketRow | None:
        return self.tickets[self._order[0][2]] if self._order else None

    def queue_ahead(self, priority: int) -> bool:
        """True when a waiting ticket of this priority or higher must go first."""
        return bool(self._order) and -self._order[0][0] >= priority

    def next_expiry(self) -> float | None:
        return self._expiry[0][0] if self._expiry else None

    def next_hold_expiry(self) -> float | None:
        heap = self._hold_expiry
        while heap:
            at, lease_id = heap[0]
            row = self.active.get(lease_id)
            if row is not None and row.hold_expires_at == at:
                return at
            heapq.heappop(heap)
        return None

    def due_hold_expiry(self, now: float) -> LeaseRow | None:
        """The ACTIVE row whose hold lapses at ``now``, or None (as :meth:`due_expiry`)."""
        at = self.next_hold_expiry()
        if at is None or at > now:
            return None
        return self.active[self._hold_expiry[0][1]]

    def due_expiry(self, now: float) -> LeaseRow | None:
        """The ACTIVE row whose expiry is due at ``now``, or None.

        Heap entries of leases that ended are dropped here, and those of leases renewed
        since move to the new expiry (a renewal pushes nothing, so the heap holds about
        one entry per lease however often they renew). The live entry stays until its
        expiry is applied, so a failed commit is retried.
        """
        heap = self._expiry
        while heap and heap[0][0] <= now:
            expires_at, lease_id = heap[0]
            row = self.active.get(lease_id)
            if row is None:
                heapq.heappop(heap)
            elif row.expires_at == expires_at:
                return row
            else:
                heapq.heapreplace(heap, (row.expires_at, lease_id))
        return None

    # -- memory: changed only by committed Changes --------------------------------

    def apply(self, change: Change) -> None:
        """Make memory what the store holds after ``change`` committed."""
        for row in change.inserted_leases:
            self._add_active(row)
        for row in change.updated_leases:
            old = self.active.get(row.lease_id)
            if row.state is LeaseState.ACTIVE:
                if old is None:
                    self._add_active(row)  # restored at a restart
                else:
                    self.active[row.lease_id] = row
                    if row.expires_at != old.expires_at:
                        heapq.heappush(self._expiry, (row.expires_at, row.lease_id))
                    self._hold_changed(old, row)
            elif old is not None:
                self._drop_active(old)
        for ticket_id in change.deleted_tickets:
            self._drop_ticket(ticket_id)
        for ticket in change.inserted_tickets:
            self.restore_ticket(ticket)
        head = change.new_head
        if head is not None:
            self.head = head

    def restore_ticket(self, row: TicketRow) -> None:
        """Load a ticket the store already holds (at a restart, or once inserted)."""
        self.tickets[row.ticket_id] = row
        self.ticket_by_job[row.job] = row.ticket_id
        bisect.insort(self._order, (-row.priority, row.position, row.ticket_id))
        self._next_position = max(self._next_position, row.position + 1)

    def _add_active(self, row: LeaseRow) -> None:
        self.active[row.lease_id] = row
        self.active_by_job[row.job] = row.lease_id
        self.used += row.slots
        heapq.heappush(self._expiry, (row.expires_at, row.lease_id))
        self.manager.track(row.lease_id, row.priority, row.slots, row.grace)
        if row.held:
            self.manager.mark_non_preemptible(row.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
            if row.hold_expires_at is not None:
                heapq.heappush(self._hold_expiry, (row.hold_expires_at, row.lease_id))

    def _hold_changed(self, old: LeaseRow, row: LeaseRow) -> None:
        # A hold is one OPERATOR_HOLD marker in the manager: set adds it, clear drops it.
        if row.held and not old.held:
            self.manager.mark_non_preemptible(row.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
        elif old.held and not row.held:
            self.manager.clear_non_preemptible(row.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
        if row.hold_expires_at is not None and row.hold_expires_at != old.hold_expires_at:
            heapq.heappush(self._hold_expiry, (row.hold_expires_at, row.lease_id))

    def _drop_active(self, row: LeaseRow) -> None:
        del self.active[row.lease_id]
        del self.active_by_job[row.job]
        self.used -= row.slots
        self.manager.untrack(row.lease_id)

    def _drop_ticket(self, ticket_id: int) -> None:
        row = self.tickets.pop(ticket_id, None)
        if row is None:
            return
        self._order.remove((-row.priority, row.position, ticket_id))
        del self.ticket_by_job[row.job]
        self._refused.pop(ticket_id, None)

    # -- decisions: each returns a Change and leaves memory as it is ---------------

    def _change(
        self,
        wall: float,
        audit: Iterable[AuditEntry],
        *,
        inserted_leases: tuple[LeaseRow, ...] = (),
        updated_leases: tuple[LeaseRow, ...] = (),
        inserted_tickets: tuple[TicketRow, ...] = (),
        deleted_tickets: tuple[int, ...] = (),
        fencing_tokens: tuple[tuple[str, int], ...] = (),
    ) -> Change:
        return Change(
            inserted_leases=inserted_leases,
            updated_leases=updated_leases,
            inserted_tickets=inserted_tickets,
            deleted_tickets=deleted_tickets,
            fencing_tokens=fencing_tokens,
            audit=chain(self.head, wall, audit),
        )

    def grant(
        self,
        *,
        lease_id: int,
        job: str,
        holder: str,
        priority: int,
        slots: int,
        ttl: float,
        ticket_id: int | None,
        last_token: int,
        now: float,
        wall: float,
        grace: float = 0.0,
    ) -> tuple[Change, LeaseRow]:
        """A new ACTIVE lease with the job's next fencing token (``last_token`` + 1)."""
        token = last_token + 1
        row = LeaseRow(
            lease_id=lease_id,
            job=job,
            holder=holder,
            priority=priority,
            slots=slots,
            ttl=ttl,
            fencing_token=token,
            state=LeaseState.ACTIVE,
            epoch=self.epoch,
            granted_at=now,
            expires_at=now + ttl,
            granted_wall=wall,
            expires_wall=wall + ttl,
            ticket_id=ticket_id,
            grace=grace,
        )
        change = self._change(
            wall,
            [entries.granted(row)],
            inserted_leases=(row,),
            deleted_tickets=() if ticket_id is None else (ticket_id,),
            fencing_tokens=((job, token),),
        )
        return change, row

    def queue(
        self,
        *,
        ticket_id: int,
        job: str,
        holder: str,
        priority: int,
        slots: int,
        ttl: float,
        now: float,
        wall: float,
        grace: float = 0.0,
    ) -> tuple[Change, TicketRow]:
        """A waiting ticket, behind every ticket of its priority or higher."""
        row = TicketRow(
            ticket_id=ticket_id,
            job=job,
            holder=holder,
            priority=priority,
            slots=slots,
            ttl=ttl,
            epoch=self.epoch,
            requested_at=now,
            requested_wall=wall,
            position=self._next_position,
            grace=grace,
        )
        return self._change(wall, [entries.queued(row)], inserted_tickets=(row,)), row

    def cancel(self, ticket: TicketRow, wall: float) -> Change:
        return self._change(
            wall, [entries.ticket_cancelled(ticket)], deleted_tickets=(ticket.ticket_id,)
        )

    def renew_in_memory(
        self, row: LeaseRow, now: float, wall: float, checkpoint_wall: float | None = None
    ) -> LeaseRow:
        """Extend an ACTIVE row by its TTL, in memory only: renewals are not audited
        and write nothing durable (the executor checkpoints them). A renewal changes the
        expiry (and the checkpoint time, kept if ``checkpoint_wall`` is None) and
        nothing else; the new row is returned."""
        renewed = row.renewed(self.epoch, now + row.ttl, wall + row.ttl, checkpoint_wall)
        # The expiry heap keeps the older entry: due_expiry moves it when it comes up.
        self.active[row.lease_id] = renewed
        return renewed

    def end(
        self,
        row: LeaseRow,
        state: LeaseState,
        audit: Iterable[AuditEntry],
        wall: float,
        cause: str,
        lost: WorkLost,
    ) -> Change:
        """End an ACTIVE lease in ``state``, with the records that explain it, ``cause``
        (the end in words, stored with the end time) and the work it lost."""
        ended = attrs.evolve(
            row,
            state=state,
            ended_wall=wall,
            end_cause=cause,
            work_lost_records=lost.records,
            work_lost_seconds=round(lost.seconds, 6),
        )
        return self._change(wall, audit, updated_leases=(ended,))

    def release(self, row: LeaseRow, wall: float, lost: WorkLost) -> Change:
        audit = [entries.released(row, lost)]
        return self.end(row, LeaseState.RELEASED, audit, wall, "released", lost)

    def release_cooperatively(self, row: LeaseRow, wall: float, lost: WorkLost) -> Change:
        """The holder of a lease with a grace window released it while its preemption
        was pending: the preemption ends PREEMPTED, cooperatively."""
        audit = [entries.preemption_cooperative(row, lost)]
        cause = f"preempted cooperatively (released in its grace window): {row.preempt_cause}"
        return self.end(row, LeaseState.PREEMPTED, audit, wall, cause, lost)

    def fence(self, row: LeaseRow, wall: float, lost: WorkLost) -> Change:
        audit = [entries.fenced(row, lost)]
        return self.end(row, LeaseState.FENCED, audit, wall, "fenced by an operator", lost)

    def expire(self, row: LeaseRow, wall: float, lost: WorkLost) -> Change:
        audit = [entries.expired(row, lost, while_down=False)]
        return self.end(row, LeaseState.EXPIRED, audit, wall, expiry_cause(row), lost)

    def preempt_now(self, row: LeaseRow, cause: str, wall: float, lost: WorkLost) -> Change:
        """Preempted at once; a request made earlier (pending) was audited already."""
        audit = [entries.preemption_executed(row, cause, lost)]
        if row.preempt_cause is None:
            audit.insert(0, entries.preemption_requested(row, cause))
        return self.end(row, LeaseState.PREEMPTED, audit, wall, f"preempted: {cause}", lost)

    def preempt_due(
        self,
        row: LeaseRow,
        cause: str,
        reasons: Iterable[NonPreemptibleReason],
        *,
        forced: bool,
        wall: float,
        lost: WorkLost,
        grace_expired: bool = False,
    ) -> Change:
        """A deferred preemption carried out (last marker cleared, or forced)."""
        audit = [
            entries.preemption_due(
                row, cause, reasons, lost, forced=forced, grace_expired=grace_expired
            )
        ]
        if forced and reasons:
            held = ", ".join(sorted(r.value for r in reasons))
            end_cause = f"preemption forced at its deadline (still held by {held}): {cause}"
        elif grace_expired:
            end_cause = f"preempted when its grace window ran out: {cause}"
        else:
            end_cause = f"preempted: {cause}"
        return self.end(row, LeaseState.PREEMPTED, audit, wall, end_cause, lost)

    # -- operator holds -------------------------------------------------------------

    def set_hold(
        self, row: LeaseRow, reason: str, expires_in: float | None, *, now: float, wall: float
    ) -> Change:
        """Set (or replace) the lease's hold; it lapses after ``expires_in`` seconds."""
        held = attrs.evolve(
            row,
            hold_reason=reason,
            hold_set_wall=wall,
            hold_expires_at=None if expires_in is None else now + expires_in,
            hold_expires_wall=None if expires_in is None else wall + expires_in,
        )
        audit = [entries.hold_set(row, reason=reason, expires_in=expires_in, replaced=row.held)]
        return self._change(wall, audit, updated_leases=(held,))

    def clear_hold(self, row: LeaseRow, wall: float) -> Change:
        return self._change(wall, [entries.hold_cleared(row)], updated_leases=(unheld(row),))

    def expire_hold(self, row: LeaseRow, wall: float) -> Change:
        audit = [entries.hold_expired(row, while_down=False)]
        return self._change(wall, audit, updated_leases=(unheld(row),))

    def defer(
        self,
        row: LeaseRow,
        cause: str,
        reasons: Iterable[NonPreemptibleReason],
        *,
        deadline: float,
        now: float,
        wall: float,
    ) -> Change:
        """A preemption request that waits for markers, forced at ``deadline``."""
        deadline_wall = wall + (deadline - now)
        pending = attrs.evolve(
            row,
            preempt_cause=cause,
            preempt_requested_wall=wall,
            preempt_deadline_wall=deadline_wall,
        )
        audit = [
            entries.preemption_requested(row, cause),
            entries.preemption_deferred(
                row,
                cause,
                reasons,
                max_defer=self.manager.max_defer,
                deadline_wall=deadline_wall,
            ),
        ]
        return self._change(wall, audit, updated_leases=(pending,))

    def refuse(self, ticket: TicketRow, shortfall: int, wall: float) -> Change | None:
        """The refusal to record for a ticket, or None when nothing changed since the
        last one (refusals are audited once per (shortfall, eligible slots))."""
        eligible = self.manager.eligible_slots(ticket.priority)
        if self._refused.get(ticket.ticket_id) == (shortfall, eligible):
            return None
        entry = entries.preemption_refused(
            ticket,
            shortfall=shortfall,
            eligible=eligible,
            free=self.free,
            pending=self.manager.pending_slots(),
        )
        return self._change(wall, [entry])

    def note_refused(self, ticket: TicketRow, shortfall: int) -> None:
        """Remember the refusal just committed, so an unchanged one is not recorded again."""
        self._refused[ticket.ticket_id] = (shortfall, self.manager.eligible_slots(ticket.priority))

    def forget_refusal(self, ticket_id: int) -> None:
        self._refused.pop(ticket_id, None)

    def shortfalls(self) -> Iterator[tuple[TicketRow, int]]:
        """Each waiting ticket whose turn lacks room, with the slots it lacks.

        Tickets are served in queue order, so ticket k needs room for itself and every
        ticket ahead of it. What is free and what pending preemptions will free count
        first, so slots already being preempted are never asked for twice. Read the
        book again after each step: a preemption may free room.
        """
        demand = 0
        for _neg, _pos, ticket_id in list(self._order):
            ticket = self.tickets.get(ticket_id)
            if ticket is None:
                continue
            demand += ticket.slots
            shortfall = demand - self.free - self.manager.pending_slots()
            if shortfall > 0:
                yield ticket, shortfall

    @staticmethod
    def preemption_cause(ticket: TicketRow) -> str:
        return (
            f"free {ticket.slots} slots for ticket {id_hex(ticket.ticket_id)} "
            f"(job {ticket.job!r}, priority {ticket.priority})"
        )
