"""A Change: everything one decision writes, applied in one store transaction.

The lease book decides and returns a Change; the scheduler commits it to the store
and only then applies it to memory. Nothing else writes.
"""

from __future__ import annotations

import attrs

from .._domain._audit import AuditRecord
from .._domain._rows import LeaseRow, TicketRow


@attrs.frozen
class Change:
    """The rows to write and the finished audit records to append, as one unit.

    - ``inserted_leases``: new ACTIVE lease rows (grants).
    - ``updated_leases``: rows that overwrite ACTIVE rows of the same id (renewals,
      ends, pending preemptions, restart rebasing). An end state never goes back.
    - ``inserted_tickets`` / ``deleted_tickets``: queued and granted or cancelled.
    - ``fencing_tokens``: ``(job, token)`` pairs; each is the job's new counter value
      and must be above the stored one (tokens never go backward).
    - ``audit``: records already chained (seq, prev_hash, hash) onto the head the
      change was computed from (:attr:`expected_head`).
    """

    inserted_leases: tuple[LeaseRow, ...] = ()
    updated_leases: tuple[LeaseRow, ...] = ()
    inserted_tickets: tuple[TicketRow, ...] = ()
    deleted_tickets: tuple[int, ...] = ()
    fencing_tokens: tuple[tuple[str, int], ...] = ()
    audit: tuple[AuditRecord, ...] = ()

    @property
    def expected_head(self) -> tuple[int, str] | None:
        """The (seq, hash) the store's audit head must be for this change to apply;
        None when the change appends no record."""
        if not self.audit:
            return None
        first = self.audit[0]
        return first.seq - 1, first.prev_hash

    @property
    def new_head(self) -> tuple[int, str] | None:
        """The audit head once the change is committed; None if it appends nothing."""
        if not self.audit:
            return None
        last = self.audit[-1]
        return last.seq, last.hash
