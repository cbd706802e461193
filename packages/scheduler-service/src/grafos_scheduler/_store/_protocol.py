"""The persistence interface the Scheduler talks to; SQLite now, PostgreSQL later.

Every state change happens in one :meth:`SchedulerStore.transaction`: the lease row,
the per-job token counter and the audit record commit together or not at all. A
store for several replicas (PostgreSQL) takes row locks inside the same methods; the
Scheduler does not know which store it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs

from .._domain._audit import AuditKind, AuditRecord
from .._domain._lease import LeaseState


@attrs.frozen
class LeaseRow:
    """A lease as stored: monotonic times beside wall-clock ones.

    Monotonic readings mean something only to the process (``epoch``) that took
    them; another process recomputes them from the wall-clock columns.
    """

    lease_id: int
    job: str
    holder: str
    priority: int
    slots: int
    ttl: float
    fencing_token: int
    state: LeaseState
    epoch: str
    granted_at: float
    expires_at: float
    granted_wall: float
    expires_wall: float
    ticket_id: int | None = None
    ended_wall: float | None = None
    preempt_cause: str | None = None
    preempt_requested_wall: float | None = None
    preempt_deadline_wall: float | None = None


@attrs.frozen
class TicketRow:
    """A pending acquire as stored; ``position`` orders tickets of equal priority."""

    ticket_id: int
    job: str
    holder: str
    priority: int
    slots: int
    ttl: float
    epoch: str
    requested_at: float
    requested_wall: float
    position: int = 0  # assigned by the store on insert


class StoreTransaction(Protocol):
    """The writes of one atomic unit; obtained from :meth:`SchedulerStore.transaction`."""

    def id_in_use(self, value: int) -> bool:
        """True if ``value`` was ever a lease id or a ticket id."""
        ...

    def mint_fencing_token(self, job: str) -> int:
        """Increment and return the job's durable fencing token counter."""
        ...

    def insert_lease(self, row: LeaseRow) -> None:
        """Add a new lease row."""
        ...

    def update_lease(self, row: LeaseRow) -> None:
        """Overwrite the row with ``row.lease_id`` (state, expiry, preemption fields)."""
        ...

    def insert_ticket(self, row: TicketRow) -> TicketRow:
        """Add a ticket; returns it with its ``position`` assigned."""
        ...

    def delete_ticket(self, ticket_id: int) -> None:
        """Remove a ticket (it was granted or cancelled)."""
        ...

    def active_leases(self) -> list[LeaseRow]:
        """Every ACTIVE lease, read inside the transaction (locked where supported)."""
        ...

    def tickets(self) -> list[TicketRow]:
        """Every pending ticket, in (priority descending, position) order."""
        ...

    def append_audit(
        self,
        *,
        time: float,
        kind: AuditKind,
        lease_id: int | None,
        job: str | None,
        data: Mapping[str, Any],
    ) -> AuditRecord:
        """Chain a record onto the current head and store it."""
        ...


class SchedulerStore(Protocol):
    """Durable leases, per-job fencing token counters, tickets and the audit chain.

    Implementations must be thread-safe: the executor thread and callers share one.
    ``transaction()`` commits when the block exits normally and rolls back on any
    exception, so audit and state never diverge.
    """

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """One atomic, durable unit of writes (``BEGIN IMMEDIATE`` on SQLite)."""
        ...

    def get_lease(self, lease_id: int) -> LeaseRow | None:
        """The lease row, or None."""
        ...

    def lease_for_ticket(self, ticket_id: int) -> LeaseRow | None:
        """The lease a ticket became, or None."""
        ...

    def list_leases(self, state: LeaseState | None = None) -> list[LeaseRow]:
        """Lease rows, optionally of one state, oldest grant first."""
        ...

    def list_leases_page(
        self,
        *,
        state: LeaseState | None = None,
        holder: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[LeaseRow]:
        """At most ``limit`` lease rows in grant order (``granted_wall``, then id).

        Optionally of one ``state`` and one ``holder``; ``after`` is the id of the last
        lease of the previous page (the page starts after it, whatever its state now).
        An ``after`` that names no lease gives an empty page.
        """
        ...

    def count_leases_by_state(self) -> dict[LeaseState, int]:
        """How many leases are in each state (states with none may be left out).

        A cheap aggregate, for metrics: it reads no lease rows.
        """
        ...

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Records with seq > ``after_seq`` in seq order, at most ``limit``."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) when empty."""
        ...

    def close(self) -> None:
        """Release the store's resources; further use raises."""
        ...
