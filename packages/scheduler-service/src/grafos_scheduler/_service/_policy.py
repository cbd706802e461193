"""Authorisation, decided here and nowhere else: who may act on which lease or ticket.

- The admin may act on every lease and ticket, and alone may preempt, fence and read
  the audit log (:func:`require_admin`).
- A worker may act only on the leases it holds and the tickets it requested. Every
  lease and ticket call carries :func:`holder_scope` as its ``holder=``, so the
  scheduler checks the holder in the same call, under the same lock, before anything
  changes; another holder's lease or ticket raises ``NotLeaseHolder`` (403).
- A renewal reports only ``checkpoint_in_progress`` (:func:`reported_reasons`), the
  admin's too: an operator hold is a resource of its own (``/v1/leases/{id}/holds``),
  so that no renewal can set or clear it.
- A worker told that a job is taken learns nothing more (:func:`job_conflict`): the
  id of the lease or ticket that holds it is its holder's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._domain._errors import JobAlreadyLeased, SchedulerError
from .._domain._preemption import NonPreemptibleReason
from .._scheduler._scheduler import Scheduler
from .._wire._models import ReasonName
from .._wire._parsing import FieldError
from ._auth import Principal

__all__ = [
    "ADMIN_ONLY",
    "Forbidden",
    "JobConflict",
    "holder_scope",
    "job_conflict",
    "reported_reasons",
    "require_admin",
]

# What a worker may report of its own accord.
_WORKER_REASONS = frozenset({NonPreemptibleReason.CHECKPOINT_IN_PROGRESS})


class Forbidden(Exception):
    """A principal acting on what it may not touch (403)."""


class JobConflict(Exception):
    """A job that holds a lease or a ticket another principal owns (409, no id shown)."""


#: A route ``opt`` for the admin's routes: refused (403) before the body is parsed, so
#: a worker learns nothing of what such a route accepts.
ADMIN_ONLY = {"admin_only": True}


def check_route(opt: Mapping[str, object], principal: Principal | None) -> None:
    """Refuse anyone but the admin on a route whose ``opt`` has :data:`ADMIN_ONLY`."""
    if opt.get("admin_only") and principal is not None:
        require_admin(principal)


def holder_scope(principal: Principal) -> str | None:
    """The ``holder=`` of ``principal``'s scheduler calls: None (any) for the admin."""
    return None if principal.is_admin else principal.name


def require_admin(principal: Principal) -> None:
    """Refuse anyone but the admin."""
    if not principal.is_admin:
        raise Forbidden(f"principal {principal.name!r} is not the admin")


def reported_reasons(
    principal: Principal, reasons: Sequence[ReasonName]
) -> list[NonPreemptibleReason]:
    """The in-flight reasons of a renewal: only what a worker is doing."""
    if not reasons:
        return []
    parsed = [NonPreemptibleReason(r) for r in reasons]
    for i, reason in enumerate(parsed):
        if reason not in _WORKER_REASONS:
            who = "the admin" if principal.is_admin else "a worker"
            raise FieldError(
                f"reasons[{i}]",
                f"a renewal by {who} may report only checkpoint_in_progress, not "
                f"{reason.value!r}; set a hold with POST /v1/leases/{{lease_id}}/holds",
            )
    return parsed


def job_conflict(scheduler: Scheduler, principal: Principal, exc: JobAlreadyLeased) -> Exception:
    """The 409 for ``exc``: its lease or ticket id only for the admin or its holder.

    Another principal learns that the job is taken, not the id: with an id it could
    poll, renew or release nothing (403), but the id is the holder's business. Only
    this refusal costs a second scheduler call (a read, under the holder check).
    """
    holder = holder_scope(principal)
    try:
        if exc.pending:
            scheduler.poll(exc.lease_id, holder=holder)  # the ticket, or its lease
        else:
            scheduler.get(exc.lease_id, holder=holder)
    except SchedulerError:  # another holder's; or cancelled or ended by now
        what = "a pending ticket" if exc.pending else "an active lease"
        return JobConflict(f"job {exc.job!r} already has {what}, held by another principal")
    return exc
