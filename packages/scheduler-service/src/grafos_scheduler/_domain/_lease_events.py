"""The lease event log: what a holder must hear at once, for the watch.

The scheduler appends an event for every committed preemption request
(``preemption_requested``) and every committed end (``lease_ended``). The log keeps
a ring of the most recent events, numbered in order, so its memory is bounded
whatever the traffic, and the open preemption requests (requested, lease not ended
yet), so a watcher whose cursor is gone can be given the current state instead.

Cursors are ``<epoch>-<seq>``: the epoch is the scheduler process's, so a cursor
from before a restart is recognised as stale rather than misread.

Listeners are called after each append, in the appending thread, outside the log's
lock; they must not block (the HTTP service's listener only wakes its event loop).
"""

from __future__ import annotations

import enum
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable

import attrs

from .._domain._errors import InvalidRequest
from .._domain._lease import LeaseState
from .._domain._limits import check_count

_log = logging.getLogger("grafos_scheduler")

#: Events the ring keeps by default.
DEFAULT_EVENT_CAPACITY = 4096

_CURSOR = re.compile(r"([0-9a-f]{1,64})-([0-9]{1,19})")

Listener = Callable[[], None]


class LeaseEventKind(enum.Enum):
    """What a watch event says."""

    PREEMPTION_REQUESTED = "preemption_requested"
    LEASE_ENDED = "lease_ended"


@attrs.frozen
class LeaseEvent:
    """One event; times are on the scheduler's monotonic clock.

    - ``deadline``: for ``preemption_requested``, when the scheduler will carry the
      preemption out if the holder does nothing (the end of its grace window, or the
      max_defer bound); None for ``lease_ended``.
    - ``outcome``: for ``lease_ended``, the audit kind of the end (``release``,
      ``expire``, ``fence``, ``preemption_executed``, ``preemption_forced``,
      ``preemption_cooperative``); None otherwise.
    """

    kind: LeaseEventKind
    lease_id: int
    job: str
    holder: str
    state: LeaseState
    at: float
    cause: str | None = None
    deadline: float | None = None
    grace: float = 0.0
    outcome: str | None = None
    work_lost_records: int | None = None
    work_lost_seconds: float | None = None
    #: Its place in the log, given by :meth:`LeaseEventLog.append`.
    seq: int = 0


@attrs.frozen
class EventBatch:
    """What :meth:`LeaseEventLog.read` found.

    ``reset`` is True when the cursor was absent, of another process or older than
    the ring: ``events`` are then the open preemption requests (the current state),
    not a delta. ``cursor`` is the one to pass next.
    """

    events: tuple[LeaseEvent, ...]
    cursor: str
    reset: bool
    head: int


class LeaseEventLog:
    """A bounded ring of lease events with cursors; thread-safe."""

    def __init__(self, epoch: str, capacity: int = DEFAULT_EVENT_CAPACITY) -> None:
        check_count(capacity, "event capacity", 1)
        self.epoch = epoch
        self.capacity = capacity
        self._ring: deque[LeaseEvent] = deque(maxlen=capacity)
        self._open: dict[int, LeaseEvent] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    # -- writing (the scheduler, after a commit) -----------------------------------

    def append(self, events: Iterable[LeaseEvent]) -> None:
        """Number and keep ``events``, then tell the listeners once."""
        added = False
        with self._lock:
            for draft in events:
                self._seq += 1
                event = attrs.evolve(draft, seq=self._seq)
                self._ring.append(event)
                if event.kind is LeaseEventKind.PREEMPTION_REQUESTED:
                    self._open[event.lease_id] = event
                else:
                    self._open.pop(event.lease_id, None)
                added = True
            listeners = list(self._listeners) if added else []
        for listener in listeners:
            try:
                listener()
            except Exception:
                _log.exception("a lease event listener failed")

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- reading -------------------------------------------------------------------

    @property
    def head(self) -> int:
        """The seq of the last event (0 when none yet)."""
        return self._seq

    def cursor(self, seq: int | None = None) -> str:
        return f"{self.epoch}-{self._seq if seq is None else seq}"

    def parse_cursor(self, cursor: object) -> int | None:
        """The seq a cursor of this log stands for, or None for a stale one (another
        process's epoch). A malformed cursor, or one beyond the head, is refused."""
        match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
        if match is None:
            raise InvalidRequest(
                f"cursor {cursor!r} is not a cursor from a watch answer (<epoch>-<seq>)"
            )
        if match.group(1) != self.epoch:
            return None
        seq = int(match.group(2))
        if seq > self._seq:
            raise InvalidRequest(f"cursor {cursor!r} is ahead of this scheduler's events")
        return seq

    def read(self, cursor: str | None, holder: str | None = None) -> EventBatch:
        """The events after ``cursor`` (only ``holder``'s when given), or the current
        state when the cursor is None, stale or older than the ring (``reset``)."""
        after = None if cursor is None else self.parse_cursor(cursor)
        with self._lock:
            head = self._seq
            oldest = self._ring[0].seq if self._ring else head + 1
            if after is None or after < oldest - 1:
                events = tuple(
                    e for e in self._open.values() if holder is None or e.holder == holder
                )
                return EventBatch(events, self.cursor(head), True, head)
            found: list[LeaseEvent] = []
            # Newest first, stopping at the cursor: a long-poll re-read costs the delta.
            for event in reversed(self._ring):
                if event.seq <= after:
                    break
                if holder is None or event.holder == holder:
                    found.append(event)
            found.reverse()
            return EventBatch(tuple(found), self.cursor(head), False, head)

    def __len__(self) -> int:
        return len(self._ring)
