"""``GET /v1/watch``: a long poll over the caller's leases, answered the moment the
scheduler records a preemption request or an end.

The handler is async and waits in the server's event loop, not in a thread: a waiting
watcher costs one future. The scheduler's :class:`LeaseEventLog` calls the
:class:`WatchHub`'s listener (in whatever thread committed the change), which hands
one wake-up to the loop with ``call_soon_threadsafe``; every waiting handler then
re-reads the log from its cursor and answers if it found an event of its principal.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from .._domain._clock import Clock
from .._domain._errors import InvalidRequest
from .._domain._lease_events import LeaseEvent, LeaseEventKind, LeaseEventLog
from .._wire._models import WatchAnswer, WatchEvent, format_id
from .._wire._parsing import FieldError
from . import _policy
from ._auth import Principal
from ._errors import error_responses
from ._views import Now

__all__ = ["DEFAULT_WATCH_TIMEOUT", "MAX_WATCH_TIMEOUT", "WatchHub", "watch", "watch_state"]

#: The longest a watch waits (seconds); longer would outlast proxies' idle timeouts.
MAX_WATCH_TIMEOUT = 60.0
DEFAULT_WATCH_TIMEOUT = 30.0

_STATE_KEY = "grafos_watch"


class WatchHub:
    """Wakes the watch handlers of one event loop when the scheduler's log grows."""

    def __init__(self, log: LeaseEventLog, clock: Clock) -> None:
        self.log = log
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._wake_queued = False

    async def start(self) -> None:
        """Attach to the running loop (the server's startup hook)."""
        self._loop = asyncio.get_running_loop()
        self.log.add_listener(self._on_append)

    async def stop(self) -> None:
        self.log.remove_listener(self._on_append)
        self._wake()
        self._loop = None

    def _on_append(self) -> None:
        # Called in the committing thread: one hand-off to the loop, never a wait.
        # Appends that come before the loop ran the last wake-up share it.
        loop = self._loop
        if loop is None or self._wake_queued:
            return
        self._wake_queued = True
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop closed under us: nobody is waiting
            self._wake_queued = False

    def _wake(self) -> None:
        self._wake_queued = False
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def waiter(self) -> asyncio.Future[None]:
        """A future the next append resolves; take it before reading the log, so an
        append between the read and the wait is not missed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        self._waiters.discard(future)

    async def wait(self, future: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait({future}, timeout=max(0.0, timeout))
        finally:
            self.forget(future)


def watch_state(hub: WatchHub) -> dict[str, Any]:
    """The app state that carries ``hub`` to the handler."""
    return {_STATE_KEY: hub}


def _event_view(event: LeaseEvent, now: Now) -> WatchEvent:
    ended = event.kind is LeaseEventKind.LEASE_ENDED
    return WatchEvent(
        lease_id=format_id(event.lease_id),
        kind=event.kind.value,
        deadline_in=now.until_or_none(event.deadline),
        deadline=now.iso_or_none(event.deadline),
        job=event.job,
        holder=event.holder,
        state=event.state.value,
        cause=event.cause,
        grace=event.grace,
        at=now.iso(event.at),
        outcome=event.outcome if ended else None,
        work_lost_records=event.work_lost_records,
        work_lost_seconds=event.work_lost_seconds,
    )


@get(
    "/v1/watch",
    summary=(
        "Wait (long poll) for preemption requests and ends on the caller's leases (the "
        "admin's: all); answers at once on an event, or with no events at the timeout"
    ),
    responses=error_responses(),
)
async def watch(
    request: Request[Any, Any, Any],
    cursor: Annotated[
        str | None,
        QueryParameter(
            max_length=100,
            description="the cursor of the previous answer; none for the current state",
        ),
    ] = None,
    timeout: Annotated[
        float,
        QueryParameter(ge=0, le=MAX_WATCH_TIMEOUT, description="seconds to wait, at most 60"),
    ] = DEFAULT_WATCH_TIMEOUT,
) -> WatchAnswer:
    hub: WatchHub = request.app.state[_STATE_KEY]
    principal: Principal = request.scope["user"]
    if not math.isfinite(timeout) or not 0 <= timeout <= MAX_WATCH_TIMEOUT:
        raise FieldError(
            "timeout", f"timeout {timeout!r} must be from 0 to {MAX_WATCH_TIMEOUT:g} seconds"
        )
    holder = _policy.holder_scope(principal)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    future = hub.waiter()
    try:
        batch = hub.log.read(cursor, holder)
    except InvalidRequest as exc:
        hub.forget(future)
        raise FieldError("cursor", str(exc)) from None
    reset = batch.reset
    while not batch.events and (left := give_up - loop.time()) > 0:
        await hub.wait(future, left)
        future = hub.waiter()
        batch = hub.log.read(batch.cursor, holder)
    hub.forget(future)
    now = Now.read(hub.clock)
    return WatchAnswer(
        events=[_event_view(e, now) for e in batch.events], cursor=batch.cursor, reset=reset
    )
