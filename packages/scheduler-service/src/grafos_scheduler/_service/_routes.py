"""The v1 route handlers: each parses, asks the policy, calls the scheduler, builds a view.

Bodies arrive decoded (:mod:`._body`); who may do what is :mod:`._policy`'s to say;
refusals become error bodies in :mod:`._errors`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import attrs
from litestar import Request, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from .._domain._clock import Clock
from .._domain._errors import (
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    SchedulerError,
    StoreFailed,
)
from .._domain._lease import Lease, LeaseState, Ticket
from .._domain._preemption import NonPreemptibleReason, PreemptionOutcome
from .._domain._renewal import Renewed
from .._scheduler._scheduler import MAX_LEASE_PAGE, Scheduler
from .._wire._models import (
    ID_PATTERN,
    AcquireRequest,
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditVerificationView,
    ErrorBody,
    FieldError,
    Health,
    HoldRequest,
    LeaseList,
    LeaseStateName,
    LeaseView,
    PreemptionDecisionView,
    PreemptRequest,
    ReleaseRequest,
    RenewalEntry,
    RenewalsRequest,
    RenewalsResult,
    RenewRequest,
    RenewResult,
    TicketList,
    TicketView,
    format_id,
    parse_id,
)
from . import _policy
from ._auth import Principal
from ._body import body_of, parsed_body, parsed_renewals
from ._durability import DurabilityWaiter
from ._errors import entry_error, error_responses
from ._events import event
from ._metrics import SchedulerMetrics
from ._views import (
    Now,
    acquire_result,
    audit_record_view,
    lease_view,
    preemption_decision_view,
    renew_result,
    ticket_view,
)

__all__ = [
    "ROUTES",
    "Decision",
    "ServiceContext",
    "acquire_decision",
    "acquire_lease",
    "context_state",
    "release_decision",
    "release_lease",
    "renew_decision",
    "renew_lease",
    "renew_leases",
    "renewals_decision",
]

_STATE_KEY = "grafos"
_T = TypeVar("_T")

#: A hot call decided: the scheduler was called (its change written, maybe not yet
#: durable), and this builds the answer once everything it may reveal is durable.
Decision = Callable[[], _T]


@attrs.define
class ServiceContext:
    """What the handlers share: the scheduler, its clock and the metrics."""

    scheduler: Scheduler
    clock: Clock
    metrics: SchedulerMetrics
    durability: DurabilityWaiter

    def now(self) -> Now:
        return Now.read(self.clock)

    def lease_view(self, lease: Lease, now: Now | None = None) -> LeaseView:
        """``lease`` with its markers and pending preemption, if ACTIVE.

        Those live in memory in the preemption manager (no store, not the scheduler's
        lock): the request's one scheduler call is the one that produced ``lease``.
        """
        now = self.now() if now is None else now
        if lease.state is not LeaseState.ACTIVE:
            return lease_view(lease, now)
        manager = self.scheduler.manager
        return lease_view(
            lease,
            now,
            reasons=manager.reasons(lease.lease_id),
            pending=manager.pending(lease.lease_id),
        )

    def result(self, outcome: Lease | Ticket) -> AcquireResult:
        if isinstance(outcome, Lease):
            return acquire_result(self.lease_view(outcome))
        return acquire_result(ticket_view(outcome, self.now()))

    async def answer(self, decide: Callable[[], Decision[_T]]) -> _T:
        """Decide, wait until that is durable (a refusal too: it may reveal a change
        not yet durable, as an expiry), then build the answer."""
        try:
            finish = decide()
        finally:
            await self.durability.wait()
        return finish()

    def answer_soon(
        self, decide: Callable[[], Decision[_T]], done: Callable[[_T | Exception], None]
    ) -> None:
        """:meth:`answer` without a coroutine: ``done`` gets the answer, or the error
        that refused it, once durable; at once, in this call, when nothing waits."""
        try:
            finish = decide()
        except Exception as exc:
            finish = _raising(exc)

        def complete(failure: BaseException | None) -> None:
            try:
                if failure is not None:
                    raise failure  # as in answer(): the wait's failure wins
                answer = finish()
            except Exception as exc:
                done(exc)
                return
            except BaseException as exc:  # the wait ended some other way: still answer
                done(RuntimeError(f"the wait for durability ended with {exc!r}"))
                return
            done(answer)

        def settled(future: asyncio.Future[None]) -> None:
            complete(asyncio.CancelledError() if future.cancelled() else future.exception())

        try:
            future = self.durability.when_durable()
        except StoreFailed as exc:
            complete(exc)
            return
        if future is None:
            complete(None)
        else:
            future.add_done_callback(settled)


def _raising(exc: Exception) -> Decision[Any]:
    def finish() -> Any:
        raise exc

    return finish


def context_state(context: ServiceContext) -> dict[str, Any]:
    """The app state that carries ``context`` to the handlers."""
    return {_STATE_KEY: context}


def _ctx(request: Request[Any, Any, Any]) -> ServiceContext:
    ctx: ServiceContext = request.app.state[_STATE_KEY]
    return ctx


def _principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.scope["user"]
    return principal


LeaseIdPath = Annotated[
    str, PathParameter(pattern=ID_PATTERN, description="32 lowercase hex digits")
]


# ----------------------------------------------------------------------------- tickets


@post(
    "/v1/leases",
    opt=body_of(AcquireRequest),
    status_code=201,
    summary="Acquire a lease (201 granted, 202 pending with a ticket)",
    responses={202: ResponseSpec(AcquireResult, description="Pending: poll the ticket")}
    | error_responses(409),
)
async def acquire(request: Request[Any, Any, Any]) -> Response[AcquireResult]:
    status, result = await acquire_lease(
        _ctx(request), _principal(request), parsed_body(request, AcquireRequest)
    )
    return Response(result, status_code=status)


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


@get(
    "/v1/tickets",
    summary=(
        "The waiting tickets, in the order they will be granted, each with why it waits "
        "(the admin sees every ticket, a worker its own)"
    ),
    responses=error_responses(),
    sync_to_thread=True,
)
def list_tickets(request: Request[Any, Any, Any]) -> TicketList:
    ctx = _ctx(request)
    waits = ctx.scheduler.ticket_waits(holder=_policy.holder_scope(_principal(request)))
    now = ctx.now()
    return TicketList(tickets=[ticket_view(w.ticket, now, w) for w in waits])


@get(
    "/v1/tickets/{ticket_id:str}",
    summary="Poll a pending acquire: the lease it became, or the ticket and why it waits",
    responses=error_responses(403, 404),
    sync_to_thread=True,
)
def poll_ticket(request: Request[Any, Any, Any], ticket_id: LeaseIdPath) -> AcquireResult:
    ctx = _ctx(request)
    tid = parse_id(ticket_id, "ticket_id")
    outcome = ctx.scheduler.ticket_wait(tid, holder=_policy.holder_scope(_principal(request)))
    if isinstance(outcome, Lease):
        return ctx.result(outcome)
    return acquire_result(ticket_view(outcome.ticket, ctx.now(), outcome))


@delete(
    "/v1/tickets/{ticket_id:str}",
    status_code=200,
    summary="Cancel a pending acquire (its holder or the admin); 409 if granted already",
    responses=error_responses(403, 404, 409),
    sync_to_thread=True,
)
def cancel_ticket(request: Request[Any, Any, Any], ticket_id: LeaseIdPath) -> TicketView:
    ctx = _ctx(request)
    principal = _principal(request)
    tid = parse_id(ticket_id, "ticket_id")
    # The holder check comes first: another worker learns nothing else of the ticket.
    # The audit tail logs the cancellation (one line per decision).
    cancelled = ctx.scheduler.cancel_ticket(tid, holder=_policy.holder_scope(principal))
    return ticket_view(cancelled, ctx.now())


# ----------------------------------------------------------------------------- leases


@post(
    "/v1/leases/{lease_id:str}/renew",
    opt=body_of(RenewRequest),
    status_code=200,
    summary="Renew a lease and report in-flight non-preemptible reasons",
    responses=error_responses(403, 404, 409, 410),
)
async def renew(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> RenewResult:
    return await renew_lease(
        _ctx(request), _principal(request), lease_id, parsed_body(request, RenewRequest)
    )


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


@post(
    "/v1/renewals",
    opt=body_of(RenewalsRequest),
    status_code=200,
    summary=(
        "Renew many leases (1 to 1000) in one request: one result per entry, in order, "
        "each a renew's answer or that lease's error"
    ),
    responses=error_responses(),
)
async def renew_many(request: Request[Any, Any, Any]) -> RenewalsResult:
    return await renew_leases(_ctx(request), _principal(request), parsed_renewals(request))


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


@post(
    "/v1/leases/{lease_id:str}/release",
    opt=body_of(ReleaseRequest),
    status_code=200,
    summary=(
        "Release a lease, optionally reporting the work lost since the last checkpoint "
        "(a pending preemption of a lease with a grace window ends cooperatively)"
    ),
    responses=error_responses(403, 404, 410),
)
async def release(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    return await release_lease(
        _ctx(request), _principal(request), lease_id, parsed_body(request, ReleaseRequest)
    )


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


@get(
    "/v1/leases/{lease_id:str}",
    summary="One lease: state, token, reasons, hold, pending preemption, end time and cause",
    responses=error_responses(403, 404),
    sync_to_thread=True,
)
def get_lease(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    ctx = _ctx(request)
    lid = parse_id(lease_id, "lease_id")
    return ctx.lease_view(ctx.scheduler.get(lid, holder=_policy.holder_scope(_principal(request))))


@get(
    "/v1/leases",
    summary=(
        "List leases, a page at a time: every state unless state= is given, oldest grant "
        "first, limit= 1..1000 (default 100); pass next_after as after= for the next page "
        "(a worker sees only its own)"
    ),
    responses=error_responses(),
    sync_to_thread=True,
)
def list_leases(
    request: Request[Any, Any, Any],
    state_filter: Annotated[LeaseStateName | None, QueryParameter(name="state")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LEASE_PAGE)] = 100,
    after: Annotated[
        str | None,
        QueryParameter(
            pattern=ID_PATTERN,
            description="the next_after of the previous page (a lease id, 32 lowercase hex)",
        ),
    ] = None,
) -> LeaseList:
    ctx = _ctx(request)
    cursor = None if after is None else parse_id(after, "after")
    try:
        leases, next_after = ctx.scheduler.lease_page(
            None if state_filter is None else LeaseState(state_filter),
            holder=_policy.holder_scope(_principal(request)),
            after=cursor,
            limit=limit,
        )
    except InvalidRequest as exc:
        # The only refusal left once the query parsed: a cursor this principal was
        # never given (unknown, or another worker's lease: the same answer).
        raise FieldError("after", str(exc)) from None
    now = ctx.now()
    return LeaseList(
        leases=[ctx.lease_view(x, now) for x in leases],
        next_after=None if next_after is None else format_id(next_after),
    )


@post(
    "/v1/leases/{lease_id:str}/preempt",
    opt=body_of(PreemptRequest) | _policy.ADMIN_ONLY,
    status_code=200,
    summary="Request preemption of a lease (admin); 410 if it ended already",
    responses=error_responses(403, 404, 410),
    sync_to_thread=True,
)
def preempt(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> PreemptionDecisionView:
    _policy.require_admin(_principal(request))
    body = parsed_body(request, PreemptRequest)
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    decision = ctx.scheduler.request_preemption(lid, body.cause)
    if decision.outcome is PreemptionOutcome.NOT_TRACKED:
        # Ended already: 410, as release and fence answer. Only this refusal costs a
        # second call, a read that says how it ended.
        ended = ctx.scheduler.get(lid)
        if ended.state is LeaseState.EXPIRED:
            raise LeaseExpired(lid, ended.expires_at)
        raise LeaseNotActive(lid, ended.state.value)
    # The decision is logged once, from its audit records (AuditLogger).
    return preemption_decision_view(decision, ctx.now())


@post(
    "/v1/leases/{lease_id:str}/fence",
    status_code=200,
    summary="Revoke a lease at once (admin)",
    responses=error_responses(403, 404, 410),
    sync_to_thread=True,
)
def fence(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    _policy.require_admin(_principal(request))
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    fenced = ctx.scheduler.fence(lid)
    return ctx.lease_view(fenced)


@post(
    "/v1/leases/{lease_id:str}/holds",
    opt=body_of(HoldRequest) | _policy.ADMIN_ONLY,
    status_code=200,
    summary=(
        "Set the operator hold on a lease (admin): it defers preemption, at most max_defer "
        "from the request; expires_in seconds, or null until cleared. Replaces a hold it has"
    ),
    responses=error_responses(403, 404, 410),
    sync_to_thread=True,
)
def set_hold(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    _policy.require_admin(_principal(request))
    body = parsed_body(request, HoldRequest)
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    return ctx.lease_view(ctx.scheduler.hold(lid, body.reason, body.expires_in))


@delete(
    "/v1/leases/{lease_id:str}/holds",
    opt=_policy.ADMIN_ONLY,
    status_code=200,
    summary="Clear the operator hold on a lease (admin); 404 no_hold if it has none",
    responses=error_responses(403, 404, 410),
    sync_to_thread=True,
)
def clear_hold(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    _policy.require_admin(_principal(request))
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    return ctx.lease_view(ctx.scheduler.unhold(lid))


# ----------------------------------------------------------------------------- audit


@get(
    "/v1/audit",
    summary="Read the audit log, a page at a time (admin)",
    responses=error_responses(403),
    sync_to_thread=True,
)
def audit_records(
    request: Request[Any, Any, Any],
    after_seq: Annotated[int, QueryParameter(ge=0, le=2**62)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> AuditPage:
    _policy.require_admin(_principal(request))
    records = _ctx(request).scheduler.audit.records(after_seq=after_seq, limit=limit)
    views = [audit_record_view(r) for r in records]
    more = len(views) == limit
    return AuditPage(records=views, next_after_seq=views[-1].seq if views and more else None)


@get(
    "/v1/audit/head",
    summary="The audit chain's head (seq, hash), to export elsewhere (admin)",
    responses=error_responses(403),
    sync_to_thread=True,
)
def audit_head(request: Request[Any, Any, Any]) -> AuditHeadView:
    _policy.require_admin(_principal(request))
    seq, digest = _ctx(request).scheduler.audit.head()
    return AuditHeadView(seq=seq, hash=digest)


@get(
    "/v1/audit/verify",
    summary="Walk the audit chain and report the first bad record (admin)",
    responses=error_responses(403),
    sync_to_thread=True,
)
def audit_verify(request: Request[Any, Any, Any]) -> AuditVerificationView:
    _policy.require_admin(_principal(request))
    audit = _ctx(request).scheduler.audit
    # The stored head, not the last good record: the one to compare with an export.
    verification = AuditVerificationView.of(audit.verify(), audit.head())
    event("audit_verified", ok=verification.ok, first_bad_seq=verification.first_bad_seq)
    return verification


# ----------------------------------------------------------------------------- service


@get("/healthz", summary="Liveness (no authentication)", sync_to_thread=False)
def healthz() -> Health:
    return Health()


@get(
    "/metrics",
    summary="Prometheus metrics (any principal)",
    media_type="text/plain; version=0.0.4; charset=utf-8",
    responses=error_responses(401, common=False),
    sync_to_thread=True,
)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(
        _ctx(request).metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


ROUTES = (
    acquire,
    list_tickets,
    poll_ticket,
    cancel_ticket,
    renew,
    renew_many,
    release,
    get_lease,
    list_leases,
    preempt,
    fence,
    set_hold,
    clear_hold,
    audit_records,
    audit_head,
    audit_verify,
    healthz,
    metrics_endpoint,
)
