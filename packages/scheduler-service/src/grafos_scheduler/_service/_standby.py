"""StandbyRedirect: the ASGI front of a replica, which sends callers to the leader.

On the leader it hands each request to the API app built over the leader's current
scheduler (one app per epoch, started and stopped with its leadership). On a standby,
every API call gets 307 with ``Location`` = the leader's advertised URL plus the same
path and query, or 503 ``not_leader`` when no leader is known. ``GET /healthz`` (open)
and ``GET /metrics`` (any token) are answered by each replica itself, with its role
and epoch. An answer leaves a leader only if it still leads the same epoch when the
answer starts: one that stepped down mid-request answers like a standby, never with
what it computed while it was being deposed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol
from urllib.parse import quote

from .._scheduler._replica import ReplicaRole, ReplicaStatus
from .._scheduler._scheduler import Scheduler
from .._service._auth import TokenConfig

__all__ = ["Leadership", "SoleLeader", "StandbyRedirect"]

# Plain ASGI types: the front sees every scope type, Litestar's aliases only some.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

_log = logging.getLogger("grafos_scheduler.http")


class Leadership(Protocol):
    """What the front asks of a replica: its role now (``Replica`` implements it)."""

    def status(self) -> ReplicaStatus:
        """The role now; a leader's ``scheduler`` is set."""
        ...

    @property
    def refused_writes(self) -> int:
        """Writes the database refused because this replica's epoch had ended."""
        ...


class SoleLeader:
    """The one scheduler on a store of its own (SQLite): always the leader, epoch 0."""

    refused_writes = 0

    def __init__(self, scheduler: Scheduler, url: str | None = None) -> None:
        self._status = ReplicaStatus(ReplicaRole.LEADER, 0, url, scheduler)

    def status(self) -> ReplicaStatus:
        return self._status


class _Lifespan:
    """Builds an inner API app and drives its lifespan, on a thread of its own.

    Its hooks are blocking (the audit logger reads the store): on the serving loop, a
    deposed leader's shutdown hooks, stuck on a database that no longer answers,
    would stall every caller, standby answers included.
    """

    def __init__(self, make_app: Callable[[], ASGIApp]) -> None:
        self._make_app = make_app
        self.app: ASGIApp | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="grafos-api-lifespan", daemon=True
        )
        self._thread.start()
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> ASGIApp:
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            self.stop_soon()
            raise

    async def _start(self) -> ASGIApp:
        app = self._make_app()
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope: Any = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._from_app.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the API app did not start: {reply.get('message')}")
        self.app = app
        return app

    async def _stop(self) -> None:
        if self._task is not None and self._to_app is not None and self._from_app is not None:
            await self._to_app.put({"type": "lifespan.shutdown"})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._from_app.get(), timeout=30)
                await asyncio.wait_for(self._task, timeout=30)
        self._loop.call_soon(self._loop.stop)

    def stop_soon(self) -> concurrent.futures.Future[None]:
        """Shut the app down on its own thread; returns at once, with its future."""
        return asyncio.run_coroutine_threadsafe(self._stop(), self._loop)


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _error_body(status: int, message: str) -> bytes:
    return json.dumps(
        {"status": status, "error": "not_leader", "message": message, "field": None}
    ).encode()


def _location(leader_url: str, scope: Scope) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else quote(scope["path"])
    query = scope.get("query_string") or b""
    return leader_url.rstrip("/") + path + ("?" + query.decode("latin-1") if query else "")


async def _not_leader(send: Send, status: ReplicaStatus, scope: Scope) -> None:
    if status.leader_url is None:
        await _answer(
            send,
            503,
            _error_body(503, "this replica is a standby and no leader is known; retry shortly"),
            headers=[(b"retry-after", b"1")],
        )
        return
    location = _location(status.leader_url, scope)
    await _answer(
        send,
        307,
        _error_body(307, f"this replica is a standby; the leader is at {status.leader_url}"),
        headers=[(b"location", location.encode("latin-1"))],
    )


def _replica_metrics(status: ReplicaStatus, refused: int) -> bytes:
    lines = [
        "# HELP grafos_replica_role This replica's role: 1 for the one it has",
        "# TYPE grafos_replica_role gauge",
        *(
            f'grafos_replica_role{{role="{role.value}"}} {int(status.role is role)}'
            for role in ReplicaRole
        ),
        "# HELP grafos_replica_epoch The leadership epoch this replica leads or last saw",
        "# TYPE grafos_replica_epoch gauge",
        f"grafos_replica_epoch {status.epoch}",
        "# HELP grafos_replica_refused_writes_total Writes refused: this replica's epoch had ended",
        "# TYPE grafos_replica_refused_writes_total counter",
        f"grafos_replica_refused_writes_total {refused}",
    ]
    return ("\n".join(lines) + "\n").encode()


class StandbyRedirect:
    """The ASGI app a replica serves: the leader's API, or a redirect to the leader.

    ``make_app`` builds the API app over a scheduler (``create_app(s, tokens)``);
    the front starts it when its replica becomes leader and stops it when it steps
    down. ``tokens`` authenticate ``/metrics`` on a standby.
    """

    def __init__(
        self,
        leadership: Leadership,
        make_app: Callable[[Scheduler], ASGIApp],
        tokens: TokenConfig,
    ) -> None:
        self.leadership = leadership
        self._make_app = make_app
        self._tokens = tokens
        self._current: tuple[Scheduler, _Lifespan] | None = None  # its app is started
        self._switch: asyncio.Lock | None = None
        self._follower: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        status = self.leadership.status()
        path = scope["path"]
        if path == "/healthz":
            body = json.dumps(
                {
                    "status": "ok",
                    "role": status.role.value,
                    "epoch": status.epoch,
                    "leader_url": status.leader_url,
                }
            ).encode()
            await _answer(send, 200, body)
            return
        if path == "/metrics" and not status.is_leader:
            await self._standby_metrics(scope, send, status)
            return
        if not status.is_leader or status.scheduler is None:
            await _not_leader(send, status, scope)
            return
        app = await self._app_for(status.scheduler)
        if app is None:  # stepped down while the app was being started
            await _not_leader(send, self.leadership.status(), scope)
            return
        if path == "/metrics":
            await self._leader_metrics(app, scope, receive, send, status)
            return
        await app(scope, receive, self._guarded(send, status, scope))

    def _guarded(self, send: Send, started: ReplicaStatus, scope: Scope) -> Send:
        dropped = False

        async def guarded_send(message: Message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start":
                now = self.leadership.status()
                if not now.is_leader or now.epoch != started.epoch:
                    dropped = True
                    _log.warning(
                        "answer withheld: leadership epoch %d ended during the request",
                        started.epoch,
                        extra={"event": "answer_withheld", "epoch": started.epoch},
                    )
                    await _not_leader(send, now, scope)
                    return
            if dropped:
                return
            await send(message)

        return guarded_send

    async def _standby_metrics(self, scope: Scope, send: Send, status: ReplicaStatus) -> None:
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
        if self._tokens.authenticate(header) is None:
            body = json.dumps(
                {
                    "status": 401,
                    "error": "unauthorized",
                    "message": "missing bearer token" if header is None else "invalid bearer token",
                    "field": None,
                }
            ).encode()
            await _answer(
                send, 401, body, headers=[(b"www-authenticate", b'Bearer realm="grafos-scheduler"')]
            )
            return
        await _answer(
            send,
            200,
            _replica_metrics(status, self.leadership.refused_writes),
            content_type=b"text/plain; version=0.0.4; charset=utf-8",
        )

    async def _leader_metrics(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, status: ReplicaStatus
    ) -> None:
        # Buffer the scheduler's metrics and add the replica's own to them.
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, capture)
        body = b"".join(chunks)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if start.get("status") == 200:
            body += _replica_metrics(status, self.leadership.refused_writes)
        await send(
            {
                "type": "http.response.start",
                "status": start.get("status", 500),
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # -- one API app per leadership --------------------------------------------------

    async def _app_for(self, scheduler: Scheduler) -> ASGIApp | None:
        if self._switch is None:
            self._switch = asyncio.Lock()
        current = self._current
        if current is not None and current[0] is scheduler:
            return current[1].app
        async with self._switch:
            current = self._current
            if current is not None and current[0] is scheduler:
                return current[1].app
            if current is not None:
                self._current = None
                current[1].stop_soon()
            status = self.leadership.status()
            if status.scheduler is not scheduler:
                return None
            lifespan = _Lifespan(lambda: self._make_app(scheduler))
            app = await lifespan.start()
            self._current = (scheduler, lifespan)
            return app

    async def _follow(self) -> None:
        """Start the API app when this replica wins, stop it when it steps down."""
        while True:
            await asyncio.sleep(0.02)
            try:
                status = self.leadership.status()
                current = self._current
                if status.scheduler is not None:
                    await self._app_for(status.scheduler)
                elif current is not None and self._switch is not None:
                    async with self._switch:
                        if self._current is current:
                            self._current = None
                            current[1].stop_soon()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("switching the API app to a new leadership failed")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._follower = asyncio.ensure_future(self._follow())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._follower is not None:
                    self._follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._follower
                current, self._current = self._current, None
                if current is not None:
                    # A clean stop waits for the audit log's last lines, not forever.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.wrap_future(current[1].stop_soon()), 10)
                await send({"type": "lifespan.shutdown.complete"})
                return
