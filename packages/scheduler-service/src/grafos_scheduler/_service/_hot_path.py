"""``HotPath``: the four calls a worker makes most, answered without Litestar.

Acquire, renew, batch renewal and release are most of a lease service's traffic, and
their work is in memory (a grant adds one SQLite write). Litestar's routing, middleware,
dependency and response machinery cost several times that work per request, so these
four routes are matched here first, in front of the app.

The hot path answers only a request it fully understands: the right method and path, a
valid bearer token, a declared ``Content-Length`` within the app's limit, and a body
that decodes. Anything else (no token, a bad body, a wrong media type, a chunked body)
goes on to the Litestar app unchanged, with the body it already read, so every refusal
keeps the one shape and wording the app gives it. Once the scheduler is called, the
answer, an error too, is rendered here by the same code the routes use: the
decisions of :mod:`._decisions`, the error map of :mod:`._errors` and the same JSON
encoder.
The request is counted in the metrics under the same route template.

It has two doors. As an ASGI app it is the app's outermost handler, for any server.
Under grafos's own :class:`~._http_protocol.HttpProtocol` the protocol asks it first,
from its parser's callbacks: :meth:`HotPath.match` on the request line and headers,
:meth:`HotPath.decode` on the body, :meth:`HotPath.answer_soon` for the answer, with
no ASGI task, scope or messages at all (a renewal costs about a fifth less CPU).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.serialization import default_serializer
from litestar.types import (
    ASGIApp,
    HTTPReceiveMessage,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from .._wire._models import AcquireRequest, ReleaseRequest, RenewalsRequest, RenewRequest
from ._auth import Authenticator, Principal
from ._body import decode_body
from ._context import Decision, ServiceContext
from ._decisions import acquire_decision, release_decision, renew_decision, renewals_decision
from ._errors import error_body, escaped_body

__all__ = ["HotCall", "HotPath"]

_LEASE_CALL = re.compile(r"/v1/leases/([0-9a-f]{32})/(renew|release)")
_ENCODER = msgspec.json.Encoder(enc_hook=default_serializer)
_JSON_HEADERS = [(b"content-type", b"application/json")]
_HEADERS = frozenset({b"authorization", b"content-type", b"content-length"})

# A route decides a call: (ctx, principal, lease id from the path, body) -> the answer.
_Decide = Callable[[ServiceContext, Principal, str, Any], Decision[tuple[int, Any]]]


def _acquire(ctx: ServiceContext, who: Principal, _: str, body: Any) -> Decision[tuple[int, Any]]:
    return acquire_decision(ctx, who, body)


def _renew(ctx: ServiceContext, who: Principal, lease: str, body: Any) -> Decision[tuple[int, Any]]:
    finish = renew_decision(ctx, who, lease, body)
    return lambda: (200, finish())


def _release(
    ctx: ServiceContext, who: Principal, lease: str, body: Any
) -> Decision[tuple[int, Any]]:
    finish = release_decision(ctx, who, lease, body)
    return lambda: (200, finish())


def _renew_many(
    ctx: ServiceContext, who: Principal, _: str, body: Any
) -> Decision[tuple[int, Any]]:
    finish = renewals_decision(ctx, who, body)
    return lambda: (200, finish())


# A route: its template (for the metrics), its body model, and its decision.
_Route = tuple[str, type[Any], _Decide]
_ACQUIRE: _Route = ("/v1/leases", AcquireRequest, _acquire)
_RENEWALS: _Route = ("/v1/renewals", RenewalsRequest, _renew_many)
_LEASE_CALLS: dict[str, _Route] = {
    "renew": ("/v1/leases/{lease_id}/renew", RenewRequest, _renew),
    "release": ("/v1/leases/{lease_id}/release", ReleaseRequest, _release),
}


class HotCall:
    """A hot lease call, matched from its request line and headers before its body."""

    __slots__ = ("content_type", "lease_id", "path", "principal", "route", "size", "started")

    def __init__(
        self,
        route: _Route,
        path: str,
        lease_id: str,
        principal: Principal,
        content_type: str,
        size: int,
    ) -> None:
        self.route = route
        self.path = path
        self.lease_id = lease_id
        self.principal = principal
        self.content_type = content_type
        self.size = size  # the declared Content-Length
        self.started = time.perf_counter()


class HotPath:
    """An ASGI app that answers the hot lease calls itself and passes on the rest."""

    def __init__(
        self,
        app: ASGIApp,
        context: ServiceContext,
        tokens: Authenticator,
        *,
        max_body: int,
        on_store_failed: Callable[[], object] | None = None,
    ) -> None:
        self.app = app
        self._ctx = context
        self._tokens = tokens
        self._max_body = max_body
        self._on_store_failed = on_store_failed
        #: Requests answered here rather than passed on to the app.
        self.served = 0

    @staticmethod
    def of(app: Any) -> HotPath | None:
        """The hot path in front of ``app`` (through a server's wrappers), if any."""
        for _ in range(16):  # uvicorn's wrappers, then the Litestar app's handler
            if isinstance(app, HotPath):
                return app
            handler = getattr(app, "asgi_handler", None)
            app = handler if isinstance(handler, HotPath) else getattr(app, "app", None)
            if app is None:
                break
        return None

    def match(
        self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> HotCall | None:
        """The hot call this request is, or None for one the app must answer (not a
        hot route, no valid token, no declared length within the limit)."""
        if method != "POST":
            return None
        lease_id = ""
        if path == "/v1/leases":
            route = _ACQUIRE
        elif path == "/v1/renewals":
            route = _RENEWALS
        elif (match := _LEASE_CALL.fullmatch(path)) is not None:
            lease_id = match[1]
            route = _LEASE_CALLS[match[2]]
        else:
            return None
        found: dict[bytes, bytes] = {}
        for key, value in headers:
            # The first of a repeated header counts, as it does for the app.
            if key in _HEADERS and key not in found:
                found[key] = value
        authorization = found.get(b"authorization")
        length = found.get(b"content-length")
        principal = self._tokens.authenticate(
            None if authorization is None else authorization.decode("latin-1")
        )
        size = int(length) if length is not None and length.isdigit() else -1
        if principal is None or not 0 <= size <= self._max_body:
            return None  # the app refuses it, in its words
        content_type = found.get(b"content-type", b"").decode("latin-1")
        return HotCall(route, path, lease_id, principal, content_type, size)

    def decode(self, call: HotCall, raw: bytes) -> Any:
        """The call's body decoded; raises for one the app must refuse, in its words."""
        return decode_body(call.route[1], raw, call.content_type, f"POST {call.path}")

    async def answer(self, call: HotCall, body: Any) -> tuple[int, bytes]:
        """The call's status and JSON answer, once durable."""
        try:
            outcome: Any = await self._ctx.answer(self._decide(call, body))
        except Exception as exc:
            outcome = exc
        return self.render(call, outcome)

    def answer_soon(self, call: HotCall, body: Any, done: Callable[[Any], None]) -> None:
        """:meth:`answer` without a coroutine: ``done`` gets the outcome for
        :meth:`render` (the route's status and result, or the error that refused it)
        once durable, in this call when nothing waits."""
        self._ctx.answer_soon(self._decide(call, body), done)

    def answered(self, call: HotCall, status: int) -> None:
        """Count an answer sent, in the metrics under its route template."""
        self.served += 1
        self._ctx.metrics.observe_request(
            "POST", call.route[0], status, time.perf_counter() - call.started
        )

    def _decide(self, call: HotCall, body: Any) -> Callable[[], Decision[tuple[int, Any]]]:
        decide = call.route[2]
        return lambda: decide(self._ctx, call.principal, call.lease_id, body)

    def render(self, call: HotCall, outcome: Any) -> tuple[int, bytes]:
        """The status and JSON answer of an outcome: the error body of an exception."""
        if isinstance(outcome, Exception):
            result = escaped_body(
                error_body(
                    outcome,
                    principal=call.principal,
                    method="POST",
                    path=call.path,
                    on_store_failed=self._on_store_failed,
                )
            )
            return result.status, _ENCODER.encode(result)
        status, result = outcome
        return status, _ENCODER.encode(result)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = (
            self.match(scope["method"], scope["path"], scope["headers"])
            if scope["type"] == ScopeType.HTTP
            else None
        )
        if call is None:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive, call.size)
        if raw is None:
            return  # the client went away before its body arrived
        try:
            body = self.decode(call, raw)
        except Exception:
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["user"] = call.principal
        status, payload = await self.answer(call, body)
        start_event: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
        await send(start_event)
        body_event: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": payload,
            "more_body": False,
        }
        await send(body_event)
        self.answered(call, status)


async def _read_body(receive: Receive, size: int) -> bytes | None:
    """The whole body of ``size`` bytes; None if the client went away first."""
    chunks: list[bytes] = []
    got = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk: bytes = message.get("body", b"")
        got += len(chunk)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    # The server stops at the declared length; a short body is the client gone.
    return b"".join(chunks) if got == size else None


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands over ``raw`` first, then whatever the client sends."""
    sent = False

    async def replay() -> HTTPReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        message: HTTPReceiveMessage = await receive()  # type: ignore[assignment]
        return message

    return replay
