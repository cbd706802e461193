"""Read models: rows turned into the Lease and Ticket values callers see, and pages.

Reads never write. A row taken by another process (another ``epoch``) has its
monotonic times recomputed from its wall-clock ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._domain._clock import Clock
from .._domain._errors import InvalidRequest
from .._domain._ids import id_hex
from .._domain._lease import Hold, Lease, LeaseState, Ticket
from .._domain._lease_book import expiry_cause
from .._domain._rows import LeaseRow, TicketRow
from .._store._protocol import SchedulerStore

#: The most leases one :meth:`Scheduler.lease_page` returns.
MAX_LEASE_PAGE = 1000


class ReadModel:
    """Turns rows into values for one scheduler (its clock and epoch)."""

    __slots__ = ("_clock", "_epoch", "_store")

    def __init__(self, store: SchedulerStore, clock: Clock, epoch: str) -> None:
        self._store = store
        self._clock = clock
        self._epoch = epoch

    def lease(self, row: LeaseRow) -> Lease:
        now, wall = self._clock.monotonic(), self._clock.wall()
        if row.epoch == self._epoch:
            granted_at, expires_at = row.granted_at, row.expires_at
        else:
            granted_at = now - (wall - row.granted_wall)
            expires_at = now + (row.expires_wall - wall)
        ended_at = None if row.ended_wall is None else now - (wall - row.ended_wall)
        hold = None
        if row.state is LeaseState.ACTIVE and row.hold_reason is not None:
            assert row.hold_set_wall is not None
            hold_expires_at = row.hold_expires_at
            if row.hold_expires_wall is not None and (
                row.epoch != self._epoch or hold_expires_at is None
            ):
                hold_expires_at = now + (row.hold_expires_wall - wall)
            hold = Hold(row.hold_reason, now - (wall - row.hold_set_wall), hold_expires_at)
        return Lease(
            lease_id=row.lease_id,
            job=row.job,
            holder=row.holder,
            priority=row.priority,
            slots=row.slots,
            ttl=row.ttl,
            fencing_token=row.fencing_token,
            state=row.state,
            granted_at=granted_at,
            expires_at=expires_at,
            ended_at=ended_at,
            end_cause=row.end_cause,
            hold=hold,
            grace=row.grace,
            work_lost_records=row.work_lost_records,
            work_lost_seconds=row.work_lost_seconds,
        )

    def lease_as_of(self, row: LeaseRow, now: float) -> Lease:
        """The lease as it is at ``now``: an ACTIVE row past its expiry reads EXPIRED
        (the executor commits that expiry; the read does not)."""
        if row.state is LeaseState.ACTIVE and now >= row.expires_at:
            lapsed = self.lease(row)
            return attrs.evolve(
                lapsed,
                state=LeaseState.EXPIRED,
                ended_at=lapsed.expires_at,
                end_cause=expiry_cause(row),
                hold=None,
            )
        return self.lease(row)

    @staticmethod
    def ticket(row: TicketRow) -> Ticket:
        return Ticket(
            ticket_id=row.ticket_id,
            job=row.job,
            holder=row.holder,
            priority=row.priority,
            slots=row.slots,
            ttl=row.ttl,
            requested_at=row.requested_at,
            grace=row.grace,
        )

    def page(
        self,
        *,
        state: LeaseState | None,
        holder: str | None,
        after: int | None,
        limit: int,
        active: Mapping[int, LeaseRow],
    ) -> tuple[list[Lease], int | None]:
        """One keyset page from the store, and the cursor of the next (None at the end).

        ``active`` is memory's ACTIVE rows: their expiries are newer than the store's
        (renewals are checkpointed, not written one by one).
        """
        if after is not None:
            cursor = self._store.get_lease(after)
            if cursor is None or (holder is not None and cursor.holder != holder):
                raise InvalidRequest(
                    f"after {id_hex(after)} is not the id of a lease from an earlier page"
                )
        rows = self._store.list_leases_page(
            state=state, holder=holder, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        leases = [self.lease(active.get(r.lease_id, r)) for r in rows[:limit]]
        return leases, leases[-1].lease_id if more else None
