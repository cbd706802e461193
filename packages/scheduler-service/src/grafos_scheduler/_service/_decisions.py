"""The hot lease calls, decided: acquire, renew, batch renewal and release.

Each ``*_decision`` checks the call, asks the policy, calls the scheduler once
(``wait=False``: the change is written, not yet durable) and returns the function that
builds the answer; the ``async`` form answers once durable
(:meth:`ServiceContext.answer`). The Litestar routes (:mod:`._routes`) and the hot
path's two doors (:mod:`._hot_path`) share them.
"""

from __future__ import annotations

import logging

from .._domain._errors import (
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    SchedulerError,
)
from .._domain._lease import Lease
from .._domain._preemption import NonPreemptibleReason
from .._domain._renewal import Renewed
from .._wire._models import (
    AcquireRequest,
    AcquireResult,
    ErrorBody,
    LeaseView,
    ReleaseRequest,
    RenewalEntry,
    RenewalsResult,
    RenewRequest,
    RenewResult,
)
from .._wire._parsing import FieldError, parse_id
from . import _policy
from ._auth import Principal
from ._context import Decision, ServiceContext
from ._errors import entry_error
from ._events import event
from ._views import renew_result

__all__ = [
    "acquire_decision",
    "acquire_lease",
    "release_decision",
    "release_lease",
    "renew_decision",
    "renew_lease",
    "renew_leases",
    "renewals_decision",
]


async def acquire_lease(
    ctx: ServiceContext, principal: Principal, body: AcquireRequest
) -> tuple[int, AcquireResult]:
    """``POST /v1/leases``: 201 and the lease, or 202 and the ticket that waits."""
    return await ctx.answer(lambda: acquire_decision(ctx, principal, body))


def acquire_decision(
    ctx: ServiceContext, principal: Principal, body: AcquireRequest
) -> Decision[tuple[int, AcquireResult]]:
    """The acquire decided (see :meth:`ServiceContext.answer`)."""
    # On the event loop: the decision is in memory and one SQLite write under the
    # scheduler's lock; the fsync is the group's (one thread for every request), and
    # the answer waits for it. The audit tail logs the decision (one line).
    try:
        grace = ctx.scheduler.check_grace(body.grace)
    except InvalidRequest as exc:
        raise FieldError("grace", str(exc)) from None
    try:
        outcome = ctx.scheduler.acquire(
            body.job,
            principal.name,
            body.priority,
            body.slots,
            body.ttl,
            grace=grace,
            wait=False,
        )
    except JobAlreadyLeased as exc:
        raise _policy.job_conflict(ctx.scheduler, principal, exc) from None
    return lambda: ((201 if isinstance(outcome, Lease) else 202), ctx.result(outcome))


async def renew_lease(
    ctx: ServiceContext, principal: Principal, lease_id: str, body: RenewRequest
) -> RenewResult:
    """``POST /v1/leases/{lease_id}/renew``."""
    return await ctx.answer(lambda: renew_decision(ctx, principal, lease_id, body))


def renew_decision(
    ctx: ServiceContext, principal: Principal, lease_id: str, body: RenewRequest
) -> Decision[RenewResult]:
    """The renewal decided (see :meth:`ServiceContext.answer`)."""
    # In memory, on the event loop, with no thread hop. The answer may still reveal
    # a change that is not durable yet (an expiry, a pending preemption): then it
    # waits for the group fsync like any other answer.
    lid = parse_id(lease_id, "lease_id")
    reasons = _policy.reported_reasons(principal, body.reasons)
    try:
        # A batch of one: the answer needs the expiry, not a whole Lease.
        [renewal] = ctx.scheduler.renew_expiries(
            [(lid, body.fencing_token, reasons, body.checkpoint_age)],
            holder=_policy.holder_scope(principal),
            wait=False,
        )
        if isinstance(renewal, SchedulerError):
            raise renewal
    except (LeaseExpired, LeaseNotActive, FencingTokenMismatch) as exc:
        event(
            "renew_refused",
            level=logging.WARNING,
            lease_id=lease_id,
            principal=principal.name,
            reason=type(exc).__name__,
        )
        raise
    return lambda: renew_result(renewal, renewal.pending, ctx.now())


async def renew_leases(
    ctx: ServiceContext, principal: Principal, entries: list[RenewalEntry | FieldError]
) -> RenewalsResult:
    """``POST /v1/renewals``: one result per entry, in order."""
    return await ctx.answer(lambda: renewals_decision(ctx, principal, entries))


def renewals_decision(
    ctx: ServiceContext, principal: Principal, entries: list[RenewalEntry | FieldError]
) -> Decision[RenewalsResult]:
    """The batch renewal decided (see :meth:`ServiceContext.answer`)."""
    # Each entry is checked and authorised as a single renew would be; one bad entry
    # is an error object in its place and never fails the others.
    results: list[RenewResult | ErrorBody | None] = [None] * len(entries)
    calls: list[tuple[int, int, list[NonPreemptibleReason], float | None]] = []
    slots: list[int] = []
    for i, entry in enumerate(entries):
        try:
            if isinstance(entry, FieldError):
                raise entry
            reasons = _policy.reported_reasons(principal, entry.reasons)
            # The parser checked the id against ID_PATTERN: 32 lowercase hex digits.
            lid = int(entry.lease_id, 16)
            calls.append((lid, entry.fencing_token, reasons, entry.checkpoint_age))
            slots.append(i)
        except FieldError as exc:
            field = exc.field or ""
            if not field.startswith("leases["):
                field = f"leases[{i}].{field}" if field else f"leases[{i}]"
            results[i] = entry_error(principal, FieldError(field, exc.message))
    renewed = (
        ctx.scheduler.renew_expiries(calls, holder=_policy.holder_scope(principal), wait=False)
        if calls
        else []
    )

    def finish() -> RenewalsResult:
        now = ctx.now()
        for i, outcome in zip(slots, renewed, strict=True):
            if isinstance(outcome, Renewed):
                results[i] = renew_result(outcome, outcome.pending, now)
            else:
                results[i] = entry_error(principal, outcome)
        refused = [r for r in results if isinstance(r, ErrorBody)]
        if refused:
            event(
                "renewals_refused",
                level=logging.WARNING,
                principal=principal.name,
                refused=len(refused),
                of=len(results),
            )
        return RenewalsResult(results=[r for r in results if r is not None])

    return finish


async def release_lease(
    ctx: ServiceContext, principal: Principal, lease_id: str, body: ReleaseRequest
) -> LeaseView:
    """``POST /v1/leases/{lease_id}/release``."""
    return await ctx.answer(lambda: release_decision(ctx, principal, lease_id, body))


def release_decision(
    ctx: ServiceContext, principal: Principal, lease_id: str, body: ReleaseRequest
) -> Decision[LeaseView]:
    """The release decided (see :meth:`ServiceContext.answer`)."""
    # As acquire: decided on the event loop, answered once durable; the audit tail
    # logs the release with its work lost (one line per decision).
    lid = parse_id(lease_id, "lease_id")
    released = ctx.scheduler.release(
        lid,
        holder=_policy.holder_scope(principal),
        work_lost_records=body.work_lost_records,
        work_lost_seconds=body.work_lost_seconds,
        wait=False,
    )
    return lambda: ctx.lease_view(released)
