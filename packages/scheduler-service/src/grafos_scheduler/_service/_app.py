"""The HTTP API (v1) on Litestar: leases, tickets, preemption, fencing, audit, metrics.

Every request except ``GET /healthz`` needs ``Authorization: Bearer <token>``. A worker
may act only on the leases it holds; the admin may act on any, and alone may preempt,
fence and read the audit log. Every error, whatever raised it, is one :class:`ErrorBody`;
an unexpected exception is logged here with its traceback and reaches the client as a
plain 500 body, never as a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
import types
import typing
import uuid
from typing import Annotated, Any

import anyio.to_thread
import attrs
import uvicorn
from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.enums import MediaType, ScopeType
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Components, OpenAPIType, Schema, SecurityScheme
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from msgspec import Meta

from .._domain._audit import AuditRecord
from .._domain._clock import Clock, SystemClock
from .._domain._errors import (
    CapacityExceeded,
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    SchedulerError,
    StoreError,
    TicketGranted,
    UnknownLease,
    UnknownTicket,
)
from .._domain._lease import Lease, LeaseState, Ticket
from .._domain._preemption import NonPreemptibleReason
from .._scheduler._scheduler import MAX_LEASE_PAGE, Scheduler
from .._service._auth import Principal, TokenConfig
from .._service._dashboard import DASHBOARD_PATHS, dashboard_routes
from .._service._metrics import SchedulerMetrics
from .._wire._models import (
    ID_PATTERN,
    AcquireRequest,
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditRecordView,
    AuditVerificationView,
    ErrorBody,
    FieldError,
    Health,
    LeaseList,
    LeaseStateName,
    LeaseView,
    PendingPreemptionView,
    PreemptionDecisionView,
    PreemptRequest,
    RenewRequest,
    RenewResult,
    TicketView,
    escape,
    format_id,
    parse_body,
    parse_id,
)

__all__ = ["BackgroundServer", "create_app"]

logger = logging.getLogger("grafos_scheduler.http")

OPEN_PATHS = frozenset({"/healthz", *DASHBOARD_PATHS})
_STATE_KEY = "grafos"


class _Forbidden(Exception):
    """A principal acting on what it may not touch (403)."""


class _UnsupportedMediaType(Exception):
    """A request body that is not declared as JSON (415)."""


@attrs.frozen
class _Now:
    """One reading of the scheduler's clocks, to turn its monotonic times into answers.

    The scheduler's times are monotonic and mean nothing to a client: answers carry
    them as seconds from now (exact) and as a UTC ISO 8601 time (for people).
    """

    monotonic: float
    wall: float

    def iso(self, at: float) -> str:
        wall = self.wall + (at - self.monotonic)
        return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")

    def until(self, at: float) -> float:
        return round(max(0.0, at - self.monotonic), 6)

    def iso_or_none(self, at: float | None) -> str | None:
        return None if at is None else self.iso(at)

    def until_or_none(self, at: float | None) -> float | None:
        return None if at is None else self.until(at)


@attrs.define
class _Context:
    """What the handlers share: the scheduler, its clock and the metrics."""

    scheduler: Scheduler
    clock: Clock
    metrics: SchedulerMetrics

    def now(self) -> _Now:
        return _Now(self.clock.monotonic(), self.clock.wall())

    def lease_view(self, lease: Lease) -> LeaseView:
        now = self.now()
        pending = None
        reasons: list[Any] = []
        if lease.state is LeaseState.ACTIVE:
            reasons = sorted(r.value for r in self.scheduler.reasons(lease.lease_id))
            p = self.scheduler.pending_preemption(lease.lease_id)
            if p is not None:
                pending = PendingPreemptionView(
                    cause=p.cause,
                    reasons=sorted(r.value for r in p.reasons),
                    requested_at=now.iso(p.requested_at),
                    deadline=now.iso(p.deadline),
                    deadline_in=now.until(p.deadline),
                )
        return LeaseView(
            lease_id=format_id(lease.lease_id),
            job=lease.job,
            holder=lease.holder,
            priority=lease.priority,
            slots=lease.slots,
            ttl=lease.ttl,
            fencing_token=lease.fencing_token,
            state=lease.state.value,
            granted_at=now.iso(lease.granted_at),
            expires_at=now.iso(lease.expires_at),
            expires_in=now.until(lease.expires_at),
            reasons=reasons,
            pending_preemption=pending,
        )

    def ticket_view(self, ticket: Ticket) -> TicketView:
        now = self.now()
        return TicketView(
            ticket_id=format_id(ticket.ticket_id),
            job=ticket.job,
            holder=ticket.holder,
            priority=ticket.priority,
            slots=ticket.slots,
            ttl=ticket.ttl,
            requested_at=now.iso(ticket.requested_at),
        )

    def result(self, outcome: Lease | Ticket) -> AcquireResult:
        if isinstance(outcome, Lease):
            return AcquireResult(status="granted", lease=self.lease_view(outcome))
        return AcquireResult(status="pending", ticket=self.ticket_view(outcome))


def _ctx(request: Request[Any, Any, Any]) -> _Context:
    ctx: _Context = request.app.state[_STATE_KEY]
    return ctx


def _principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.scope["user"]
    return principal


def _body(request: Request[Any, Any, Any]) -> Any:
    return request.scope["state"]["parsed_body"]


def _event(event: str, *, level: int = logging.INFO, **fields: object) -> None:
    """One structured log event per decision; ``fields`` land on the record as extras."""
    logger.log(level, event, extra={"event": event, **fields})


def _own_lease(request: Request[Any, Any, Any], lease_id: str) -> tuple[int, Lease]:
    """The lease named in the path, if the caller may act on it (404/403 otherwise)."""
    lid = parse_id(lease_id, "lease_id")
    lease = _ctx(request).scheduler.get(lid)
    principal = _principal(request)
    if not principal.may_act_on(lease.holder):
        _event(
            "forbidden",
            level=logging.WARNING,
            principal=principal.name,
            lease_id=lease_id,
            job=lease.job,
        )
        raise _Forbidden(f"principal {principal.name!r} does not hold lease {lease_id}")
    return lid, lease


def _own_ticket(request: Request[Any, Any, Any], ticket_id: str) -> tuple[int, Lease | Ticket]:
    """The ticket (or the lease it became), if the caller requested it or is the admin."""
    tid = parse_id(ticket_id, "ticket_id")
    outcome = _ctx(request).scheduler.poll(tid)
    principal = _principal(request)
    if not principal.may_act_on(outcome.holder):
        raise _Forbidden(f"principal {principal.name!r} did not request ticket {ticket_id}")
    return tid, outcome


def _require_admin(request: Request[Any, Any, Any]) -> None:
    principal = _principal(request)
    if not principal.is_admin:
        raise _Forbidden(f"principal {principal.name!r} is not the admin")


class AuditLogger:
    """One structured log event per audit record: every decision, wherever it was made.

    Grants from the queue, deferred, executed and forced preemptions, expiries and
    fencing are decided in the scheduler's executor thread, not in a request. Rather
    than log at each of those places, this follows the audit log (the one record of
    every decision) from its head at start, and logs each new record at INFO: ``event``
    is the audit kind, with ``lease_id`` (hex), ``job``, ``audit_seq`` and ``data``.
    Records are logged after they commit, within ``interval`` seconds.
    """

    def __init__(self, scheduler: Scheduler, interval: float = 0.1) -> None:
        self._scheduler = scheduler
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seq = 0

    def start(self) -> None:
        self._seq = self._scheduler.audit.head()[0]
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="audit-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(SchedulerError):  # the scheduler closed first
            self.drain()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.drain()
            except Exception:  # keep following the log
                logger.warning(
                    "audit tail failed", exc_info=True, extra={"event": "audit_tail_failed"}
                )

    def drain(self) -> None:
        """Log every record appended since the last call."""
        with self._lock:
            while True:
                batch = self._scheduler.audit.records(after_seq=self._seq, limit=1000)
                for record in batch:
                    _event(
                        record.kind,
                        lease_id=None if record.lease_id is None else format_id(record.lease_id),
                        job=record.job,
                        audit_seq=record.seq,
                        data=dict(record.data),
                    )
                    self._seq = record.seq
                if len(batch) < 1000:
                    return


# ----------------------------------------------------------------------------- middleware


class _Authentication:
    """Resolve the bearer token to a principal (``scope["user"]``), or refuse with 401."""

    def __init__(self, app: ASGIApp, tokens: TokenConfig) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["path"] not in OPEN_PATHS:
            header = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    header = value.decode("latin-1")
                    break
            principal = self.tokens.authenticate(header)
            if principal is None:
                _event(
                    "unauthenticated",
                    level=logging.WARNING,
                    path=scope["path"],
                    reason="missing" if header is None else "invalid",
                )
                raise NotAuthorizedException(
                    "missing bearer token" if header is None else "invalid bearer token"
                )
            scope["user"] = principal
        await self.app(scope, receive, send)


class _Latency:
    """Observe each request's latency by method, route template and status.

    It wraps the whole app (outside Litestar's exception handling), so the status is
    the one sent. Should an exception still get through, its status is the exception's
    (500 unless it is an ``HTTPException``).
    """

    def __init__(self, app: ASGIApp, metrics: SchedulerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            route = str(scope.get("path_template") or "unmatched")
            self.metrics.observe_request(
                scope.get("method", "?"), route, status, time.perf_counter() - start
            )


async def _parse_request_body(request: Request[Any, Any, Any]) -> None:
    """Parse the body strictly, before Litestar does, so every refusal has our shape."""
    model = request.route_handler.opt.get("body")
    raw = await request.body()
    if raw.strip():
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            shown = escape(media_type) or "none"
            raise _UnsupportedMediaType(
                f"{request.method} {request.url.path}: the body must be application/json, "
                f"not {shown}"
            )
    if model is None:
        if raw.strip() not in (b"", b"{}"):
            raise FieldError(None, f"{request.method} {request.url.path} takes no body")
        return
    request.scope["state"]["parsed_body"] = parse_body(model, raw)


# ----------------------------------------------------------------------------- errors


def _error(status: int, code: str, message: str, field: str | None = None) -> Response[Any]:
    headers = {"WWW-Authenticate": 'Bearer realm="grafos-scheduler"'} if status == 401 else None
    # Request text echoed back (a field name, a value) may hold a lone surrogate, which
    # cannot be encoded: escape it, so an error body always encodes.
    return Response(
        ErrorBody(
            status=status,
            error=code,
            message=escape(message),
            field=None if field is None else escape(field),
        ),
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


_DOMAIN_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownLease, 404, "unknown_lease"),
    (UnknownTicket, 404, "unknown_ticket"),
    (LeaseExpired, 410, "lease_expired"),
    (LeaseNotActive, 410, "lease_not_active"),
    (FencingTokenMismatch, 409, "stale_fencing_token"),
    (JobAlreadyLeased, 409, "job_already_leased"),
    (TicketGranted, 409, "ticket_granted"),
    (CapacityExceeded, 400, "capacity_exceeded"),
    (InvalidRequest, 400, "invalid_request"),
)
# Python names of parameters whose wire name differs.
_PARAMETER_NAMES = {"state_filter": "state"}
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, FieldError):
        return _error(400, "invalid_request", exc.message, exc.field)
    if isinstance(exc, _Forbidden):
        return _error(403, "forbidden", str(exc))
    if isinstance(exc, _UnsupportedMediaType):
        return _error(415, "unsupported_media_type", str(exc))
    if isinstance(exc, _JobConflict):
        return _error(409, "job_already_leased", str(exc))
    if isinstance(exc, CapacityExceeded):
        return _error(400, "capacity_exceeded", str(exc), "slots")
    for kind, status, code in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return _error(status, code, str(exc))
    if isinstance(exc, ValidationException):
        field = None
        if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
            key = str(exc.extra[0].get("key") or "")
            field = _PARAMETER_NAMES.get(key, key) or None
            detail = exc.extra[0].get("message")
            message = f"{field}: {detail}" if field and detail else exc.detail
            if field and key != field:
                message = message.replace(key, field)
            return _error(400, "invalid_request", message, field)
        return _error(400, "invalid_request", exc.detail, field)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = _HTTP_CODES.get(exc.status_code, "client_error")
        message = exc.detail
        if exc.status_code in (404, 405):
            message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, code, message)
    if isinstance(exc, StoreError):
        # The database failed (disk, lock timeout): not the client's fault, and worth
        # a retry. The path and the driver's words stay in the server log.
        reference = uuid.uuid4().hex[:12]
        logger.error(
            "store error %s on %s %s",
            reference,
            request.method,
            request.url.path,
            exc_info=exc,
            extra={"event": "store_error", "reference": reference},
        )
        return _error(
            503,
            "store_unavailable",
            f"the scheduler's store failed; retry later (server log reference {reference})",
        )
    if isinstance(exc, SchedulerError):
        # A domain refusal without a mapping of its own is still the client's request.
        return _error(409, "conflict", str(exc))
    reference = uuid.uuid4().hex[:12]
    logger.error(
        "unexpected error %s on %s %s",
        reference,
        request.method,
        request.url.path,
        exc_info=exc,
        extra={"event": "internal_error", "reference": reference},
    )
    return _error(
        500, "internal_error", f"internal error; the server log has reference {reference}"
    )


# ----------------------------------------------------------------------------- routes

_ERRORS = {
    code: ResponseSpec(ErrorBody, description=desc)
    for code, desc in {
        400: "Bad request: unknown field, wrong type or value out of range",
        401: "Missing or invalid bearer token",
        403: "The principal may not act on this resource",
        404: "Unknown lease or ticket",
        409: "Stale fencing token, the job already holds a lease or a ticket, "
        "or the ticket was granted already",
        410: "The lease expired or ended",
        415: "The body is not declared as application/json",
        503: "The scheduler's store failed (disk, lock timeout); retry later",
    }.items()
}


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    return {c: _ERRORS[c] for c in (400, 401, *codes, 415, 503)}


LeaseIdPath = Annotated[
    str, PathParameter(pattern=ID_PATTERN, description="32 lowercase hex digits")
]


@post(
    "/v1/leases",
    opt={"body": AcquireRequest},
    status_code=201,
    summary="Acquire a lease (201 granted, 202 pending with a ticket)",
    responses={202: ResponseSpec(AcquireResult, description="Pending: poll the ticket")}
    | _errors(409),
    # Litestar cannot run a sync handler in a thread when it returns a Response:
    # this one is async and hands the scheduler call to a worker thread itself.
)
async def acquire(
    request: Request[Any, Any, Any], data: JSONBody[AcquireRequest]
) -> Response[AcquireResult]:
    return await anyio.to_thread.run_sync(_acquire, request)


class _JobConflict(Exception):
    """A job that holds a lease or a ticket another principal owns (409, no id shown)."""


def _job_conflict(request: Request[Any, Any, Any], exc: JobAlreadyLeased) -> Exception:
    """The 409 for ``exc``: its lease or ticket id only for the admin or its holder.

    Another principal learns that the job is taken, not the id: with an id it could
    poll, renew or release nothing (403), but the id is the holder's business.
    """
    principal = _principal(request)
    holder: str | None = None
    try:
        scheduler = _ctx(request).scheduler
        if exc.pending:
            holder = scheduler.poll(exc.lease_id).holder  # the ticket, or its lease
        else:
            holder = scheduler.get(exc.lease_id).holder
    except SchedulerError:
        pass  # cancelled or unknown by now: say no more than to a stranger
    if holder is not None and principal.may_act_on(holder):
        return exc
    what = "a pending ticket" if exc.pending else "an active lease"
    return _JobConflict(f"job {exc.job!r} already has {what}, held by another principal")


def _acquire(request: Request[Any, Any, Any]) -> Response[AcquireResult]:
    body: AcquireRequest = _body(request)
    ctx = _ctx(request)
    holder = _principal(request).name
    try:
        outcome = ctx.scheduler.acquire(body.job, holder, body.priority, body.slots, body.ttl)
    except JobAlreadyLeased as exc:
        raise _job_conflict(request, exc) from None
    result = ctx.result(outcome)
    if isinstance(outcome, Lease):
        _event(
            "lease_granted",
            lease_id=format_id(outcome.lease_id),
            job=outcome.job,
            holder=holder,
            fencing_token=outcome.fencing_token,
            slots=outcome.slots,
            priority=outcome.priority,
        )
        return Response(result, status_code=201)
    _event(
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
    responses=_errors(403, 404),
    sync_to_thread=True,
)
def poll_ticket(request: Request[Any, Any, Any], ticket_id: LeaseIdPath) -> AcquireResult:
    _, outcome = _own_ticket(request, ticket_id)
    return _ctx(request).result(outcome)


@delete(
    "/v1/tickets/{ticket_id:str}",
    status_code=200,
    summary="Cancel a pending acquire (its holder or the admin); 409 if granted already",
    responses=_errors(403, 404, 409),
    sync_to_thread=True,
)
def cancel_ticket(request: Request[Any, Any, Any], ticket_id: LeaseIdPath) -> TicketView:
    # Who may cancel is settled before anything else is said about the ticket.
    tid, _ = _own_ticket(request, ticket_id)
    ctx = _ctx(request)
    principal = _principal(request)
    cancelled = ctx.scheduler.cancel_ticket(tid)
    _event(
        "ticket_cancelled",
        ticket_id=ticket_id,
        job=cancelled.job,
        holder=cancelled.holder,
        principal=principal.name,
    )
    return ctx.ticket_view(cancelled)


@post(
    "/v1/leases/{lease_id:str}/renew",
    opt={"body": RenewRequest},
    status_code=200,
    summary="Renew a lease and report in-flight non-preemptible reasons",
    responses=_errors(403, 404, 409, 410),
    sync_to_thread=True,
)
def renew(
    request: Request[Any, Any, Any], lease_id: LeaseIdPath, data: JSONBody[RenewRequest]
) -> RenewResult:
    body: RenewRequest = _body(request)
    lid, lease = _own_lease(request, lease_id)
    ctx = _ctx(request)
    if not _principal(request).is_admin:
        # A worker reports what it is doing; an operator hold is the operator's to set.
        for i, reason in enumerate(body.reasons):
            if reason != "checkpoint_in_progress":
                raise FieldError(
                    f"reasons[{i}]",
                    f"a worker may report only checkpoint_in_progress, not {reason!r}",
                )
    reasons = [NonPreemptibleReason(r) for r in body.reasons]
    try:
        renewed = ctx.scheduler.renew(lid, body.fencing_token, reasons)
    except (LeaseExpired, LeaseNotActive, FencingTokenMismatch) as exc:
        _event(
            "renew_refused",
            level=logging.WARNING,
            lease_id=lease_id,
            job=lease.job,
            reason=type(exc).__name__,
        )
        raise
    pending = ctx.scheduler.pending_preemption(lid)
    now = ctx.now()
    deadline = None if pending is None else pending.deadline
    return RenewResult(
        lease_id=lease_id,
        fencing_token=renewed.fencing_token,
        expires_at=now.iso(renewed.expires_at),
        expires_in=now.until(renewed.expires_at),
        preemption_requested=pending is not None,
        preemption_cause=None if pending is None else pending.cause,
        preemption_deadline=now.iso_or_none(deadline),
        preemption_deadline_in=now.until_or_none(deadline),
    )


@post(
    "/v1/leases/{lease_id:str}/release",
    status_code=200,
    summary="Release a lease",
    responses=_errors(403, 404, 410),
    sync_to_thread=True,
)
def release(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    lid, lease = _own_lease(request, lease_id)
    ctx = _ctx(request)
    released = ctx.scheduler.release(lid)
    _event(
        "lease_released",
        lease_id=lease_id,
        job=lease.job,
        holder=lease.holder,
        principal=_principal(request).name,
    )
    return ctx.lease_view(released)


@get(
    "/v1/leases/{lease_id:str}",
    summary="One lease: state, token, reasons, pending preemption",
    responses=_errors(403, 404),
    sync_to_thread=True,
)
def get_lease(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    _, lease = _own_lease(request, lease_id)
    return _ctx(request).lease_view(lease)


@get(
    "/v1/leases",
    summary=(
        "List leases, a page at a time: every state unless state= is given, oldest grant "
        "first, limit= 1..1000 (default 100); pass next_after as after= for the next page "
        "(a worker sees only its own)"
    ),
    responses=_errors(),
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
    principal = _principal(request)
    cursor = None if after is None else parse_id(after, "after")
    try:
        leases, next_after = ctx.scheduler.lease_page(
            None if state_filter is None else LeaseState(state_filter),
            holder=None if principal.is_admin else principal.name,
            after=cursor,
            limit=limit,
        )
    except InvalidRequest as exc:
        # The only refusal left once the query parsed: a cursor this principal was
        # never given (unknown, or another worker's lease: the same answer).
        raise FieldError("after", str(exc)) from None
    return LeaseList(
        leases=[ctx.lease_view(x) for x in leases],
        next_after=None if next_after is None else format_id(next_after),
    )


@post(
    "/v1/leases/{lease_id:str}/preempt",
    opt={"body": PreemptRequest},
    status_code=200,
    summary="Request preemption of a lease (admin)",
    responses=_errors(403, 404),
    sync_to_thread=True,
)
def preempt(
    request: Request[Any, Any, Any], lease_id: LeaseIdPath, data: JSONBody[PreemptRequest]
) -> PreemptionDecisionView:
    body: PreemptRequest = _body(request)
    _require_admin(request)
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    lease = ctx.scheduler.get(lid)
    decision = ctx.scheduler.request_preemption(lid, body.cause)
    now = ctx.now()
    reasons: Any = sorted(r.value for r in decision.reasons)
    _event(
        "preemption_requested",
        lease_id=lease_id,
        job=lease.job,
        outcome=decision.outcome.value,
        cause=decision.cause,
        reasons=reasons,
    )
    return PreemptionDecisionView(
        lease_id=lease_id,
        outcome=decision.outcome.value,
        cause=decision.cause,
        reasons=reasons,
        deadline=now.iso_or_none(decision.deadline),
        deadline_in=now.until_or_none(decision.deadline),
    )


@post(
    "/v1/leases/{lease_id:str}/fence",
    status_code=200,
    summary="Revoke a lease at once (admin)",
    responses=_errors(403, 404, 410),
    sync_to_thread=True,
)
def fence(request: Request[Any, Any, Any], lease_id: LeaseIdPath) -> LeaseView:
    _require_admin(request)
    lid = parse_id(lease_id, "lease_id")
    ctx = _ctx(request)
    fenced = ctx.scheduler.fence(lid)
    _event("lease_fenced", lease_id=lease_id, job=fenced.job, holder=fenced.holder)
    return ctx.lease_view(fenced)


@get(
    "/v1/audit",
    summary="Read the audit log, a page at a time (admin)",
    responses=_errors(403),
    sync_to_thread=True,
)
def audit_records(
    request: Request[Any, Any, Any],
    after_seq: Annotated[int, QueryParameter(ge=0, le=2**62)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> AuditPage:
    _require_admin(request)
    records = _ctx(request).scheduler.audit.records(after_seq=after_seq, limit=limit)
    views = [_audit_view(r) for r in records]
    more = len(views) == limit
    return AuditPage(records=views, next_after_seq=views[-1].seq if views and more else None)


@get(
    "/v1/audit/head",
    summary="The audit chain's head (seq, hash), to export elsewhere (admin)",
    responses=_errors(403),
    sync_to_thread=True,
)
def audit_head(request: Request[Any, Any, Any]) -> AuditHeadView:
    _require_admin(request)
    seq, digest = _ctx(request).scheduler.audit.head()
    return AuditHeadView(seq=seq, hash=digest)


@get(
    "/v1/audit/verify",
    summary="Walk the audit chain and report the first bad record (admin)",
    responses=_errors(403),
    sync_to_thread=True,
)
def audit_verify(request: Request[Any, Any, Any]) -> AuditVerificationView:
    _require_admin(request)
    audit = _ctx(request).scheduler.audit
    result = audit.verify()
    seq, digest = audit.head()
    verification = AuditVerificationView.of(result, (seq, digest))
    _event("audit_verified", ok=verification.ok, first_bad_seq=verification.first_bad_seq)
    return verification


@get("/healthz", summary="Liveness (no authentication)", sync_to_thread=False)
def healthz() -> Health:
    return Health()


@get(
    "/metrics",
    summary="Prometheus metrics (any principal)",
    media_type="text/plain; version=0.0.4; charset=utf-8",
    responses={401: _ERRORS[401]},
    sync_to_thread=True,
)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    ctx = _ctx(request)
    return Response(
        ctx.metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


def _audit_view(record: AuditRecord) -> AuditRecordView:
    lease_id = record.lease_id
    return AuditRecordView(
        seq=record.seq,
        time=dt.datetime.fromtimestamp(record.time, dt.UTC).isoformat(timespec="milliseconds"),
        kind=record.kind,
        lease_id=None if lease_id is None else format_id(lease_id),
        job=record.job,
        data=dict(record.data),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


# ----------------------------------------------------------------------------- schema

_REQUEST_MODELS: tuple[type[Any], ...] = (AcquireRequest, RenewRequest, PreemptRequest)
_RESPONSE_MODELS: tuple[type[Any], ...] = (
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditRecordView,
    AuditVerificationView,
    ErrorBody,
    Health,
    LeaseList,
    LeaseView,
    PendingPreemptionView,
    PreemptionDecisionView,
    RenewResult,
    TicketView,
)


def _document_constraints(app: Litestar) -> None:
    """Put the models' ``Meta`` constraints into the OpenAPI schema.

    Litestar's attrs plugin drops them; without them a client (or schemathesis) cannot
    tell which values the API accepts. Request bodies also get
    ``additionalProperties: false``, which :func:`parse_body` enforces.
    """
    schemas = app.openapi_schema.components.schemas or {}
    for model in (*_REQUEST_MODELS, *_RESPONSE_MODELS):
        component = schemas.get(model.__name__)
        if component is None:
            continue
        if model in _REQUEST_MODELS:
            component.additional_properties = False
        hints = typing.get_type_hints(model, include_extras=True)
        for name, prop in (component.properties or {}).items():
            meta = _meta_of(hints[name])
            if meta is None or not isinstance(prop, Schema):
                continue
            target = prop
            if prop.one_of:  # an optional value: constrain the non-null branch
                branches = [b for b in prop.one_of if isinstance(b, Schema) and b.type != "null"]
                if len(branches) != 1:
                    continue
                target = branches[0]
            if target.type == OpenAPIType.ARRAY and isinstance(target.items, Schema):
                target = target.items
            target.minimum = meta.ge if meta.ge is not None else target.minimum
            target.maximum = meta.le if meta.le is not None else target.maximum
            if meta.gt is not None:
                target.exclusive_minimum = meta.gt
            target.min_length = (
                meta.min_length if meta.min_length is not None else target.min_length
            )
            target.max_length = (
                meta.max_length if meta.max_length is not None else target.max_length
            )
            target.pattern = meta.pattern if meta.pattern is not None else target.pattern
            if meta.description and not target.description:
                target.description = meta.description


def _meta_of(hint: object) -> Meta | None:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        # An optional value: the constraints of its one non-null type.
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) != 1:
            return None
        hint = options[0]
    if typing.get_origin(hint) is Annotated:
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, Meta):
                return extra
    return None


# ----------------------------------------------------------------------------- app


def create_app(
    scheduler: Scheduler,
    tokens: TokenConfig,
    *,
    clock: Clock | None = None,
    metrics: SchedulerMetrics | None = None,
) -> Litestar:
    """The v1 API over ``scheduler``, authenticating with ``tokens``.

    ``clock`` must be the scheduler's own (to turn its monotonic times into wall times);
    by default it is the scheduler's ``clock`` attribute if it has one, else the system
    clock. The caller starts and closes the scheduler.
    """
    if clock is None:
        clock = getattr(scheduler, "clock", None) or SystemClock()
    if metrics is None:
        metrics = SchedulerMetrics(scheduler)
    context = _Context(scheduler=scheduler, clock=clock, metrics=metrics)
    audit_logger = AuditLogger(scheduler)
    app = Litestar(
        route_handlers=[
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
            *dashboard_routes(scheduler),
        ],
        state=State({_STATE_KEY: context}),
        on_startup=[audit_logger.start],
        on_shutdown=[audit_logger.stop],
        middleware=[DefineMiddleware(_Authentication, tokens=tokens)],
        before_request=_parse_request_body,
        exception_handlers={Exception: _handle_exception},
        openapi_config=OpenAPIConfig(
            title="grafos-scheduler",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="token")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
        logging_config=None,
        request_max_body_size=64 * 1024,
    )
    _document_constraints(app)
    # Time every request around the app's own exception handling, not per route: so a
    # 401 from the authentication middleware and a 404/405 for a path or method no
    # route serves are counted with the status the client got.
    app.asgi_handler = _Latency(app.asgi_handler, metrics)
    return app


class BackgroundServer:
    """uvicorn serving ``app`` from a thread, on a socket bound before it starts.

    Binding first means the port is known (``port=0`` picks a free one) and the server
    is reachable as soon as :meth:`start` returns. For the demo, tests and benchmarks;
    ``grafos-scheduler serve`` runs uvicorn in the main thread instead.
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        self._thread.start()
        give_up = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > give_up:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
