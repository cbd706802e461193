"""Clocks: the monotonic one decides, the wall one survives restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .._domain._errors import InvalidRequest


class Clock(Protocol):
    """The scheduler's source of time.

    ``monotonic()`` drives every decision (expiry, preemption deadlines): it never
    jumps backwards. ``wall()`` is persisted beside each monotonic deadline, because a
    monotonic reading means nothing to the next process; after a restart the remaining
    time is ``deadline_wall - clock.wall()``. Both must be cheap and must not block.
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """The real clocks: :func:`time.monotonic` and :func:`time.time`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds from :func:`time.time`."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


# A fixed, exactly representable epoch offset: tests that restart a scheduler
# recompute monotonic deadlines from wall ones, and dyadic steps stay exact.
_MANUAL_WALL_EPOCH = 1_700_000_000.0


class ManualClock:
    """A clock that moves only when told to, for deterministic tests.

    Both readings advance together; ``wall()`` is ``monotonic()`` shifted by a fixed
    epoch, so recomputing a deadline from its wall value is exact for dyadic steps.
    Thread-safe.
    """

    __slots__ = ("_lock", "_now", "_wall_offset")

    def __init__(self, start: float = 0.0, *, wall_start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = float(start)
        wall = _MANUAL_WALL_EPOCH + self._now if wall_start is None else float(wall_start)
        self._wall_offset = wall - self._now

    def monotonic(self) -> float:
        """The current manual time."""
        with self._lock:
            return self._now

    def wall(self) -> float:
        """The manual time shifted onto the Unix epoch."""
        with self._lock:
            return self._now + self._wall_offset

    def advance(self, seconds: float) -> float:
        """Move both readings forward by ``seconds`` (>= 0) and return the new time."""
        if not seconds >= 0.0:  # also refuses NaN
            raise ValueError(f"a clock cannot advance by {seconds!r} seconds")
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self.monotonic()!r})"


class CallableClock:
    """Adapts a bare monotonic function (``time.monotonic``, a test's fake) to a Clock.

    The function's seconds serve as the wall reading too, so deadlines persisted
    across a restart on the same function see the time it moved while the service
    was down: a fake clock advanced "during" a restart expires what lapsed. (After a
    reboot ``time.monotonic`` starts again from zero; the scheduler never lets a
    restored lease keep more than a fresh TTL, so nothing is held forever. Use the
    default :class:`SystemClock` in production.)
    """

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], float]) -> None:
        self._read = read

    def monotonic(self) -> float:
        return float(self._read())

    def wall(self) -> float:
        return float(self._read())

    def __repr__(self) -> str:
        return f"CallableClock({self._read!r})"


def as_clock(clock: Clock | Callable[[], float] | None) -> Clock:
    """The Clock for ``clock``: the system's for None, an adapter for a bare function."""
    if clock is None:
        return SystemClock()
    if callable(getattr(clock, "monotonic", None)) and callable(getattr(clock, "wall", None)):
        return clock  # type: ignore[return-value]
    if callable(clock):
        return CallableClock(clock)
    raise InvalidRequest(
        f"clock {clock!r} is neither a Clock (monotonic() and wall()) nor a function "
        "returning monotonic seconds"
    )
