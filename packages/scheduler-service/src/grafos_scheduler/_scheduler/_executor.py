"""The executor thread: it sleeps until the next deadline or a wake, then ticks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .._domain._clock import Clock
from .._domain._errors import StoreFailed, StoreSuperseded

_log = logging.getLogger("grafos_scheduler")

# The executor re-reads the clock at least this often, so a ManualClock or a wall
# clock that jumps cannot leave it asleep past a deadline for long.
MAX_SLEEP = 0.5


class Executor:
    """Runs ``tick`` on its own daemon thread whenever ``wake`` is set or the earliest
    of ``next_due()`` (a monotonic time, or None) comes; at least every MAX_SLEEP."""

    def __init__(
        self,
        tick: Callable[[], None],
        next_due: Callable[[], float | None],
        clock: Clock,
        wake: threading.Event,
    ) -> None:
        self._tick = tick
        self._next_due = next_due
        self._clock = clock
        self._wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread; a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name="grafos-scheduler-executor", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and wait for it (unless called from it)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def _sleep_time(self) -> float:
        now = self._clock.monotonic()
        soonest = now + MAX_SLEEP
        due = self._next_due()
        if due is not None:
            soonest = min(soonest, due)
        return max(0.0, soonest - now)

    def _run(self) -> None:
        wake = self._wake
        while not self._stop.is_set():
            wake.wait(self._sleep_time())
            wake.clear()
            if self._stop.is_set():
                break
            try:
                self._tick()
            except StoreSuperseded:
                # A newer scheduler owns the database now: this one must stop writing.
                _log.warning("the store was taken over by a newer scheduler; executor stops")
                return
            except StoreFailed:
                # Making commits durable failed; nothing may be written any more.
                _log.critical("the store failed to make commits durable; executor stops")
                return
            except Exception:
                # A store error must not kill the executor; it retries on the next wake.
                _log.exception("the scheduler executor failed; retrying")
                self._stop.wait(MAX_SLEEP)
