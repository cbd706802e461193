"""``LeaseWatch``: one long poll of ``GET /v1/watch`` per worker, in a background thread.

A holder learns that its lease is to be preempted, or has ended, within one round trip
of the server deciding it, instead of at its next renewal (up to a third of the TTL
later). The thread stays open while the worker holds a lease and carries its cursor
from one lease to the next, so no event between two leases is missed. The renewals go
on as before: a server without the route (404) only costs the instant notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .._remote._client import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    ServiceError,
)
from .._wire._models import WatchEvent

__all__ = ["LeaseWatch"]

logger = logging.getLogger("grafos_scheduler.agent")


class LeaseWatch:
    """Long-polls the caller's lease events and hands each one to ``on_event``.

    ``on_event`` runs on the watch thread; it must not block. :meth:`follow` names the
    lease of interest (the thread starts if it is not running); :meth:`unfollow` lets the
    thread end after its poll in flight returns, unless another lease is followed by
    then, which then reuses it. At most one thread per watch polls at any time.
    """

    #: Pause after a failed poll (the server unreachable, a 5xx), doubled up to 5 s.
    retry_delay = 0.2

    def __init__(
        self,
        client: SchedulerClient,
        on_event: Callable[[WatchEvent], None],
        *,
        poll_timeout: float = 10.0,
    ) -> None:
        if not poll_timeout > 0:
            raise ValueError(f"watch poll_timeout {poll_timeout!r} must be above 0 seconds")
        self.client = client
        self.on_event = on_event
        self.poll_timeout = poll_timeout
        self.cursor: str | None = None
        self.available = True  # False once the server has shown it has no watch route
        self.events = 0  # events received, for tests and logs
        self._lock = threading.Lock()
        self._lease_id: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ready = threading.Event()

    @property
    def following(self) -> str | None:
        return self._lease_id

    def prime(self) -> None:
        """Take a cursor for "now" before the first acquire, so no event is missed.

        A poll with a zero timeout answers at once. Failures are left to the thread:
        it retries, and the renewals cover the gap.
        """
        if self.cursor is not None or not self.available:
            return
        try:
            answer = self.client.watch(None, timeout=0.0)
        except NotFound:
            self._unavailable("the server has no watch route; notice comes with renewals")
            return
        except ServiceError:
            return
        self.cursor = answer.cursor
        for event in answer.events:
            self._deliver(event)

    def follow(self, lease_id: str) -> None:
        """Watch for events of ``lease_id`` (a hex id), starting the thread if needed."""
        with self._lock:
            self._lease_id = lease_id
            if self._closed or not self.available:
                return
            if self._thread is None:
                self._ready.clear()
                self._thread = threading.Thread(target=self._loop, name="lease-watch", daemon=True)
                self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once the thread has a poll open (tests: nothing sent before is missed)."""
        return self._ready.wait(timeout)

    def unfollow(self) -> None:
        with self._lock:
            self._lease_id = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lease_id = None

    def _unavailable(self, why: str) -> None:
        if self.available:
            self.available = False
            logger.warning(why, extra={"event": "watch_unavailable"})

    def _deliver(self, event: WatchEvent) -> None:
        self.events += 1
        try:
            self.on_event(event)
        except Exception:  # the watch must outlive a faulty handler
            logger.exception("watch event handler failed", extra={"event": "watch_handler"})

    def _loop(self) -> None:
        delay = self.retry_delay
        while True:
            if self._ending():
                return
            self._ready.set()
            try:
                answer = self.client.watch(self.cursor, timeout=self.poll_timeout)
            except RequestRejected as exc:
                if exc.field == "cursor" and self.cursor is not None:
                    # A cursor the server no longer knows (it restarted): start from now;
                    # the renewals cover what happened in between.
                    self.cursor = None
                    continue
                self._stop(f"the server refused the watch ({exc.status} {exc.code})")
                return
            except NotFound as exc:
                self._stop(f"the server has no watch route ({exc.status} {exc.code})")
                return
            except (AuthenticationFailed, PermissionDenied) as exc:
                self._stop(f"the watch is not allowed ({exc.status} {exc.code})")
                return
            except Exception as exc:  # unreachable, a 5xx, or the client closed under us
                if self._ending():
                    return
                logger.warning(
                    "watch poll failed",
                    extra={"event": "watch_failed", "error": repr(exc)[:200]},
                )
                time.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = self.retry_delay
            self.cursor = answer.cursor
            for event in answer.events:
                self._deliver(event)

    def _ending(self) -> bool:
        """True, and the thread forgotten, once nothing is followed or the watch closed."""
        with self._lock:
            if self._closed or self._lease_id is None:
                self._thread = None  # follow() starts a new thread from here on
                return True
            return False

    def _stop(self, why: str) -> None:
        self._unavailable(f"{why}; notice comes with renewals")
        with self._lock:
            self._thread = None
