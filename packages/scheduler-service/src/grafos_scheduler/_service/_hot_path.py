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
answer, an error too, is rendered here by the same code the routes use: the route
cores of :mod:`._routes`, the error map of :mod:`._errors` and the same JSON encoder.
The request is counted in the metrics under the same route template.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
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
from ._errors import error_body, escaped_body
from ._routes import (
    ServiceContext,
    acquire_lease,
    release_lease,
    renew_lease,
    renew_leases,
)

__all__ = ["HotPath"]

_LEASE_CALL = re.compile(r"/v1/leases/([0-9a-f]{32})/(renew|release)")
_ENCODER = msgspec.json.Encoder(enc_hook=default_serializer)
_JSON_HEADERS = [(b"content-type", b"application/json")]
_HEADERS = frozenset({b"authorization", b"content-type", b"content-length"})

# A route: its template (for the metrics), its body model, and its call.
_Call = Callable[[ServiceContext, Principal, str, Any], Awaitable[tuple[int, Any]]]


async def _acquire(ctx: ServiceContext, who: Principal, _: str, body: Any) -> tuple[int, Any]:
    return await acquire_lease(ctx, who, body)


async def _renew(ctx: ServiceContext, who: Principal, lease: str, body: Any) -> tuple[int, Any]:
    return 200, await renew_lease(ctx, who, lease, body)


async def _release(ctx: ServiceContext, who: Principal, lease: str, body: Any) -> tuple[int, Any]:
    return 200, await release_lease(ctx, who, lease, body)


async def _renew_many(ctx: ServiceContext, who: Principal, _: str, body: Any) -> tuple[int, Any]:
    return 200, await renew_leases(ctx, who, body)


_Route = tuple[str, type[Any], _Call]
_ACQUIRE: _Route = ("/v1/leases", AcquireRequest, _acquire)
_RENEWALS: _Route = ("/v1/renewals", RenewalsRequest, _renew_many)
_LEASE_CALLS: dict[str, _Route] = {
    "renew": ("/v1/leases/{lease_id}/renew", RenewRequest, _renew),
    "release": ("/v1/leases/{lease_id}/release", ReleaseRequest, _release),
}


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        lease_id = ""
        if path == "/v1/leases":
            route = _ACQUIRE
        elif path == "/v1/renewals":
            route = _RENEWALS
        elif (match := _LEASE_CALL.fullmatch(path)) is not None:
            lease_id = match[1]
            route = _LEASE_CALLS[match[2]]
        else:
            await self.app(scope, receive, send)
            return
        found: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            # The first of a repeated header counts, as it does for the app.
            if key in _HEADERS and key not in found:
                found[key] = value
        authorization = found.get(b"authorization")
        length = found.get(b"content-length")
        content_type = found.get(b"content-type", b"").decode("latin-1")
        principal = self._tokens.authenticate(
            None if authorization is None else authorization.decode("latin-1")
        )
        size = int(length) if length is not None and length.isdigit() else -1
        if principal is None or not 0 <= size <= self._max_body:
            await self.app(scope, receive, send)  # the app refuses it, in its words
            return
        raw = await _read_body(receive, size)
        if raw is None:
            return  # the client went away before its body arrived
        template, model, call = route
        try:
            body = decode_body(model, raw, content_type, f"POST {path}")
        except Exception:
            await self.app(scope, _replay(raw, receive), send)
            return
        scope["user"] = principal
        try:
            status, result = await call(self._ctx, principal, lease_id, body)
        except Exception as exc:
            result = escaped_body(
                error_body(
                    exc,
                    principal=principal,
                    method="POST",
                    path=path,
                    on_store_failed=self._on_store_failed,
                )
            )
            status = result.status
        payload = _ENCODER.encode(result)
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
        self.served += 1
        self._ctx.metrics.observe_request("POST", template, status, time.perf_counter() - start)


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
