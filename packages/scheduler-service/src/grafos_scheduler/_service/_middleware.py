"""ASGI middleware: bearer-token authentication, and request latency for the metrics."""

from __future__ import annotations

import logging
import time

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ._auth import Authenticator
from ._dashboard import DASHBOARD_PATHS
from ._events import event
from ._metrics import SchedulerMetrics

__all__ = ["OPEN_PATHS", "Authentication", "Latency"]

#: Paths served without a bearer token (the dashboard's page signs in from the browser).
OPEN_PATHS = frozenset({"/healthz", *DASHBOARD_PATHS})


class Authentication:
    """Resolve the bearer token to a principal (``scope["user"]``), or refuse with 401."""

    def __init__(self, app: ASGIApp, tokens: Authenticator) -> None:
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
                event(
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


class Latency:
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
