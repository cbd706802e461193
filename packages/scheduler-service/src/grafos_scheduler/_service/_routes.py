"""The v1 route handlers: each parses, asks the policy, calls the scheduler, builds a view.

Bodies arrive decoded (:mod:`._body`); who may do what is :mod:`._policy`'s to say;
refusals become error bodies in :mod:`._errors`. The hot lease calls' handlers answer
with their decisions (:mod:`._decisions`), which the hot path shares.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from .._domain._errors import (
    InvalidRequest,
    LeaseExpired,
    LeaseNotActive,
)
from .._domain._lease import Lease, LeaseState
from .._domain._preemption import PreemptionOutcome
from .._scheduler._scheduler import MAX_LEASE_PAGE
from .._wire._models import (
    ID_PATTERN,
    AcquireRequest,
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditVerificationView,
    Health,
    HoldRequest,
    LeaseList,
    LeaseStateName,
    LeaseView,
    PreemptionDecisionView,
    PreemptRequest,
    ReleaseRequest,
    RenewalsRequest,
    RenewalsResult,
    RenewRequest,
    RenewResult,
    TicketList,
    TicketView,
    format_id,
)
from .._wire._parsing import FieldError, parse_id
from . import _policy
from ._auth import Principal
from ._body import body_of, parsed_body, parsed_renewals
from ._context import ServiceContext, context_of
from ._decisions import acquire_lease, release_lease, renew_lease, renew_leases
from ._errors import error_responses
from ._events import event
from ._views import (
    acquire_result,
    audit_record_view,
    preemption_decision_view,
    ticket_view,
)

__all__ = ["ROUTES"]


def _ctx(request: Request[Any, Any, Any]) -> ServiceContext:
    return context_of(request.app.state)


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
