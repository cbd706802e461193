"""Authorisation, decided here and nowhere else: who may act on which lease or ticket.

- The admin may act on every lease and ticket, and alone may preempt, fence and read
  the audit log.
- A worker may act only on the leases it holds and the tickets it requested, and may
  report only ``checkpoint_in_progress`` when it renews: an operator hold is the
  operator's to set.
- A worker told that a job is taken learns nothing more: the id of the lease or ticket
  that holds it is its holder's business.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .._domain._errors import JobAlreadyLeased, SchedulerError
from .._domain._lease import Lease, Ticket
from .._domain._preemption import NonPreemptibleReason
from .._scheduler._scheduler import Scheduler
from .._wire._models import FieldError, ReasonName, format_id
from ._auth import Principal
from ._events import event

__all__ = [
    "Forbidden",
    "JobConflict",
    "holder_scope",
    "job_conflict",
    "lease_for",
    "reported_reasons",
    "require_admin",
    "ticket_for",
]

# What a worker may report of its own accord.
_WORKER_REASONS = frozenset({NonPreemptibleReason.CHECKPOINT_IN_PROGRESS})


class Forbidden(Exception):
    """A principal acting on what it may not touch (403)."""


class JobConflict(Exception):
    """A job that holds a lease or a ticket another principal owns (409, no id shown)."""


def require_admin(principal: Principal) -> None:
    """Refuse anyone but the admin."""
    if not principal.is_admin:
        raise Forbidden(f"principal {principal.name!r} is not the admin")


def holder_scope(principal: Principal) -> str | None:
    """The holder whose leases and tickets ``principal`` may touch: None means any."""
    return None if principal.is_admin else principal.name


def lease_for(scheduler: Scheduler, principal: Principal, lease_id: int) -> Lease:
    """The lease, if ``principal`` may act on it (UnknownLease, :class:`Forbidden`)."""
    lease = scheduler.get(lease_id)
    if not principal.may_act_on(lease.holder):
        event(
            "forbidden",
            level=logging.WARNING,
            principal=principal.name,
            lease_id=format_id(lease_id),
            job=lease.job,
        )
        raise Forbidden(f"principal {principal.name!r} does not hold lease {format_id(lease_id)}")
    return lease


def ticket_for(scheduler: Scheduler, principal: Principal, ticket_id: int) -> Lease | Ticket:
    """The ticket (or the lease it became), if ``principal`` requested it or is the admin."""
    outcome = scheduler.poll(ticket_id)
    if not principal.may_act_on(outcome.holder):
        raise Forbidden(
            f"principal {principal.name!r} did not request ticket {format_id(ticket_id)}"
        )
    return outcome


def reported_reasons(
    principal: Principal, reasons: Sequence[ReasonName]
) -> list[NonPreemptibleReason]:
    """The in-flight reasons of a renewal, if ``principal`` may report them."""
    parsed = [NonPreemptibleReason(r) for r in reasons]
    if not principal.is_admin:
        for i, reason in enumerate(parsed):
            if reason not in _WORKER_REASONS:
                raise FieldError(
                    f"reasons[{i}]",
                    f"a worker may report only checkpoint_in_progress, not {reason.value!r}",
                )
    return parsed


def job_conflict(scheduler: Scheduler, principal: Principal, exc: JobAlreadyLeased) -> Exception:
    """The 409 for ``exc``: its lease or ticket id only for the admin or its holder.

    Another principal learns that the job is taken, not the id: with an id it could
    poll, renew or release nothing (403), but the id is the holder's business.
    """
    holder: str | None = None
    try:
        if exc.pending:
            holder = scheduler.poll(exc.lease_id).holder  # the ticket, or its lease
        else:
            holder = scheduler.get(exc.lease_id).holder
    except SchedulerError:
        pass  # cancelled or unknown by now: say no more than to a stranger
    if holder is not None and principal.may_act_on(holder):
        return exc
    what = "a pending ticket" if exc.pending else "an active lease"
    return JobConflict(f"job {exc.job!r} already has {what}, held by another principal")
