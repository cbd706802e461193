"""The v1 route handlers: each parses, asks the policy, calls the scheduler, builds a view.

Bodies arrive decoded (:mod:`._body`); who may do what is :mod:`._policy`'s to say;
refusals become error bodies in :mod:`._errors`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
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
)
from .._domain._lease import Lease, LeaseState, Ticket
from .._scheduler._scheduler import MAX_LEASE_PAGE, Scheduler
from .._wire._models import (
    ID_PATTERN,
    AcquireRequest,
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditVerificationView,
    FieldError,
    Health,
    LeaseList,
    LeaseStateName,
    LeaseView,
    PreemptionDecisionView,
    PreemptRequest,
    RenewRequest,
    RenewResult,
    TicketView,
    format_id,
    parse_id,
)
from . import _policy
from ._auth import Principal
from ._body import body_of, parsed_body
from ._errors import error_responses
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

__all__ = ["ROUTES", "ServiceContext", "context_state"]

_STATE_KEY = "grafos"


@attrs.define
class ServiceContext:
    """What the handlers share: the scheduler, its clock and the metrics."""

    scheduler: Scheduler
    clock: Clock
    metrics: SchedulerMetrics

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
    # Litestar cannot run a sync handler in a thread when it returns a Response:
    # this one is async and hands the scheduler call to a worker thread itself.
)
async def acquire(request: Request[Any, Any, Any]) -> Response[AcquireResult]:
    return await anyio.to_thread.run_sync(_acquire, request)


def _acquire(request: Request[Any, Any, Any]) -> Response[AcquireResult]:
    body = parsed_body(request, AcquireRequest)
    ctx = _ctx(request)
    principal = _principal(request)
    holder = principal.name
    try:
        outcome = ctx.scheduler.acquire(body.job, holder, body.priority, body.slots, body.ttl)
    except JobAlreadyLeased as exc:
        raise _policy.job_conflict(ctx.scheduler, principal, exc) from None
    result = ctx.result(outcome)
    if isinstance(outcome, Lease):
        event(
            "lease_granted",
            lease_id=format_id(outcome.lease_id),
            job=outcome.job,
            holder=holder,
            fencing_token=outcome.fencing_token,
            slots=outcome.slots,
            priority=outcome.priority,
        )
        return Response(result, status_code=201)
    event(
        "acquire_pending",
        ticket_id=format_id(outcome.ticket_id),
        job=outcome.job,
        holder=holder,
        slots=outcome.slots,
        priority=outcome.priority,
    )
    return Response(result, status_code=202)


@get(
    "/v1/tickets/{ticket_id:str}",
    summary="Poll a pending acquire",
    responses=error_responses(403, 404),
    sync_to_thread=True,
)
def poll_ticket(request: Request[Any, Any, Any], ticket_id: LeaseIdPath) -> AcquireResult:
    ctx = _ctx(request)
    tid = parse_id(ticket_id, "ticket_id")
    return ctx.result(ctx.scheduler.poll(tid, holder=_policy.holder_scope(_principal(request))))


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
    cancelled = ctx.scheduler.cancel_ticket(tid, holder=_policy.holder_scope(principal))
    event(
        "ticket_cancelled",
        ticket_id=ticket_id,
        job=cancelled.job,
        holder=cancelled.holder,
        principal=principal.name,
    )
    return ticket_view(cancelled, ctx.now())


# ----------------------------------------------------------------------------- leases


@post(
    "/v1/leases/{lease_id:str}/renew",
    opt=body_of(RenewRequest),
    status_code=200,
    summary="Renew a lease and report in-flight non-preemptible reasons",
    responses=error_responses(403, 404, 409, 410),
    sync_to_thread=True,
)
def renew(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> RenewResult:
    body = parsed_body(request, RenewRequest)
    ctx = _ctx(request)
    principal = _principal(request)
    lid = parse_id(lease_id, "lease_id")
    reasons = _policy.reported_reasons(principal, body.reasons)
    try:
        renewal = ctx.scheduler.renew_lease(
            lid, body.fencing_token, reasons=reasons, holder=_policy.holder_scope(principal)
        )
    except (LeaseExpired, LeaseNotActive, FencingTokenMismatch) as exc:
        event(
            "renew_refused",
            level=logging.WARNING,
            lease_id=lease_id,
            principal=principal.name,
            reason=type(exc).__name__,
        )
        raise
    return renew_result(renewal.lease, renewal.pending, ctx.now())


@post(
    "/v1/leases/{lease_id:str}/release",
    status_code=200,
    summary="Release a lease",
    responses=error_responses(403, 404, 410),
    sync_to_thread=True,
)
def release(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    ctx = _ctx(request)
    principal = _principal(request)
    lid = parse_id(lease_id, "lease_id")
    released = ctx.scheduler.release(lid, holder=_policy.holder_scope(principal))
    event(
        "lease_released",
        lease_id=lease_id,
        job=released.job,
        holder=released.holder,
        principal=principal.name,
    )
    return ctx.lease_view(released)


@get(
    "/v1/leases/{lease_id:str}",
    summary="One lease: state, token, reasons, pending preemption",
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
    opt=body_of(PreemptRequest),
    status_code=200,
    summary="Request preemption of a lease (admin)",
    responses=error_responses(403, 404),
    sync_to_thread=True,
)
def preempt(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> PreemptionDecisionView:
    body = parsed_body(request, PreemptRequest)
    _policy.require_admin(_principal(request))
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    decision = ctx.scheduler.request_preemption(lid, body.cause)
    view = preemption_decision_view(decision, ctx.now())
    event(
        "preemption_requested",
        lease_id=lease_id,
        outcome=view.outcome,
        cause=view.cause,
        reasons=view.reasons,
    )
    return view


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
    event("lease_fenced", lease_id=lease_id, job=fenced.job, holder=fenced.holder)
    return ctx.lease_view(fenced)


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
    poll_ticket,
    cancel_ticket,
    renew,
    release,
    get_lease,
    list_leases,
    preempt,
    fence,
    audit_records,
    audit_head,
    audit_verify,
    healthz,
    metrics_endpoint,
)
