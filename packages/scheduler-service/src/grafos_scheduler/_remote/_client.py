"""``SchedulerClient``: the v1 HTTP API from Python, on httpx.

Each method returns the API's attrs model, and each refusal raises a
:class:`ServiceError` subclass chosen by status, carrying the server's error code,
message and field. The token goes into the ``Authorization`` header only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import httpx
import msgspec

from .._domain._errors import SchedulerError
from .._wire._models import (
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditVerificationView,
    LeaseList,
    LeaseView,
    PreemptionDecisionView,
    RenewResult,
    TicketView,
    format_id,
)

__all__ = [
    "AuthenticationFailed",
    "LeaseGone",
    "NotFound",
    "PermissionDenied",
    "RequestRejected",
    "SchedulerClient",
    "ServiceError",
    "ServiceUnavailable",
    "TokenConflict",
]

_T = TypeVar("_T")


class ServiceError(SchedulerError):
    """The service refused a request; ``status``, ``code`` and ``field`` say how."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class RequestRejected(ServiceError):
    """400: an unknown field, a wrong type or a value out of range (``field`` names it)."""


class AuthenticationFailed(ServiceError):
    """401: the bearer token is missing or wrong."""


class PermissionDenied(ServiceError):
    """403: the principal may not act on this lease, or needs to be the admin."""


class NotFound(ServiceError):
    """404: no such lease, ticket or route."""


class TokenConflict(ServiceError):
    """409: a stale fencing token, the job already holds a lease or a ticket, or the
    ticket to cancel was granted already (``code`` tells which)."""


class LeaseGone(ServiceError):
    """410: the lease expired or ended (released, fenced, preempted). Stop using it."""


class ServiceUnavailable(ServiceError):
    """The service could not be reached, or answered with a 5xx."""


_BY_STATUS: dict[int, type[ServiceError]] = {
    400: RequestRejected,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
    409: TokenConflict,
    410: LeaseGone,
}


def _id(value: int | str) -> str:
    return format_id(value) if isinstance(value, int) else value


class SchedulerClient:
    """A synchronous client of the v1 API; thread-safe (one pooled httpx client).

    ``transport`` lets tests talk to an in-process app; ``timeout`` bounds every call.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:  # never show the token
        return f"SchedulerClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    def _call(self, method: str, path: str, model: type[_T], **kwargs: Any) -> _T:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(0, "unreachable", f"{method} {path}: {exc!r}") from exc
        if response.is_success:
            return msgspec.convert(response.json(), model)
        raise self._error(response)

    @staticmethod
    def _error(response: httpx.Response) -> ServiceError:
        status = response.status_code
        try:
            body = response.json()
            code, message, field = body["error"], body["message"], body.get("field")
        except (ValueError, KeyError, TypeError):
            code, message, field = "http_error", response.text[:200], None
        kind = _BY_STATUS.get(status, ServiceUnavailable if status >= 500 else ServiceError)
        return kind(status, str(code), str(message), field)

    # -- the API ----------------------------------------------------------------------

    def healthz(self) -> bool:
        try:
            return self._http.get("/healthz").is_success
        except httpx.HTTPError:
            return False

    def acquire(self, job: str, *, slots: int, ttl: float, priority: int = 0) -> AcquireResult:
        """Ask for a lease: ``status`` "granted" (with ``lease``) or "pending" (``ticket``)."""
        body = {"job": job, "slots": slots, "ttl": ttl, "priority": priority}
        return self._call("POST", "/v1/leases", AcquireResult, json=body)

    def poll(self, ticket_id: int | str) -> AcquireResult:
        return self._call("GET", f"/v1/tickets/{_id(ticket_id)}", AcquireResult)

    def cancel_ticket(self, ticket_id: int | str) -> TicketView:
        """Withdraw a pending acquire; returns the cancelled ticket.

        Raises :class:`TokenConflict` with code ``ticket_granted`` if the ticket was
        granted already (poll it for the lease, and release that), and
        :class:`NotFound` if there is no such ticket (or it was cancelled already).
        """
        return self._call("DELETE", f"/v1/tickets/{_id(ticket_id)}", TicketView)

    def renew(
        self,
        lease_id: int | str,
        fencing_token: int,
        reasons: Iterable[str] = (),
        *,
        timeout: float | None = None,
    ) -> RenewResult:
        """Extend a lease, reporting the in-flight reasons (replacing the last report).

        ``timeout`` overrides the client's timeout for this call (the agent caps it at
        the time left on the lease).
        """
        body = {"fencing_token": fencing_token, "reasons": sorted(set(reasons))}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        return self._call(
            "POST", f"/v1/leases/{_id(lease_id)}/renew", RenewResult, json=body, **extra
        )

    def release(self, lease_id: int | str) -> LeaseView:
        return self._call("POST", f"/v1/leases/{_id(lease_id)}/release", LeaseView)

    def get(self, lease_id: int | str) -> LeaseView:
        return self._call("GET", f"/v1/leases/{_id(lease_id)}", LeaseView)

    def lease_page(
        self, state: str | None = None, *, after: str | None = None, limit: int = 100
    ) -> LeaseList:
        """One page of leases, oldest grant first; ``next_after`` is the next cursor."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        if after is not None:
            params["after"] = after
        return self._call("GET", "/v1/leases", LeaseList, params=params)

    def leases(self, state: str | None = None, *, page_size: int = 1000) -> list[LeaseView]:
        """Every lease the principal may see (optionally of one state), page by page."""
        leases: list[LeaseView] = []
        after: str | None = None
        while True:
            page = self.lease_page(state, after=after, limit=page_size)
            leases.extend(page.leases)
            if page.next_after is None:
                return leases
            after = page.next_after

    def preempt(
        self, lease_id: int | str, cause: str = "operator request"
    ) -> PreemptionDecisionView:
        return self._call(
            "POST",
            f"/v1/leases/{_id(lease_id)}/preempt",
            PreemptionDecisionView,
            json={"cause": cause},
        )

    def fence(self, lease_id: int | str) -> LeaseView:
        return self._call("POST", f"/v1/leases/{_id(lease_id)}/fence", LeaseView)

    def audit(self, after_seq: int = 0, limit: int = 100) -> AuditPage:
        params = {"after_seq": after_seq, "limit": limit}
        return self._call("GET", "/v1/audit", AuditPage, params=params)

    def audit_head(self) -> AuditHeadView:
        return self._call("GET", "/v1/audit/head", AuditHeadView)

    def audit_verify(self) -> AuditVerificationView:
        return self._call("GET", "/v1/audit/verify", AuditVerificationView)

    def metrics(self) -> str:
        response = self._http.get("/metrics")
        if not response.is_success:
            raise self._error(response)
        return response.text
