"""The persistence interface the Scheduler talks to: one commit point, and reads.

A store persists what the domain decided; it decides nothing. Every state change
reaches it as one :class:`Change` (rows, fencing token counters and audit records
already chained by the domain) through :meth:`SchedulerStore.commit`, which writes
all of it in one transaction or none of it. The Scheduler applies a Change to memory
only after ``commit`` returned, so memory never holds what the store refused.

A new store (PostgreSQL) implements :class:`SchedulerStore`. It need not write its own
commit logic: give its transaction the small :class:`StoreTransaction` surface and
call :func:`write_change` inside it, which checks the audit head and the fencing
token counters (raising :class:`StoreConflict`) and writes the rows. A store for
several replicas also checks its leadership epoch in the same transaction.
"""

from __future__ import annotations

from typing import Protocol

from .._domain._audit import AuditRecord
from .._domain._change import Change
from .._domain._errors import StoreConflict
from .._domain._lease import LeaseState
from .._domain._rows import LeaseRow, TicketRow

__all__ = [
    "Change",
    "LeaseRow",
    "SchedulerStore",
    "StoreTransaction",
    "TicketRow",
    "write_change",
]


class StoreTransaction(Protocol):
    """The writes of one atomic unit, as :func:`write_change` uses them.

    Valid only inside the store's transaction. Every method may raise
    :class:`StoreError`; the transaction then rolls back.
    """

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last stored record, read inside the transaction (locked
        where supported); (0, GENESIS_HASH) when there is none."""
        ...

    def fencing_token(self, job: str) -> int:
        """The job's stored fencing token counter (the last token minted), 0 if none."""
        ...

    def set_fencing_token(self, job: str, token: int) -> bool:
        """Store ``token`` as the job's counter if it is above the stored one, in one
        statement; False, writing nothing, if it is not (tokens never go backward)."""
        ...

    def insert_lease(self, row: LeaseRow) -> None:
        """Add a new lease row; an id ever used before is refused (StoreError)."""
        ...

    def update_lease(self, row: LeaseRow) -> None:
        """Overwrite the ACTIVE row with ``row.lease_id``; StoreError if no such ACTIVE
        row exists (an end state never changes again)."""
        ...

    def insert_ticket(self, row: TicketRow) -> None:
        """Add a ticket as given (its ``position`` included)."""
        ...

    def delete_ticket(self, ticket_id: int) -> None:
        """Remove a ticket (it was granted or cancelled)."""
        ...

    def append_audit(self, record: AuditRecord) -> None:
        """Store a finished record as it is (seq, prev_hash and hash included)."""
        ...


def write_change(txn: StoreTransaction, change: Change) -> None:
    """Write ``change`` through ``txn``: the commit logic every store shares.

    Refuses with :class:`StoreConflict` when the stored audit head is not
    :attr:`Change.expected_head` or a fencing token is not above the job's stored
    counter: another writer got there first, and this change was computed from a
    state that is gone. Tokens therefore never go backward. The head is checked before
    anything is written; each token is checked by the write that sets it (one
    statement, not a read and a write), so a refusal can follow a token already set,
    and the store's transaction, which the refusal rolls back, undoes it.
    """
    expected = change.expected_head
    if expected is not None:
        head = txn.audit_head()
        if head != expected:
            raise StoreConflict(
                f"the audit head is seq {head[0]}, but the change follows seq {expected[0]}: "
                "another writer changed the store"
            )
    for job, token in change.fencing_tokens:
        written: object = txn.set_fencing_token(job, token)
        if written is not True:
            if written is not False:
                # A transaction written before the write became the check returns None.
                raise TypeError(
                    f"{type(txn).__name__}.set_fencing_token returned {written!r}; it must "
                    "return True (written) or False (not above the stored counter)"
                )
            raise StoreConflict(
                f"fencing token {token} for job {job!r} is not above the stored "
                f"{txn.fencing_token(job)}"
            )
    for ticket_id in change.deleted_tickets:
        txn.delete_ticket(ticket_id)
    for row in change.inserted_leases:
        txn.insert_lease(row)
    for row in change.updated_leases:
        txn.update_lease(row)
    for ticket in change.inserted_tickets:
        txn.insert_ticket(ticket)
    for record in change.audit:
        txn.append_audit(record)


class SchedulerStore(Protocol):
    """Durable leases, per-job fencing token counters, tickets and the audit chain.

    Implementations must be thread-safe: the executor thread and callers share one.
    Reads return committed state; :meth:`commit` is the only write.
    """

    def commit(self, change: Change) -> None:
        """Write ``change`` in one atomic transaction, or nothing.

        Returns once the change is written and visible to this store's reads; it is
        durable once :meth:`wait_durable` returns (a store may group many commits
        into one transaction and one fsync; a group it then fails to commit stops
        the store with :class:`StoreFailed`). Raises :class:`StoreConflict` if the
        audit head or a fencing token counter is not what the change expects (see
        :func:`write_change`), :class:`StoreFailed` once making commits durable has failed, and
        :class:`StoreError` on any other failure; in each case nothing was written,
        except that a store over a network (PostgreSQL) whose connection fails during
        the COMMIT cannot know: its error says the change may or may not be written.
        """
        ...

    @property
    def durable(self) -> bool:
        """True when every commit written so far is durable (a cheap check)."""
        ...

    def wait_durable(self) -> None:
        """Return once every commit written before the call is durable.

        Called outside the scheduler's lock; one fsync may serve many callers. A
        store whose commits are durable when :meth:`commit` returns returns at once.
        Raises :class:`StoreFailed` if it cannot: the store is then unusable.
        """
        ...

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) when empty."""
        ...

    def fencing_token(self, job: str) -> int:
        """The job's last minted fencing token, 0 if it never had one."""
        ...

    def active_leases(self) -> list[LeaseRow]:
        """Every ACTIVE lease, oldest grant first (read at a restart)."""
        ...

    def tickets(self) -> list[TicketRow]:
        """Every pending ticket, in (priority descending, position) order."""
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

    def close(self) -> None:
        """Release the store's resources; further use raises."""
        ...
