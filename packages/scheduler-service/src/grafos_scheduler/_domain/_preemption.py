"""The PreemptionManager: non-preemptible markers, deferred preemption, victim choice.

Pure domain code: no I/O, time from an injected clock. The manager decides; the
Scheduler carries decisions out against its store, on its own executor thread.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import attrs

from .._domain._clock import Clock, as_clock
from .._domain._errors import InvalidRequest
from .._domain._ids import check_id, id_hex
from .._domain._limits import check_priority, check_seconds, check_slots


class NonPreemptibleReason(enum.Enum):
    """Why a lease is transiently non-preemptible (advice with a time limit)."""

    CHECKPOINT_IN_PROGRESS = "checkpoint_in_progress"
    OPERATOR_HOLD = "operator_hold"


class PreemptionOutcome(enum.Enum):
    """What :meth:`PreemptionManager.request_preemption` decided."""

    PREEMPTED = "preempted"  # carried out at once
    DEFERRED = "deferred"  # marked: carried out on the last clear or forced at the deadline
    NOT_TRACKED = "not_tracked"  # not an ACTIVE lease


def _reasons_converter(value: Iterable[NonPreemptibleReason]) -> frozenset[NonPreemptibleReason]:
    return frozenset(value)


@attrs.frozen
class PreemptionDecision:
    """The answer to a preemption request, with what it is waiting for."""

    lease_id: int
    outcome: PreemptionOutcome
    cause: str
    reasons: frozenset[NonPreemptibleReason] = attrs.field(
        default=frozenset(), converter=_reasons_converter
    )
    deadline: float | None = None  # set when DEFERRED


@attrs.frozen
class PendingPreemption:
    """A deferred preemption: carried out on the last clear, or forced at ``deadline``.

    For a lease with a grace window, ``grace_deadline`` is the end of the window (the
    request plus the grace): until then the holder may checkpoint and release (a
    cooperative preemption), and ``deadline`` is that same time. Should a flush be in
    progress when the window ends, ``deadline`` moves to the request plus ``max_defer``.
    """

    lease_id: int
    cause: str
    requested_at: float
    deadline: float
    reasons: frozenset[NonPreemptibleReason] = attrs.field(converter=_reasons_converter)
    grace_deadline: float | None = None


@attrs.frozen
class DuePreemption:
    """A preemption that is due now, handed to the executor by :meth:`take_due`.

    ``forced`` is True when the deadline passed while ``reasons`` still held the lease.
    """

    lease_id: int
    cause: str
    requested_at: float
    deadline: float
    forced: bool
    reasons: frozenset[NonPreemptibleReason] = attrs.field(converter=_reasons_converter)
    #: True when the lease's grace window ended without the holder releasing it.
    grace_expired: bool = False


_REASON_BY_KEY = {r.value: r for r in NonPreemptibleReason}
_CHECKPOINT_KEY = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS.value


class _Pending:
    # ``deadline`` is the bound (request + max_defer); ``due`` the next time the
    # executor acts: the grace deadline while the window is open, then ``deadline``.
    __slots__ = ("cause", "deadline", "due", "grace_deadline", "in_grace", "requested_at")

    def __init__(
        self,
        cause: str,
        requested_at: float,
        deadline: float,
        grace_deadline: float | None = None,
    ) -> None:
        self.cause = cause
        self.requested_at = requested_at
        self.deadline = deadline
        self.grace_deadline = grace_deadline
        self.in_grace = grace_deadline is not None
        self.due = deadline if grace_deadline is None else min(grace_deadline, deadline)


class _Level:
    """The tracked leases of one priority.

    ``order`` holds every lease, oldest first by stamp (grant, or latest completed
    flush). ``free`` holds the leases that can be preempted now (unmarked, not pending),
    also in stamp order: reversed, it yields "least work at risk, then youngest" in
    O(victims). A lease that returns to ``free`` without a new stamp (an operator
    hold or a remote report cleared) and would break the order goes to ``late``, a
    short list sorted by stamp, merged in when victims are chosen.
    """

    __slots__ = ("free", "late", "order", "pending_slots", "slots")

    def __init__(self) -> None:
        self.order: dict[int, None] = {}
        self.free: dict[int, None] = {}
        self.late: list[tuple[int, int]] = []  # (stamp, lease id), ascending
        self.slots = 0
        self.pending_slots = 0


# Where an entry sits in its level's preemptible-now set.
_NOT_FREE, _FREE, _LATE = 0, 1, 2


class _Entry:
    # One tracked lease. Markers are keyed by the reason's value string: an Enum's
    # __hash__ is a Python function, a str's is cached, and mark/clear is the hot path.
    __slots__ = (
        "flushed_at",
        "free",
        "grace",
        "level",
        "markers",
        "pending",
        "priority",
        "remote",
        "slots",
        "stamp",
    )

    def __init__(self, priority: int, slots: int, level: _Level, stamp: int, grace: float) -> None:
        self.priority = priority
        self.slots = slots
        self.level = level
        self.stamp = stamp
        # A lease with a grace window is never preemptible "now": it gets its window.
        self.grace = grace
        self.free = _NOT_FREE
        self.markers: dict[str, int] = {}
        self.remote: frozenset[NonPreemptibleReason] = frozenset()
        self.pending: _Pending | None = None
        # Monotonic time of the last completed checkpoint known here (None: none yet).
        self.flushed_at: float | None = None


def _pending_of(lease_id: int, entry: _Entry) -> PendingPreemption | None:
    p = entry.pending
    if p is None:
        return None
    return PendingPreemption(
        lease_id, p.cause, p.requested_at, p.due, _reasons_of(entry), p.grace_deadline
    )


def _reasons_of(entry: _Entry) -> frozenset[NonPreemptibleReason]:
    return frozenset(_REASON_BY_KEY[k] for k in entry.markers) | entry.remote


class PreemptionManager:
    """Tracks the ACTIVE leases, their non-preemptible markers and pending preemptions.

    - ``mark_non_preemptible``/``clear_non_preemptible`` are O(1), in memory, and never
      wait on I/O; they count per (lease, reason) and never go below zero.
    - ``request_preemption`` preempts an unmarked lease at once, or defers a marked one
      until its last marker clears or ``max_defer`` seconds pass, whichever is first.
    - A clear never carries a preemption out: it records the lease as ready and sets
      :attr:`wake`. The executor (:meth:`Scheduler.tick` and its thread) calls
      :meth:`take_due` and does the work. No method calls back into the scheduler.
    - A lease handed out for preemption (PREEMPTED by :meth:`request_preemption`, or
      by :meth:`take_due`) is no longer tracked; its owner either ends it and calls
      :meth:`untrack`, or, when it could not, hands it back with :meth:`restore_taken`.

    Thread-safe. Lock order: a caller may hold its own lock while calling in; the
    manager never calls out while holding its lock.
    """

    def __init__(
        self, clock: Clock | Callable[[], float] | None = None, max_defer: float = 30.0
    ) -> None:
        self._clock = as_clock(clock)
        self._monotonic = self._clock.monotonic
        self._carrier: Callable[[int, str], PreemptionDecision] | None = None
        self._max_defer = check_seconds(max_defer, "max_defer", allow_zero=True)
        self._lock = threading.Lock()
        self._tracked: dict[int, _Entry] = {}
        # Handed out for preemption, not yet ended by the owner: kept to hand back.
        self._taken: dict[int, _Entry] = {}
        self._levels: dict[int, _Level] = {}
        self._priorities: list[int] = []
        self._stamp = 0
        self._ready: deque[int] = deque()
        self._deadlines: list[tuple[float, int]] = []
        #: Set whenever a preemption may have become due; the executor waits on it.
        self.wake = threading.Event()

    @property
    def max_defer(self) -> float:
        """The bound, in seconds, on how long markers can defer a preemption."""
        return self._max_defer

    # -- tracking (called by the scheduler on every grant and every end) ----------------

    def track(self, lease_id: int, priority: int, slots: int, grace: float = 0.0) -> None:
        """Start tracking an ACTIVE lease; it is the youngest of its priority.

        ``grace`` > 0: a preemption request waits for the holder's release (or the end
        of the window) instead of going at once, whatever the markers.
        """
        check_id(lease_id)
        check_priority(priority)
        check_slots(slots)
        grace = check_seconds(grace, "grace", allow_zero=True)
        with self._lock:
            if lease_id in self._tracked or lease_id in self._taken:
                raise InvalidRequest(f"lease {id_hex(lease_id)} is already tracked")
            level = self._level_locked(priority)
            self._stamp += 1
            entry = _Entry(priority, slots, level, self._stamp, grace)
            level.order[lease_id] = None
            level.slots += slots
            self._tracked[lease_id] = entry
            self._free_locked(lease_id, entry)

    def _level_locked(self, priority: int) -> _Level:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
            bisect.insort(self._priorities, priority)
        return level

    def untrack(self, lease_id: int) -> bool:
        """Stop tracking a lease that ended; drops its markers and pending preemption.

        Also forgets a lease handed out for preemption (its owner ended it).
        """
        with self._lock:
            if self._taken.pop(lease_id, None) is not None:
                return True
            return self._untrack_locked(lease_id) is not None

    def _untrack_locked(self, lease_id: int) -> _Entry | None:
        entry = self._tracked.pop(lease_id, None)
        if entry is None:
            return None
        level = entry.level
        self._unfree_locked(lease_id, entry)
        del level.order[lease_id]
        level.slots -= entry.slots
        if entry.pending is not None:
            level.pending_slots -= entry.slots
        if not level.order:
            del self._levels[entry.priority]
            del self._priorities[bisect.bisect_left(self._priorities, entry.priority)]
        return entry

    def _free_locked(self, lease_id: int, entry: _Entry) -> None:
        """Put an unmarked, not pending lease into its level's preemptible-now set."""
        if entry.free or entry.pending is not None or entry.markers or entry.remote or entry.grace:
            return
        level = entry.level
        free = level.free
        last = next(reversed(free), None) if free else None
        if last is None or self._tracked[last].stamp < entry.stamp:
            free[lease_id] = None
            entry.free = _FREE
        else:
            bisect.insort(level.late, (entry.stamp, lease_id))
            entry.free = _LATE

    def _unfree_locked(self, lease_id: int, entry: _Entry) -> None:
        if entry.free == _FREE:
            del entry.level.free[lease_id]
        elif entry.free == _LATE:
            late = entry.level.late
            del late[bisect.bisect_left(late, (entry.stamp, lease_id))]
        entry.free = _NOT_FREE

    def is_tracked(self, lease_id: int) -> bool:
        """True while the lease is tracked (ACTIVE and not being preempted)."""
        return lease_id in self._tracked

    def __len__(self) -> int:
        return len(self._tracked)

    def __bool__(self) -> bool:
        # A manager with nothing tracked is still a manager: `if scheduler.manager:`
        # must not read as "no manager".
        return True

    # -- markers (the hot path) ------------------------------------------------------

    def mark_non_preemptible(self, lease_id: int, reason: NonPreemptibleReason) -> bool:
        """Add one ``reason`` marker to the lease; False if the lease is not tracked."""
        if type(reason) is not NonPreemptibleReason:
            raise InvalidRequest(f"{reason!r} is not a NonPreemptibleReason")
        key = reason._value_
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return False
            markers = entry.markers
            markers[key] = markers.get(key, 0) + 1
            if entry.free == _FREE:  # its first marker: no longer preemptible now
                del entry.level.free[lease_id]
                entry.free = _NOT_FREE
            elif entry.free:
                self._unfree_locked(lease_id, entry)
            return True

    def clear_non_preemptible(self, lease_id: int, reason: NonPreemptibleReason) -> bool:
        """Remove one ``reason`` marker (never below zero); False if not tracked.

        When the last marker of a lease with a pending preemption clears, the lease is
        queued for the executor and :attr:`wake` is set. Nothing else happens here. A
        clear with no such marker changes nothing (not even the victim order).
        """
        if type(reason) is not NonPreemptibleReason:
            raise InvalidRequest(f"{reason!r} is not a NonPreemptibleReason")
        key = reason._value_
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return False
            markers = entry.markers
            count = markers.get(key, 0)
            if count > 1:
                markers[key] = count - 1
            elif count == 1:
                del markers[key]
            else:
                return True  # nothing to clear
            if key == _CHECKPOINT_KEY:
                # A completed flush puts this lease last: least work at risk.
                entry.flushed_at = self._monotonic()
                self._stamp += 1
                entry.stamp = self._stamp
                order = entry.level.order
                del order[lease_id]
                order[lease_id] = None
            if not markers and not entry.remote:
                if entry.pending is not None:
                    self._ready.append(lease_id)
                    self.wake.set()
                elif key == _CHECKPOINT_KEY and not entry.grace:
                    entry.level.free[lease_id] = None  # the newest stamp: in order
                    entry.free = _FREE
                else:
                    self._free_locked(lease_id, entry)
            return True

    def marker_count(self, lease_id: int, reason: NonPreemptibleReason) -> int:
        """How many ``reason`` markers the lease holds now (0 if untracked)."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            return 0 if entry is None else entry.markers.get(reason.value, 0)

    def report_reasons(self, lease_id: int, reasons: Iterable[NonPreemptibleReason]) -> bool:
        """Replace a remote worker's reported in-flight reasons; False if not tracked.

        A reported reason defers preemption exactly like a local marker.
        """
        reported = frozenset(reasons)
        for r in reported:
            if not isinstance(r, NonPreemptibleReason):
                raise InvalidRequest(f"{r!r} is not a NonPreemptibleReason")
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return False
            self._report_locked(lease_id, entry, reported)
            return True

    def _report_locked(
        self, lease_id: int, entry: _Entry, reported: frozenset[NonPreemptibleReason]
    ) -> None:
        if (
            not reported
            and entry.free
            and not entry.remote
            and not entry.markers
            and entry.pending is None
        ):
            # Nothing reported, nothing was, and the lease is preemptible now: nothing
            # changes (a worker with no flush in flight says so with every renewal).
            return
        if (
            NonPreemptibleReason.CHECKPOINT_IN_PROGRESS in entry.remote
            and NonPreemptibleReason.CHECKPOINT_IN_PROGRESS not in reported
        ):
            # A reported flush is no longer reported: it completed (at the latest now).
            entry.flushed_at = self._monotonic()
        entry.remote = reported
        if reported:
            self._unfree_locked(lease_id, entry)
        elif not entry.markers:
            if entry.pending is not None:
                self._ready.append(lease_id)
                self.wake.set()
            else:
                self._free_locked(lease_id, entry)

    def renewal(
        self, lease_id: int, reported: frozenset[NonPreemptibleReason] | None
    ) -> tuple[float | None, PendingPreemption | None]:
        """A renewal's one visit, under one lock: the last checkpoint known before it
        (:meth:`last_checkpoint`), then ``reported`` applied if not None (as
        :meth:`report_reasons`, the reasons already checked), then the lease's pending
        preemption (:meth:`pending`)."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                taken = self._taken.get(lease_id)
                return (None if taken is None else taken.flushed_at), None
            flushed = entry.flushed_at
            if reported is not None:
                self._report_locked(lease_id, entry, reported)
            return flushed, _pending_of(lease_id, entry)

    def note_checkpoint(self, lease_id: int, at: float) -> bool:
        """Record a checkpoint the holder reports it completed at monotonic ``at``
        (a remote worker's renewal says how long ago); False if not tracked."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return False
            if entry.flushed_at is None or at > entry.flushed_at:
                entry.flushed_at = min(at, self._monotonic())
            return True

    def last_checkpoint(self, lease_id: int) -> float | None:
        """Monotonic time of the lease's last completed checkpoint known here, or None.

        Also answers for a lease handed out for preemption, until it is untracked.
        """
        with self._lock:
            entry = self._tracked.get(lease_id) or self._taken.get(lease_id)
            return None if entry is None else entry.flushed_at

    def reasons(self, lease_id: int) -> frozenset[NonPreemptibleReason]:
        """The reasons holding the lease now: local markers and remote reports."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            return frozenset() if entry is None else _reasons_of(entry)

    # -- preemption ------------------------------------------------------------------

    def bind(self, carrier: Callable[[int, str], PreemptionDecision]) -> None:
        """Hand :meth:`request_preemption` to the owner that carries decisions out.

        A :class:`Scheduler` binds itself, so that a request made on its manager is
        recorded, executed and its slots freed exactly as one made on the scheduler.
        """
        self._carrier = carrier

    def request_preemption(self, lease_id: int, cause: str) -> PreemptionDecision:
        """Request a preemption: PREEMPTED now, DEFERRED, or NOT_TRACKED.

        A marked lease is DEFERRED until its last marker clears, or forced at request
        time + ``max_defer``. When a scheduler owns this manager, the request goes
        through it and is carried out (state, slots, audit, callback); a manager on
        its own only decides, as :meth:`decide_preemption` does.
        """
        carrier = self._carrier
        if carrier is not None:
            return carrier(lease_id, cause)
        return self.decide_preemption(lease_id, cause)

    def decide_preemption(self, lease_id: int, cause: str) -> PreemptionDecision:
        """Decide a preemption without carrying it out.

        PREEMPTED stops tracking the lease at once (later markers return False); the
        caller must carry the preemption out, then call :meth:`untrack` (or
        :meth:`restore_taken` if it could not). A lease that is already pending keeps
        its original deadline and cause.
        """
        now = self._clock.monotonic()
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return PreemptionDecision(lease_id, PreemptionOutcome.NOT_TRACKED, cause)
            if (
                entry.pending is not None
                and not entry.pending.in_grace
                and not entry.markers
                and not entry.remote
            ):
                # Pending but unmarked (its markers cleared, or it was restored after a
                # restart): nothing defers it any more, so it is carried out now.
                cause = entry.pending.cause
                self._take_out_locked(lease_id)
                return PreemptionDecision(lease_id, PreemptionOutcome.PREEMPTED, cause)
            if entry.pending is not None:
                return PreemptionDecision(
                    lease_id,
                    PreemptionOutcome.DEFERRED,
                    entry.pending.cause,
                    _reasons_of(entry),
                    entry.pending.due,
                )
            if entry.grace:
                # The holder gets its window to checkpoint and release, markers or not.
                deadline = now + self._max_defer
                pending = _Pending(cause, now, deadline, now + entry.grace)
                self._set_pending_locked(lease_id, entry, pending)
                return PreemptionDecision(
                    lease_id, PreemptionOutcome.DEFERRED, cause, _reasons_of(entry), pending.due
                )
            if not entry.markers and not entry.remote:
                self._take_out_locked(lease_id)
                return PreemptionDecision(lease_id, PreemptionOutcome.PREEMPTED, cause)
            deadline = now + self._max_defer
            self._set_pending_locked(lease_id, entry, _Pending(cause, now, deadline))
            return PreemptionDecision(
                lease_id, PreemptionOutcome.DEFERRED, cause, _reasons_of(entry), deadline
            )

    def _take_out_locked(self, lease_id: int) -> _Entry:
        entry = self._untrack_locked(lease_id)
        assert entry is not None
        self._taken[lease_id] = entry
        return entry

    def restore_taken(self, lease_id: int) -> bool:
        """Hand back a lease taken for preemption that its owner could not end.

        The lease is tracked again exactly as it was: its markers, its place in the
        victim order, and its pending preemption with the same cause and deadline
        (queued for the executor again). False if it was not taken.
        """
        with self._lock:
            entry = self._taken.pop(lease_id, None)
            if entry is None:
                return False
            level = self._level_locked(entry.priority)
            entry.level = level
            entry.free = _NOT_FREE
            order = level.order
            last = next(reversed(order), None) if order else None
            order[lease_id] = None
            if last is not None and self._tracked[last].stamp > entry.stamp:
                # Rare (a failed store write): rebuild this level's order.
                ids = sorted(order, key=lambda i: (self._tracked.get(i) or entry).stamp)
                level.order = dict.fromkeys(ids)
            level.slots += entry.slots
            self._tracked[lease_id] = entry
            pending = entry.pending
            if pending is not None:
                entry.pending = None
                self._set_pending_locked(lease_id, entry, pending)
                if not entry.markers and not entry.remote and not pending.in_grace:
                    self._ready.append(lease_id)
            else:
                self._free_locked(lease_id, entry)
            self.wake.set()
            return True

    def _set_pending_locked(self, lease_id: int, entry: _Entry, pending: _Pending) -> None:
        entry.pending = pending
        entry.level.pending_slots += entry.slots
        self._unfree_locked(lease_id, entry)
        heapq.heappush(self._deadlines, (pending.due, lease_id))
        self.wake.set()  # the executor's sleep must now end by this deadline

    def restore_pending(
        self,
        lease_id: int,
        cause: str,
        requested_at: float,
        deadline: float,
        grace_deadline: float | None = None,
        *,
        ready: bool = True,
    ) -> bool:
        """Re-register a pending preemption read back from the store after a restart.

        Markers do not survive a restart, so the lease is queued as ready at once,
        unless its grace window (``grace_deadline``) is still open: the holder keeps it;
        with ``ready=False`` it waits for its deadline or a report of no markers.
        """
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None:
                return False
            if entry.pending is None:
                pending = _Pending(cause, requested_at, deadline, grace_deadline)
                self._set_pending_locked(lease_id, entry, pending)
            assert entry.pending is not None
            if ready and not entry.markers and not entry.remote and not entry.pending.in_grace:
                self._ready.append(lease_id)
            return True

    def cancel_pending(self, lease_id: int) -> bool:
        """Forget a pending preemption (when the caller could not record it)."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            if entry is None or entry.pending is None:
                return False
            entry.pending = None
            entry.level.pending_slots -= entry.slots
            self._free_locked(lease_id, entry)
            return True

    def pending(self, lease_id: int) -> PendingPreemption | None:
        """The lease's pending preemption, or None."""
        with self._lock:
            entry = self._tracked.get(lease_id)
            return None if entry is None else _pending_of(lease_id, entry)

    def pending_all(self) -> list[PendingPreemption]:
        """Every pending preemption, earliest deadline first."""
        with self._lock:
            found = [
                p
                for lease_id, e in self._tracked.items()
                if (p := _pending_of(lease_id, e)) is not None
            ]
        return sorted(found, key=lambda p: (p.deadline, p.lease_id))

    def eligible_leases(
        self, priority: int, limit: int
    ) -> list[tuple[int, int, int, frozenset[NonPreemptibleReason]]]:
        """Leases below ``priority`` not yet pending preemption, as (lease id, priority,
        slots, reasons), in :meth:`select_victims`'s order of preference: preemptible
        now (no reasons, no grace window) first, then the others; lowest priority, then
        newest first. At most ``limit`` of them."""
        now_: list[tuple[int, int, int, frozenset[NonPreemptibleReason]]] = []
        marked: list[tuple[int, int, int, frozenset[NonPreemptibleReason]]] = []
        with self._lock:
            below = self._priorities[: bisect.bisect_left(self._priorities, priority)]
            for p in below:
                for lease_id in reversed(self._levels[p].order):
                    entry = self._tracked[lease_id]
                    if entry.pending is not None:
                        continue
                    reasons = _reasons_of(entry)
                    # A lease with a grace window is never preemptible now (it gets its
                    # window), so it goes with the marked ones, as in select_victims.
                    target = marked if reasons or entry.grace else now_
                    if len(target) < limit:
                        target.append((lease_id, p, entry.slots, reasons))
        return (now_ + marked)[:limit]

    def pending_slots(self) -> int:
        """Slots held by leases whose preemption is pending: they will free soon."""
        with self._lock:
            return sum(level.pending_slots for level in self._levels.values())

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None; the executor sleeps until then."""
        with self._lock:
            heap = self._deadlines
            while heap:
                deadline, lease_id = heap[0]
                entry = self._tracked.get(lease_id)
                pending = None if entry is None else entry.pending
                if pending is not None and pending.due == deadline:
                    return deadline
                heapq.heappop(heap)
            return None

    def take_due(self) -> list[DuePreemption]:
        """Hand over every preemption due now, and stop tracking those leases.

        Due means: the last marker cleared (carried out), or the deadline passed while
        still marked (forced). A lease re-marked before the executor got to it waits on.
        The caller ends each lease (then :meth:`untrack`), or hands it back with
        :meth:`restore_taken` when it could not.
        """
        now = self._clock.monotonic()
        due: list[DuePreemption] = []
        with self._lock:
            ready = self._ready
            while ready:
                lease_id = ready.popleft()
                entry = self._tracked.get(lease_id)
                if entry is None or entry.pending is None or entry.markers or entry.remote:
                    continue
                if entry.pending.in_grace:
                    continue  # the window is the holder's: its end is on the heap
                due.append(self._take_locked(lease_id, entry, forced=False))
            heap = self._deadlines
            while heap and heap[0][0] <= now:
                deadline, lease_id = heapq.heappop(heap)
                entry = self._tracked.get(lease_id)
                pending = None if entry is None else entry.pending
                if entry is None or pending is None or pending.due != deadline:
                    continue
                marked = bool(entry.markers) or bool(entry.remote)
                if pending.in_grace:
                    pending.in_grace = False
                    if marked and pending.deadline > deadline:
                        # A flush in progress at the end of the window defers it, as
                        # markers always do, up to the request plus max_defer.
                        pending.due = pending.deadline
                        heapq.heappush(heap, (pending.due, lease_id))
                        continue
                    due.append(self._take_locked(lease_id, entry, forced=True, grace=True))
                    continue
                due.append(self._take_locked(lease_id, entry, forced=marked))
        return due

    def _take_locked(
        self, lease_id: int, entry: _Entry, *, forced: bool, grace: bool = False
    ) -> DuePreemption:
        pending = entry.pending
        assert pending is not None
        reasons = _reasons_of(entry)
        self._take_out_locked(lease_id)
        return DuePreemption(
            lease_id,
            pending.cause,
            pending.requested_at,
            pending.due,
            forced,
            reasons,
            grace_expired=grace,
        )

    # -- victim choice ---------------------------------------------------------------

    def eligible_slots(self, priority: int) -> int:
        """Slots that preempting leases below ``priority`` could still free.

        Leases already pending preemption are not counted: their slots are on the way.
        """
        with self._lock:
            below = self._priorities[: bisect.bisect_left(self._priorities, priority)]
            levels = self._levels
            return sum(levels[p].slots - levels[p].pending_slots for p in below)

    def select_victims(self, slots: int, priority: int) -> list[int]:
        """Choose a minimal set of leases whose preemption frees ``slots`` for ``priority``.

        Only leases below ``priority`` that are not already pending preemption count.
        Order of preference: preemptible now before deferred; then the lowest
        priority; then the least work at risk (most recent completed flush, or grant);
        then the youngest. Returns [] when the eligible leases cannot free enough:
        preempting some of them would not help. Leases that can be preempted now are
        found in O(victims), however many leases are marked; deferred victims cost
        O(victims + pending) more, since every preemptible-now lease was taken first.
        """
        if slots <= 0:
            return []
        with self._lock:
            below = self._priorities[: bisect.bisect_left(self._priorities, priority)]
            levels = self._levels
            eligible = sum(levels[p].slots - levels[p].pending_slots for p in below)
            if eligible < slots:
                return []
            chosen: list[tuple[int, int]] = []
            freed = 0
            tracked = self._tracked
            for p in below:
                level = levels[p]
                for lease_id in self._free_newest_first(level):
                    n = tracked[lease_id].slots
                    chosen.append((lease_id, n))
                    freed += n
                    if freed >= slots:
                        break
                if freed >= slots:
                    break
            if freed < slots:
                # Every preemptible-now lease below is chosen; the rest must be deferred.
                for p in below:
                    for lease_id in reversed(levels[p].order):
                        entry = tracked[lease_id]
                        if entry.pending is not None or entry.free:
                            continue
                        chosen.append((lease_id, entry.slots))
                        freed += entry.slots
                        if freed >= slots:
                            break
                    if freed >= slots:
                        break
        # Minimal: drop any victim the others already cover, least preferred first.
        for i in range(len(chosen) - 1, -1, -1):
            if freed - chosen[i][1] >= slots:
                freed -= chosen[i][1]
                del chosen[i]
        return [lease_id for lease_id, _ in chosen]

    def _free_newest_first(self, level: _Level) -> Iterator[int]:
        """The level's preemptible-now leases, newest stamp first (``free`` and ``late``)."""
        late = level.late
        if not late:
            yield from reversed(level.free)
            return
        tracked = self._tracked
        i = len(late) - 1
        for lease_id in reversed(level.free):
            stamp = tracked[lease_id].stamp
            while i >= 0 and late[i][0] > stamp:
                yield late[i][1]
                i -= 1
            yield lease_id
        while i >= 0:
            yield late[i][1]
            i -= 1
