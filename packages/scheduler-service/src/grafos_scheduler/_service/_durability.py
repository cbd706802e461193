"""``DurabilityWaiter``: the event loop waits for group commit without a thread per request.

A handler decides in the scheduler (``wait=False``: the change is written, not yet
durable), then ``await waiter.wait()`` before it answers. When nothing is waiting for
an fsync that returns at once. Otherwise the request's future joins a list, and one
thread makes everything written so far durable (one group COMMIT and fsync) and
settles every future on the list: no answer leaves before its change is durable, and
no request hops to a worker thread to wait.

The thread is woken at the end of the event loop's turn, not by each request, so
every request the turn handled is in the group it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .._domain._errors import StoreFailed
from .._scheduler._scheduler import Scheduler

__all__ = ["DurabilityWaiter"]


def _settle(futures: list[asyncio.Future[None]], failure: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue  # the request was cancelled (its client went away)
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure)


class DurabilityWaiter:
    """Futures that resolve once the scheduler's writes before them are durable."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # The loop whose turn ends with a wake of the thread (None: no wake is due).
        self._kick_loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        """End the thread (at the app's shutdown); requests still waiting are settled."""
        with self._lock:
            self._stopped = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join(timeout=5)

    async def wait(self) -> None:
        """Return once everything the scheduler wrote before this call is durable.

        Raises :class:`StoreFailed` if making it durable failed.
        """
        future = self.when_durable()
        if future is not None:
            await future

    def when_durable(self) -> asyncio.Future[None] | None:
        """None when everything the scheduler wrote so far is durable; else a future
        that resolves once it is (for a caller with no coroutine to await in).

        Raises :class:`StoreFailed` at once if making it durable failed; the future
        ends with it if it fails later. Call it on the event loop.
        """
        scheduler = self._scheduler
        if scheduler.durable:
            failed = scheduler.failed
            if failed is not None:
                raise failed
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting.append((loop, future))
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(
                    target=self._run, name="grafos-durability", daemon=True
                )
                self._thread.start()
            kick = self._kick_loop is not loop
            self._kick_loop = loop
        if kick:
            # Callbacks scheduled now run after those already due in this turn.
            loop.call_soon(self._kick)
        return future

    def _kick(self) -> None:
        with self._lock:
            self._kick_loop = None
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._waiting = self._waiting, []
                stopped = self._stopped
            if not batch:
                if stopped:
                    return
                continue
            failure: BaseException | None = None
            try:
                # Everything those requests wrote was written before they queued.
                self._scheduler.wait_durable()
            except StoreFailed as exc:
                failure = exc
            except BaseException as exc:  # settle every request, whatever happened
                failure = exc
            # One wake-up per loop for the whole group, not one per request.
            by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for loop, future in batch:
                by_loop.setdefault(loop, []).append(future)
            for loop, futures in by_loop.items():
                # RuntimeError: that loop has closed, and nobody waits on it any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, futures, failure)
            if stopped:
                return
