"""``SchedulerClient``: the v1 HTTP API from Python, on httpx.

Each method returns the API's attrs model, and each refusal raises a
:class:`ServiceError` subclass chosen by status, carrying the server's error code,
message and field. The token goes into the ``Authorization`` header only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from .._domain._errors import SchedulerError
from .._remote._failover import FailoverTransport, parse_base_urls
from .._wire._models import (
    AcquireResult,
    AuditHeadView,
    AuditPage,
    AuditVerificationView,
    LeaseList,
    LeaseView,
    PreemptionDecisionView,
    RenewResult,
    TicketList,
    TicketView,
    WatchAnswer,
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


def _entry_error(item: dict[str, Any]) -> ServiceError:
    status = int(item.get("status", 0))
    kind = _BY_STATUS.get(status, ServiceUnavailable if status >= 500 else ServiceError)
    return kind(status, str(item.get("error")), str(item.get("message")), item.get("field"))


#: One renewal of a batch: (lease id, fencing token, in-flight reasons), and
#: optionally the seconds since the last completed checkpoint.
RenewalEntry = (
    tuple[int | str, int, Iterable[str]] | tuple[int | str, int, Iterable[str], float | None]
)


def _renewal_body(entry: RenewalEntry) -> dict[str, Any]:
    lease_id, token, reasons, *rest = entry
    body: dict[str, Any] = {
        "lease_id": _id(lease_id),
        "fencing_token": token,
        "reasons": sorted(set(reasons)),
    }
    if rest and rest[0] is not None:
        body["checkpoint_age"] = rest[0]
    return body


_UNSET: Any = object()
_MAX_BATCH = 1000


class _Waiting:
    __slots__ = ("entry", "result", "timeout")

    def __init__(self, entry: RenewalEntry, timeout: float | None) -> None:
        self.entry = entry
        self.timeout = timeout
        self.result: RenewResult | BaseException = _UNSET


class _SharedRenewals:
    """Every thread's renewals on one client share requests (leader and followers).

    A renewal joins the queue. If no batch is in flight, its thread sends the whole
    queue as one ``POST /v1/renewals``; renewals queued meanwhile go in the next one,
    sent by one of their own threads. No renewal waits for a timer: under load they
    simply come in groups, as commits do in a group commit.
    """

    def __init__(self, client: SchedulerClient) -> None:
        self._client = client
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._sending = False

    def renew(self, entry: RenewalEntry, timeout: float | None) -> RenewResult:
        me = _Waiting(entry, timeout)
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._queue.append(me)
        while True:
            with self._cond:
                while me.result is _UNSET and self._sending:
                    left = None if give_up is None else give_up - time.monotonic()
                    if left is not None and left <= 0:
                        if me in self._queue:
                            self._queue.remove(me)
                        raise ServiceUnavailable(0, "timeout", "the shared renewal timed out")
                    self._cond.wait(left)
                if me.result is not _UNSET:
                    break
                self._sending = True
                batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            self._send(batch)
        if isinstance(me.result, BaseException):
            raise me.result
        return me.result

    def _send(self, batch: list[_Waiting]) -> None:
        timeouts = [w.timeout for w in batch if w.timeout is not None]
        results: list[RenewResult | ServiceError] | None = None
        failure: BaseException | None = None
        try:
            results = self._client.renew_many(
                [w.entry for w in batch], timeout=min(timeouts) if timeouts else None
            )
        except BaseException as exc:  # every waiter gets it; none is left hanging
            failure = exc
        with self._cond:
            for i, waiting in enumerate(batch):
                waiting.result = failure if results is None else results[i]  # type: ignore[assignment]
            self._sending = False
            self._cond.notify_all()


class SchedulerClient:
    """A synchronous client of the v1 API; thread-safe (one pooled httpx client).

    ``base_url`` is one URL, or several replicas' (a list, or a comma-separated
    string): each call goes to the leader, following a standby's redirect and moving
    on from a replica that is down, within the call's timeout (a
    :class:`FailoverTransport`). ``transport`` lets tests talk to an in-process app;
    ``timeout`` bounds every call.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_urls = parse_base_urls(base_url)
        self.base_url = self.base_urls[0]
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=FailoverTransport(
                self.base_urls, transport=transport, default_budget=timeout
            ),
        )
        self._shared = _SharedRenewals(self)

    def __repr__(self) -> str:  # never show the token
        return f"SchedulerClient({','.join(self.base_urls)!r})"

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

    def acquire(
        self, job: str, *, slots: int, ttl: float, priority: int = 0, grace: float = 0.0
    ) -> AcquireResult:
        """Ask for a lease: ``status`` "granted" (with ``lease``) or "pending" (``ticket``).

        ``grace``: seconds a preemption of the lease waits for this holder to take a
        final checkpoint and release (at most the server's max_grace; 400 above it).
        """
        body: dict[str, Any] = {"job": job, "slots": slots, "ttl": ttl, "priority": priority}
        if grace:
            body["grace"] = grace
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
        checkpoint_age: float | None = None,
    ) -> RenewResult:
        """Extend a lease, reporting the in-flight reasons (replacing the last report).

        The renewal is sent with every other thread's renewals on this client, as one
        ``POST /v1/renewals`` (:meth:`renew_many`): a host with many leases, one agent
        each, pays one request for all the renewals that are due together. It raises
        what a single renew of the lease would (``LeaseGone``, ``TokenConflict``, ...).
        ``timeout`` overrides the client's timeout for this call (the agent caps it at
        the time left on the lease). ``checkpoint_age`` is the seconds since the last
        completed checkpoint: the server counts a forced end's work lost from it.
        """
        entry: RenewalEntry = (lease_id, fencing_token, tuple(reasons))
        if checkpoint_age is not None:
            entry = (lease_id, fencing_token, tuple(reasons), checkpoint_age)
        return self._shared.renew(entry, timeout)

    def renew_many(
        self, renewals: Sequence[RenewalEntry], *, timeout: float | None = None
    ) -> list[RenewResult | ServiceError]:
        """Renew many leases in one request (``POST /v1/renewals``, 1 to 1000 entries).

        Returns one result per entry, in order: the :class:`RenewResult`, or the
        :class:`ServiceError` (``LeaseGone``, ``TokenConflict``, ...) that a single
        renew of that lease would have raised. Raises only if the request as a whole
        fails (unreachable, 401, a batch of 0 or more than 1000). An entry may carry a
        fourth item, its ``checkpoint_age`` (as :meth:`renew`).
        """
        body = {"leases": [_renewal_body(entry) for entry in renewals]}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        answer = self._call("POST", "/v1/renewals", dict[str, Any], json=body, **extra)
        results: list[RenewResult | ServiceError] = []
        for item in answer["results"]:
            if "error" in item:
                results.append(_entry_error(item))
            else:
                results.append(msgspec.convert(item, RenewResult))
        return results

    def release(
        self,
        lease_id: int | str,
        *,
        work_lost_records: int | None = None,
        work_lost_seconds: float | None = None,
    ) -> LeaseView:
        """Release a lease, optionally reporting the work done since the last completed
        checkpoint (0 and 0 right after a final checkpoint). With neither, the body is
        empty, as before: the server counts the seconds and leaves the records null."""
        body: dict[str, Any] = {}
        if work_lost_records is not None:
            body["work_lost_records"] = work_lost_records
        if work_lost_seconds is not None:
            body["work_lost_seconds"] = work_lost_seconds
        extra: dict[str, Any] = {"json": body} if body else {}
        return self._call("POST", f"/v1/leases/{_id(lease_id)}/release", LeaseView, **extra)

    def watch(self, cursor: str | None = None, *, timeout: float = 30.0) -> WatchAnswer:
        """Wait up to ``timeout`` seconds (at most 60) for events on this principal's
        leases (the admin's: all); pass the answer's ``cursor`` to the next call.

        Answers at once when there are events, else with an empty list at the timeout.
        Without a cursor (or with a stale one) the answer is the current state: every
        pending preemption on the principal's leases, with ``reset`` true.
        """
        params: dict[str, Any] = {"timeout": timeout}
        if cursor is not None:
            params["cursor"] = cursor
        # The HTTP timeout must outlast the server's wait.
        return self._call(
            "GET", "/v1/watch", WatchAnswer, params=params, timeout=float(timeout) + 10.0
        )

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

    def hold(self, lease_id: int | str, reason: str, expires_in: float | None = None) -> LeaseView:
        """Set (or replace) the operator hold on an ACTIVE lease (admin); the lease with
        its ``hold``. ``expires_in`` seconds, or None for a hold until :meth:`unhold`."""
        return self._call(
            "POST",
            f"/v1/leases/{_id(lease_id)}/holds",
            LeaseView,
            json={"reason": reason, "expires_in": expires_in},
        )

    def unhold(self, lease_id: int | str) -> LeaseView:
        """Clear the lease's hold (admin); :class:`NotFound` (code ``no_hold``) if none."""
        return self._call("DELETE", f"/v1/leases/{_id(lease_id)}/holds", LeaseView)

    def tickets(self) -> list[TicketView]:
        """Every waiting ticket the principal may see, in grant order, with why it waits."""
        return self._call("GET", "/v1/tickets", TicketList).tickets

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
