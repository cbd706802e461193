"""Every error as one :class:`ErrorBody`: the map from exception to status and code.

An unexpected exception is logged here with its traceback and reaches the client as a
plain 500 body, never as a traceback. The same statuses are documented per route in the
OpenAPI schema (:func:`error_responses`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from litestar import Request, Response
from litestar.enums import MediaType
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec

from .._domain._errors import (
    CapacityExceeded,
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    NoHold,
    NotLeaseHolder,
    SchedulerError,
    StoreError,
    StoreFailed,
    TicketGranted,
    UnknownLease,
    UnknownTicket,
)
from .._wire._models import ErrorBody, format_id
from .._wire._parsing import FieldError, escape
from ._auth import Principal
from ._body import UnsupportedMediaType
from ._events import event, logger
from ._policy import Forbidden, JobConflict

__all__ = [
    "ON_STORE_FAILED",
    "entry_error",
    "error_body",
    "error_responses",
    "escaped_body",
    "handle_exception",
]


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


#: The app state key of a callable that stops the server (set by whoever runs it).
ON_STORE_FAILED = "on_store_failed"

_DOMAIN_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (UnknownLease, 404, "unknown_lease"),
    (UnknownTicket, 404, "unknown_ticket"),
    (NoHold, 404, "no_hold"),
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


def entry_error(principal: Principal, exc: Exception) -> ErrorBody:
    """The error body of one entry of a batch renewal: what a single renew of that
    lease would have answered (the refusals a renewal can meet)."""
    if isinstance(exc, FieldError):
        return ErrorBody(400, "invalid_request", escape(exc.message), _escaped(exc.field))
    if isinstance(exc, NotLeaseHolder):
        shown = format_id(exc.lease_id)
        message = f"principal {principal.name!r} does not hold lease {shown}"
        return ErrorBody(403, "forbidden", message)
    for kind, status, code in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return ErrorBody(status, code, escape(str(exc)))
    return ErrorBody(409, "conflict", escape(str(exc)))


def _escaped(field: str | None) -> str | None:
    return None if field is None else escape(field)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The app's one exception handler."""
    if isinstance(exc, ValidationException):
        field = None
        if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
            key = str(exc.extra[0].get("key") or "")
            field = _PARAMETER_NAMES.get(key, key) or None
            detail = exc.extra[0].get("message")
            message = f"{field}: {detail}" if field and detail else exc.detail
            if field and key != field:
                message = message.replace(key, field)
            given = request.query_params.get(field) if field else None
            if given is not None:
                # Litestar's words name the rule, not the value: add the value.
                message = f"{message} (got {given[:80]!r})"
            return _error(400, "invalid_request", message, field)
        return _error(400, "invalid_request", exc.detail, field)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        code = _HTTP_CODES.get(exc.status_code, "client_error")
        message = exc.detail
        if exc.status_code in (404, 405):
            message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(exc.status_code, code, message)
    body = error_body(
        exc,
        principal=request.scope.get("user"),
        method=request.method,
        path=request.url.path,
        on_store_failed=request.app.state.get(ON_STORE_FAILED),
    )
    return _error(body.status, body.error, body.message, body.field)


def error_body(
    exc: Exception,
    *,
    principal: Principal | None,
    method: str,
    path: str,
    on_store_failed: object = None,
) -> ErrorBody:
    """The answer to ``exc`` raised while serving ``method path`` for ``principal``:
    every error that is not Litestar's own (the hot path uses it too). Its message and
    field are not escaped yet."""
    if isinstance(exc, FieldError):
        return ErrorBody(400, "invalid_request", exc.message, exc.field)
    if isinstance(exc, Forbidden):
        return ErrorBody(403, "forbidden", str(exc))
    if isinstance(exc, NotLeaseHolder) and principal is not None:
        return _not_holder(principal, exc)
    if isinstance(exc, UnsupportedMediaType):
        return ErrorBody(415, "unsupported_media_type", str(exc))
    if isinstance(exc, JobConflict):
        return ErrorBody(409, "job_already_leased", str(exc))
    if isinstance(exc, CapacityExceeded):
        return ErrorBody(400, "capacity_exceeded", str(exc), "slots")
    for kind, status, code in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            return ErrorBody(status, code, str(exc))
    if isinstance(exc, StoreFailed):
        # An fsync failed: the scheduler refuses everything from now on, for good.
        logger.critical(
            "the store failed to make commits durable; the service stops",
            exc_info=exc,
            extra={"event": "store_failed"},
        )
        if callable(on_store_failed):
            on_store_failed()
        return ErrorBody(
            503,
            "store_failed",
            "the scheduler's store failed to make a change durable; the service has stopped "
            "and must be restarted (see the server log)",
        )
    if isinstance(exc, StoreError):
        # The database failed (disk, lock timeout): not the client's fault, and worth
        # a retry. The path and the driver's words stay in the server log.
        reference = uuid.uuid4().hex[:12]
        logger.error(
            "store error %s on %s %s",
            reference,
            method,
            path,
            exc_info=exc,
            extra={"event": "store_error", "reference": reference},
        )
        return ErrorBody(
            503,
            "store_unavailable",
            f"the scheduler's store failed; retry later (server log reference {reference})",
        )
    if isinstance(exc, SchedulerError):
        # A domain refusal without a mapping of its own is still the client's request.
        return ErrorBody(409, "conflict", str(exc))
    reference = uuid.uuid4().hex[:12]
    logger.error(
        "unexpected error %s on %s %s",
        reference,
        method,
        path,
        exc_info=exc,
        extra={"event": "internal_error", "reference": reference},
    )
    return ErrorBody(
        500, "internal_error", f"internal error; the server log has reference {reference}"
    )


def escaped_body(body: ErrorBody) -> ErrorBody:
    """``body`` with its message and field escaped, so that it always encodes."""
    return ErrorBody(body.status, body.error, escape(body.message), _escaped(body.field))


def _not_holder(principal: Principal, exc: NotLeaseHolder) -> ErrorBody:
    """The scheduler's holder check refused: name the principal and the id, not the holder."""
    shown = format_id(exc.lease_id)
    event(
        "forbidden",
        level=logging.WARNING,
        principal=principal.name,
        **{f"{exc.what}_id": shown},
    )
    if exc.what == "ticket":
        return ErrorBody(
            403, "forbidden", f"principal {principal.name!r} did not request ticket {shown}"
        )
    return ErrorBody(403, "forbidden", f"principal {principal.name!r} does not hold lease {shown}")


_ERROR_RESPONSES = {
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


def error_responses(*codes: int, common: bool = True) -> dict[int, ResponseSpec]:
    """The error answers a route documents: ``codes``, and unless ``common`` is False
    the ones every authenticated route can give (400, 401, 415, 503)."""
    every = (400, 401, *codes, 415, 503) if common else codes
    return {c: _ERROR_RESPONSES[c] for c in every}
