"""The Scheduler: the use cases, behind one lock, over the lease book and a store.

Every use case asks the :class:`LeaseBook` for a :class:`Change`, commits it with
:meth:`_commit` (one store transaction), and only then applies it to the book. The
executor thread lives in ``_executor``, restart recovery in ``_recovery``, the read
models and paging in ``_read_model``, audit payloads in the domain.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from .._domain import _audit_entries as entries
from .._domain._audit import AuditKind, AuditLog, AuditRecord, chain
from .._domain._change import Change
from .._domain._clock import Clock, as_clock
from .._domain._errors import (
    CapacityExceeded,
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    NoHold,
    NotLeaseHolder,
    SchedulerError,
    StoreFailed,
    TicketGranted,
    UnknownLease,
    UnknownTicket,
)
from .._domain._ids import ID_LIMIT, check_id, id_hex, new_id
from .._domain._lease import Lease, LeaseState, Ticket
from .._domain._lease_book import LeaseBook
from .._domain._lease_events import LeaseEvent, LeaseEventKind, LeaseEventLog
from .._domain._limits import (
    MAX_BATCH_RENEWALS,
    MAX_WORK_LOST_SECONDS,
    check_cause,
    check_count,
    check_grace,
    check_hold_reason,
    check_hold_seconds,
    check_name,
    check_priority,
    check_seconds,
    check_slots,
    check_token,
    check_ttl,
    check_work_lost,
)
from .._domain._observer import PreemptionFlushObserver
from .._domain._preemption import (
    DuePreemption,
    NonPreemptibleReason,
    PendingPreemption,
    PreemptionDecision,
    PreemptionManager,
    PreemptionOutcome,
)
from .._domain._renewal import Renewal, Renewed
from .._domain._rows import LeaseRow, TicketRow
from .._domain._ticket_wait import TicketWait
from .._domain._work_lost import WorkLost
from .._scheduler._executor import Executor
from .._scheduler._read_model import MAX_LEASE_PAGE, ReadModel
from .._scheduler._recovery import plan_restart, restore_pending
from .._scheduler._ticket_waits import explain_waits
from .._store._protocol import SchedulerStore

_log = logging.getLogger("grafos_scheduler")

PreemptCallback = Callable[[Lease], None]

__all__ = ["MAX_LEASE_PAGE", "PreemptCallback", "Scheduler"]


_NO_REASONS: frozenset[NonPreemptibleReason] = frozenset()


def _check_reasons(reasons: object) -> frozenset[NonPreemptibleReason] | None:
    if reasons is None:
        return None
    if not reasons and isinstance(reasons, list | tuple | frozenset | set):
        return _NO_REASONS  # most renewals report nothing
    if isinstance(reasons, str | bytes) or not isinstance(reasons, Iterable):
        raise InvalidRequest(f"reasons {reasons!r} is not a collection of NonPreemptibleReason")
    checked: set[NonPreemptibleReason] = set()
    for r in list(reasons):
        if not isinstance(r, NonPreemptibleReason):
            raise InvalidRequest(f"reason {r!r} is not a NonPreemptibleReason")
        checked.add(r)
    return frozenset(checked)


def _check_holder(holder: str | None) -> None:
    if holder is not None:
        check_name(holder, "holder")


_CheckedRenewal = tuple[int, int, frozenset[NonPreemptibleReason] | None, float | None]


def _check_age(age: object) -> float | None:
    if age is None:
        return None
    return check_seconds(age, "checkpoint_age", allow_zero=True, most=MAX_WORK_LOST_SECONDS)


#: The entries of a batch renewal: ``(lease_id, fencing_token, reasons)`` each, or
#: ``(lease_id, fencing_token, reasons, checkpoint_age)``.
RenewalEntries = Sequence[
    tuple[int, int, Iterable[NonPreemptibleReason] | None]
    | tuple[int, int, Iterable[NonPreemptibleReason] | None, float | None]
]


class _DurableAudit:
    """The audit source of :attr:`Scheduler.audit`: the store's, each read returned
    only once what it saw is durable (it may see a group not yet committed), as
    every other read is."""

    __slots__ = ("_scheduler", "_store")

    def __init__(self, scheduler: Scheduler, store: SchedulerStore) -> None:
        self._scheduler = scheduler
        self._store = store

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        records = self._store.audit_records(after_seq, limit)
        if records and not self._scheduler.durable:
            self._scheduler.wait_durable()
        return records

    def audit_head(self) -> tuple[int, str]:
        head = self._store.audit_head()
        if not self._scheduler.durable:
            self._scheduler.wait_durable()
        return head


class _Decision:
    """:meth:`Scheduler._decide`'s block. A class, not a generator: every scheduler
    call enters one, and a generator-based context manager costs several times more."""

    __slots__ = ("_level", "_scheduler", "_wait")

    def __init__(self, scheduler: Scheduler, wait: bool) -> None:
        self._scheduler = scheduler
        self._wait = wait
        self._level = 0

    def __enter__(self) -> None:
        depth = self._scheduler._depth
        self._level = level = getattr(depth, "level", 0)
        depth.level = level + 1
        try:
            self._scheduler._lock.acquire()
        except BaseException:
            depth.level = level
            raise

    def __exit__(self, *exc: object) -> None:
        scheduler = self._scheduler
        try:
            scheduler._lock.release()
        finally:
            scheduler._depth.level = self._level
            if self._level == 0 and self._wait:
                scheduler._wait_durable()


class Scheduler:
    """Leases a fixed capacity of slots, with fencing tokens, preemption and an audit log.

    - :meth:`acquire` grants a lease when there is room. Otherwise it queues a
      :class:`Ticket` (granted in priority order, first come first served within a
      priority) and asks the :class:`PreemptionManager` for lower-priority victims.
    - At most one ACTIVE lease per job: a second acquire for a job that holds an
      ACTIVE lease or a pending ticket raises :class:`JobAlreadyLeased`.
    - Every state change and its audit record commit in one store transaction, and
      reach memory only after it committed.
    - The executor (:meth:`start`'s thread, or :meth:`tick` called by hand) expires
      leases, carries out due preemptions and invokes preemption callbacks.
    - Lease- and ticket-scoped calls take ``holder``: when given, a lease or ticket
      of another holder raises :class:`NotLeaseHolder` before anything changes.

    Thread-safe. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        capacity: int,
        store: SchedulerStore,
        *,
        clock: Clock | Callable[[], float] | None = None,
        max_defer: float = 30.0,
        autostart: bool = True,
        checkpoint_interval: float = 5.0,
        leader_change: bool = False,
        max_grace: float | None = None,
    ) -> None:
        self.capacity: int = check_count(capacity, "capacity", 1)
        if isinstance(checkpoint_interval, bool) or not 0 < checkpoint_interval <= 3600:
            raise InvalidRequest(
                f"checkpoint_interval {checkpoint_interval!r} is not a number of seconds "
                "in (0, 3600]"
            )
        #: Seconds between checkpoints of renewed expiries (renewals live in memory).
        self.checkpoint_interval = float(checkpoint_interval)
        self._store = store
        # A new leader of a shared store: restored deferred preemptions wait for their
        # deadlines (the holders' markers are alive and come back with their renewals).
        self._leader_change = bool(leader_change)
        self._clock: Clock = as_clock(clock)
        max_defer = check_seconds(max_defer, "max_defer", allow_zero=True)
        #: The longest grace window an acquire may ask for (never above max_defer,
        #: which bounds every preemption from its request).
        self.max_grace: float = (
            max_defer
            if max_grace is None
            else check_seconds(max_grace, "max_grace", allow_zero=True)
        )
        #: The manager tracking ACTIVE leases and their non-preemptible markers
        #: (``mark_non_preemptible``, ``clear_non_preemptible``, ``reasons``). Its
        #: ``request_preemption`` is bound to this scheduler's, so a request made on
        #: either is recorded and carried out the same way.
        self.manager = PreemptionManager(self._clock, max_defer)
        #: A ``grafos_pipeline.CheckpointFlushObserver`` wired to :attr:`manager`.
        self.observer = PreemptionFlushObserver(self.manager)
        #: The audit chain: ``verify()``, ``head()``, ``records(after_seq, limit)``;
        #: each read returns once the records it saw are durable.
        self.audit = AuditLog(_DurableAudit(self, store))
        # Monotonic readings in the store are trusted only by the process that took them.
        epoch = secrets.token_hex(8)
        self._book = LeaseBook(self.capacity, epoch, self.manager)
        self._read = ReadModel(store, self._clock, epoch)
        #: Preemption requests and ends, for watchers (``GET /v1/watch``); an event
        #: enters it only once its change is durable.
        self.events = LeaseEventLog(epoch)
        # Events of changes written but maybe not durable yet, numbered in write
        # order; _publish moves them to the log once a durability check covers them.
        self._unpublished: deque[tuple[int, list[LeaseEvent]]] = deque()
        self._written = 0
        self._publishing = threading.Lock()
        self._lock = threading.RLock()
        self._depth = threading.local()  # how deep this thread is in _decide blocks
        self._closed = False
        self._failed: StoreFailed | None = None
        # Leases renewed since the last checkpoint: their expiry is only in memory.
        self._renewed: set[int] = set()
        self._next_checkpoint = self._clock.monotonic() + self.checkpoint_interval
        self._callbacks: dict[int, PreemptCallback] = {}
        self._due_callbacks: deque[tuple[PreemptCallback, Lease]] = deque()
        self._executor = Executor(self.tick, self._next_due, self._clock, self.manager.wake)
        with self._decide():
            self._recover()
        self.manager.bind(self._request_from_manager)
        if autostart:
            self.start()

    # -- the commit point -------------------------------------------------------------

    def _decide(self, *, wait: bool = True) -> _Decision:
        """Hold the lock to decide and commit; once it is released, wait until every
        commit written so far is durable (group commit: the fsync happens outside
        the lock, and one fsync serves every caller waiting for it).

        So no answer leaves, and no read returns, before what it saw is durable. On
        the way out of an error too: a refusal may reveal a change (an expiry).
        Nested blocks wait only at the outermost one, once the lock is free.
        """
        return _Decision(self, wait)

    def _wait_durable(self) -> None:
        store = self._store
        written = self._written  # before the check: those writes are covered by it
        if not store.durable:
            try:
                store.wait_durable()
            except StoreFailed as exc:
                self._failed = exc
                self.manager.wake.set()
                raise
        self._publish(written)

    def _publish(self, written: int) -> None:
        """Give watchers the events of the changes up to ``written``, now durable."""
        if not self._unpublished:
            return
        with self._publishing:  # one publisher at a time keeps the log in write order
            events: list[LeaseEvent] = []
            pending = self._unpublished
            while pending and pending[0][0] <= written:
                events.extend(pending.popleft()[1])
            if events:
                self.events.append(events)

    @property
    def durable(self) -> bool:
        """True when nothing this scheduler wrote is still waiting for its fsync."""
        written = self._written
        if not self._store.durable:
            return False
        self._publish(written)
        return True

    def wait_durable(self) -> None:
        """Return once everything written so far is durable; :class:`StoreFailed` if
        making it durable failed (the scheduler then refuses every call)."""
        self._wait_durable()

    @property
    def failed(self) -> StoreFailed | None:
        """The failed fsync that stopped this scheduler, or None."""
        return self._failed

    def _commit(self, change: Change) -> None:
        """Write ``change`` in one store transaction, then apply it to memory.

        If the store raises, memory is left exactly as it was.
        """
        self._store.commit(change)
        self._book.apply(change)
        for row in change.updated_leases:
            if row.state is not LeaseState.ACTIVE:
                self._ended(row)
        if change.audit:
            self._queue_events(self._events_of(change))

    def _queue_events(self, events: list[LeaseEvent]) -> None:
        # Under the lock, after the write: published once it is durable (no watcher
        # hears of a change a crash could still undo).
        if events:
            self._unpublished.append((self._written + 1, events))
            self._written += 1

    def _events_of(self, change: Change) -> list[LeaseEvent]:
        """The watch events of a committed change: requests that left the lease
        ACTIVE (pending), and ends (with the audit kind that ended them)."""
        kinds: dict[int, list[str]] = {}
        for record in change.audit:
            if record.lease_id is not None:
                kinds.setdefault(record.lease_id, []).append(record.kind)
        now = self._clock.monotonic()
        events: list[LeaseEvent] = []
        for row in change.updated_leases:
            found = kinds.get(row.lease_id)
            if not found:
                continue
            if row.state is not LeaseState.ACTIVE:
                events.append(
                    LeaseEvent(
                        kind=LeaseEventKind.LEASE_ENDED,
                        lease_id=row.lease_id,
                        job=row.job,
                        holder=row.holder,
                        state=row.state,
                        at=now,
                        cause=row.preempt_cause,
                        grace=row.grace,
                        outcome=found[-1],
                        work_lost_records=row.work_lost_records,
                        work_lost_seconds=row.work_lost_seconds,
                    )
                )
            elif AuditKind.PREEMPTION_REQUESTED.value in found:
                events.append(self._requested_event(row, now))
        return events

    def _requested_event(self, row: LeaseRow, now: float) -> LeaseEvent:
        pending = self.manager.pending(row.lease_id)
        return LeaseEvent(
            kind=LeaseEventKind.PREEMPTION_REQUESTED,
            lease_id=row.lease_id,
            job=row.job,
            holder=row.holder,
            state=row.state,
            at=now,
            cause=row.preempt_cause,
            deadline=None if pending is None else pending.deadline,
            grace=row.grace,
        )

    def _work_lost(
        self,
        row: LeaseRow,
        now: float,
        wall: float,
        records: int | None = None,
        seconds: float | None = None,
    ) -> WorkLost:
        """What ending ``row`` now loses: as the holder reported it, or the seconds
        since the last completed checkpoint known (the grant if none)."""
        if seconds is not None:
            return WorkLost(records, seconds)
        flushed = self.manager.last_checkpoint(row.lease_id)
        if flushed is not None:
            return WorkLost.since(flushed, now, records)
        if row.checkpoint_wall is not None:
            return WorkLost.since(row.checkpoint_wall, wall, records)
        return WorkLost.since(row.granted_at, now, records)

    def _checkpoint_locked(self) -> int:
        """Write the expiries (and checkpoint times) renewals left only in memory;
        not audited."""
        self._next_checkpoint = self._clock.monotonic() + self.checkpoint_interval
        renewed, self._renewed = self._renewed, set()
        active = self._book.active
        rows = tuple(active[i] for i in renewed if i in active)
        if not rows:
            return 0
        try:
            self._commit(Change(updated_leases=rows))
        except BaseException:
            self._renewed |= renewed
            raise
        return len(rows)

    def checkpoint(self) -> int:
        """Write the renewed leases' expiries now; returns how many were written.

        The executor does this every :attr:`checkpoint_interval` seconds. It keeps the
        file's view of each lease (``leases list --db``) close to memory's; a restart
        does not depend on it (every restored ACTIVE lease gets a fresh TTL).
        """
        with self._decide():
            self._check_open()
            return self._checkpoint_locked()

    def _ended(self, row: LeaseRow) -> None:
        callback = self._callbacks.pop(row.lease_id, None)
        if row.state is LeaseState.PREEMPTED and callback is not None:
            self._due_callbacks.append((callback, self._read.lease(row)))
            self.manager.wake.set()

    # -- lifecycle -------------------------------------------------------------------

    def _recover(self) -> None:
        """Reload state, give every ACTIVE lease a fresh TTL, record the (re)start."""
        now, wall = self._now()
        restart = plan_restart(
            self._store,
            capacity=self.capacity,
            max_defer=self.manager.max_defer,
            epoch=self._book.epoch,
            now=now,
            wall=wall,
        )
        self._book.head = restart.head
        self._commit(restart.change)
        for ticket in restart.tickets:
            self._book.restore_ticket(ticket)
        kept = [r for r in restart.change.updated_leases if r.state is LeaseState.ACTIVE]
        restore_pending(self.manager, kept, now=now, wall=wall, hold=self._leader_change)
        # Watchers learn of the restored requests (a new process: their cursors reset).
        self._queue_events(
            [self._requested_event(r, now) for r in kept if r.preempt_cause is not None]
        )
        self._grant_tickets_locked()

    def start(self) -> None:
        """Start the executor thread: expiry, due preemptions, preemption callbacks."""
        with self._decide():
            self._check_open()
            self._executor.start()

    def close(self) -> None:
        """Checkpoint the renewed expiries, stop the executor, close the store;
        idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._failed is None:
                try:
                    self._checkpoint_locked()
                except SchedulerError:
                    _log.exception("the last checkpoint of renewed leases failed")
            self._closed = True
        self._executor.stop()
        try:
            if self._failed is None:
                self._store.wait_durable()
                self._publish(self._written)  # nothing is written after _closed
        except StoreFailed:
            _log.exception("the last commits could not be made durable")
        finally:
            with self._lock:
                try:
                    self._store.close()
                except StoreFailed:  # its last group could not be committed
                    _log.exception("the store's last commits were lost at close")

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def clock(self) -> Clock:
        """The clock every decision of this scheduler is made on."""
        return self._clock

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def _active(self) -> dict[int, LeaseRow]:
        # The ACTIVE rows in memory, for tests that look inside.
        return self._book.active

    def _check_open(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise SchedulerError("the scheduler is closed")

    def _next_due(self) -> float | None:
        deadline = self.manager.next_deadline()
        with self._lock:
            times = [self._book.next_expiry(), self._book.next_hold_expiry(), deadline]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def tick(self) -> None:
        """Expire due leases, carry out due preemptions, grant tickets, run callbacks.

        The executor thread calls this; tests with a ManualClock call it by hand.
        """
        with self._decide():
            if self._closed or self._failed is not None:
                return
            self._expire_due_locked()
            if self._clock.monotonic() >= self._next_checkpoint:
                self._checkpoint_locked()
            failure: Exception | None = None
            for due in self.manager.take_due():
                # Each due preemption on its own: a failed one is handed back to the
                # manager (same cause and deadline) and the others still go.
                try:
                    self._carry_out_locked(due)
                except Exception as exc:
                    failure = failure or exc
            self._grant_tickets_locked()
        self._run_callbacks()
        if failure is not None:
            raise failure

    def _run_callbacks(self) -> None:
        while True:
            try:
                callback, lease = self._due_callbacks.popleft()
            except IndexError:
                return
            try:
                callback(lease)
            except Exception:
                _log.exception("preemption callback for lease %s failed", id_hex(lease.lease_id))

    # -- lookups -----------------------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        return self._clock.monotonic(), self._clock.wall()

    def _ended_error(self, row: LeaseRow) -> SchedulerError:
        if row.state is LeaseState.EXPIRED:
            return LeaseExpired(row.lease_id, self._read.lease(row).expires_at)
        return LeaseNotActive(row.lease_id, row.state.value)

    def _lease_row(self, lease_id: int, holder: str | None) -> LeaseRow:
        """The lease's row in memory or in the store, checked against ``holder``."""
        row = self._book.active.get(lease_id)
        if row is None:
            row = self._store.get_lease(lease_id)
            if row is None:
                raise UnknownLease(lease_id)
        if holder is not None and row.holder != holder:
            raise NotLeaseHolder(lease_id)
        return row

    def _active_row(self, lease_id: int, holder: str | None = None) -> LeaseRow:
        active = self._book.active.get(lease_id)
        if active is not None and (holder is None or active.holder == holder):
            return active  # the common case, in memory
        row = self._lease_row(lease_id, holder)
        if row.state is not LeaseState.ACTIVE:
            raise self._ended_error(row)
        active = self._book.active.get(lease_id)
        if active is None:  # ended in the store, not yet noticed here
            raise self._ended_error(row)
        return active

    def _ticket_holder_check(self, ticket_id: int, holder: str | None) -> None:
        if holder is None:
            return
        row = self._book.tickets.get(ticket_id)
        owner = row.holder if row is not None else None
        if row is None:
            stored = self._store.lease_for_ticket(ticket_id)
            if stored is None:
                raise UnknownTicket(ticket_id)
            owner = stored.holder
        if owner != holder:
            raise NotLeaseHolder(ticket_id, "ticket")

    # -- state changes (each one Change, one transaction) -----------------------------

    def _grant_locked(
        self,
        job: str,
        holder: str,
        priority: int,
        slots: int,
        ttl: float,
        ticket_id: int | None,
        grace: float = 0.0,
    ) -> Lease:
        now, wall = self._now()
        change, row = self._book.grant(
            lease_id=new_id(),
            job=job,
            holder=holder,
            priority=priority,
            slots=slots,
            ttl=ttl,
            ticket_id=ticket_id,
            last_token=self._store.fencing_token(job),
            now=now,
            wall=wall,
            grace=grace,
        )
        self._commit(change)
        return self._read.lease(row)

    def _grant_tickets_locked(self) -> dict[int, Lease]:
        """Grant queued tickets in order while the head fits (no overtaking).

        Then, for the tickets still waiting, ask for the preemptions they need now
        (victims may have become eligible since they queued); unmarked victims go at
        once and free room for the next round.
        """
        granted = self._grant_fitting_locked()
        while self._book.tickets and self._preempt_for_queue_locked():
            granted.update(self._grant_fitting_locked())
        return granted

    def _grant_fitting_locked(self) -> dict[int, Lease]:
        granted: dict[int, Lease] = {}
        while (t := self._book.head_ticket()) is not None and t.slots <= self._book.free:
            granted[t.ticket_id] = self._grant_locked(
                t.job, t.holder, t.priority, t.slots, t.ttl, t.ticket_id, t.grace
            )
        return granted

    def _end_locked(self, change: Change) -> Lease:
        self._commit(change)
        return self._read.lease(change.updated_leases[0])

    def _expire_due_locked(self) -> None:
        now = self._clock.monotonic()
        _, wall = self._now()
        while (held := self._book.due_hold_expiry(now)) is not None:
            # Lapsed holds first, then lapsed leases: each with its own audit record.
            self._commit(self._book.expire_hold(held, wall))
        expired = False
        while (row := self._book.due_expiry(now)) is not None:
            # The heap entry goes only once the expiry committed: a failed write
            # leaves it in place, and the next call tries again. The work is lost
            # at the expiry, not when the executor got to it.
            lost = self._work_lost(row, row.expires_at, wall - (now - row.expires_at))
            self._commit(self._book.expire(row, wall, lost))
            expired = True
        if expired:
            self._follow_up_locked()

    def _carry_out_locked(self, due: DuePreemption) -> None:
        row = self._book.active.get(due.lease_id)
        if row is None:
            self.manager.untrack(due.lease_id)
            return
        now, wall = self._now()
        change = self._book.preempt_due(
            row,
            due.cause,
            due.reasons,
            forced=due.forced,
            wall=wall,
            lost=self._work_lost(row, now, wall),
            grace_expired=due.grace_expired,
        )
        try:
            self._commit(change)
        except BaseException:
            self._retrack(row)
            raise

    def _retrack(self, row: LeaseRow) -> None:
        # The store refused the change: the lease is still ACTIVE, so the manager gets
        # it back as it was (markers, order, pending preemption with its deadline).
        if (
            row.lease_id in self._book.active
            and not self.manager.is_tracked(row.lease_id)
            and not self.manager.restore_taken(row.lease_id)
        ):
            self.manager.track(row.lease_id, row.priority, row.slots)

    def _follow_up_locked(self) -> None:
        """Grant tickets after a change that already committed; never raises.

        The change stands whatever happens here: a failure is logged and the
        executor tries again on its next tick.
        """
        try:
            self._grant_tickets_locked()
        except Exception:
            _log.exception("granting queued tickets failed; the executor will retry")
            self.manager.wake.set()

    def _request_preemption_locked(
        self, row: LeaseRow, cause: str, *, grant: bool = True
    ) -> PreemptionDecision:
        already = row.preempt_cause is not None
        decision = self.manager.decide_preemption(row.lease_id, cause)
        if decision.outcome is PreemptionOutcome.PREEMPTED:
            now, wall = self._now()
            lost = self._work_lost(row, now, wall)
            try:
                self._commit(self._book.preempt_now(row, decision.cause, wall, lost))
            except BaseException:
                self._retrack(row)
                raise
            if grant:
                self._follow_up_locked()
        elif decision.outcome is PreemptionOutcome.DEFERRED and not already:
            assert decision.deadline is not None
            now, wall = self._now()
            change = self._book.defer(
                row, cause, decision.reasons, deadline=decision.deadline, now=now, wall=wall
            )
            try:
                self._commit(change)
            except BaseException:
                self.manager.cancel_pending(row.lease_id)
                raise
        return decision

    def _preempt_for_queue_locked(self) -> bool:
        """Request the preemptions the waiting tickets need; True if any went at once.

        A ticket whose shortfall the leases below it cannot cover is refused
        preemption, and the refusal is audited once per change of (shortfall,
        eligible slots).
        """
        freed_now = False
        for ticket, shortfall in self._book.shortfalls():
            victims = self.manager.select_victims(shortfall, ticket.priority)
            if not victims:
                self._refuse_locked(ticket, shortfall)
                continue
            self._book.forget_refusal(ticket.ticket_id)
            cause = self._book.preemption_cause(ticket)
            for lease_id in victims:
                row = self._book.active.get(lease_id)
                if row is not None:
                    decision = self._request_preemption_locked(row, cause, grant=False)
                    freed_now |= decision.outcome is PreemptionOutcome.PREEMPTED
        return freed_now

    def _refuse_locked(self, ticket: TicketRow, shortfall: int) -> None:
        _, wall = self._now()
        change = self._book.refuse(ticket, shortfall, wall)
        if change is None:
            return  # nothing changed since the last refusal was recorded
        self._commit(change)
        self._book.note_refused(ticket, shortfall)

    # -- public operations -----------------------------------------------------------

    def acquire(
        self,
        job: str,
        holder: str,
        priority: int,
        slots: int,
        ttl: float,
        *,
        grace: float = 0.0,
        wait: bool = True,
    ) -> Lease | Ticket:
        """Grant a lease now, or queue a Ticket and start preempting lower priorities.

        ``grace`` (seconds, at most :attr:`max_grace` and ``max_defer``): a request
        to preempt the lease waits that long for the holder to checkpoint and
        release (a cooperative preemption) before it is forced. 0 preempts at once.
        Raises CapacityExceeded when ``slots`` exceeds the whole capacity,
        JobAlreadyLeased when the job holds an ACTIVE lease or a pending ticket, and
        InvalidRequest for bad arguments. A queued request that can be served at once
        by preempting unmarked victims returns the granted Lease. ``wait=False``: the
        call returns once the grant is decided and written; the caller must wait for
        :attr:`durable` (:meth:`wait_durable`) before it answers anyone.
        """
        check_name(job, "job")
        check_name(holder, "holder")
        check_priority(priority)
        check_slots(slots)
        ttl = check_ttl(ttl)
        grace = self.check_grace(grace)
        if slots > self.capacity:
            raise CapacityExceeded(slots, self.capacity)
        with self._decide(wait=wait):
            self._check_open()
            self._expire_due_locked()
            book = self._book
            existing = book.active_by_job.get(job)
            if existing is not None:
                raise JobAlreadyLeased(job, existing)
            waiting = book.ticket_by_job.get(job)
            if waiting is not None:
                raise JobAlreadyLeased(job, waiting, pending=True)
            if not book.queue_ahead(priority) and slots <= book.free:
                return self._grant_locked(job, holder, priority, slots, ttl, None, grace)
            now, wall = self._now()
            change, ticket = book.queue(
                ticket_id=new_id(),
                job=job,
                holder=holder,
                priority=priority,
                slots=slots,
                ttl=ttl,
                now=now,
                wall=wall,
                grace=grace,
            )
            self._commit(change)
            # The ticket is committed: a failure to preempt for it is the executor's.
            self._follow_up_locked()
            result: Lease | Ticket = self._read.ticket(ticket)
            if ticket.ticket_id not in book.tickets:
                # Unmarked victims went at once and the ticket was granted already.
                lease_id = book.active_by_job[job]
                result = self._read.lease(book.active[lease_id])
        self.manager.wake.set()  # callbacks of immediate preemptions are the executor's
        return result

    def check_grace(self, grace: object) -> float:
        """``grace`` if an acquire may ask for it; InvalidRequest naming the bounds."""
        return check_grace(grace, max_grace=self.max_grace, max_defer=self.manager.max_defer)

    def poll(self, ticket_id: int, *, holder: str | None = None) -> Lease | Ticket:
        """The ticket while it waits, or the Lease it became; UnknownTicket otherwise.

        With ``holder``, a ticket of another holder raises :class:`NotLeaseHolder`.
        """
        check_id(ticket_id, "ticket id")
        _check_holder(holder)
        with self._decide():
            self._check_open()
            self._ticket_holder_check(ticket_id, holder)
            self._expire_due_locked()
            row = self._book.tickets.get(ticket_id)
            if row is not None:
                return self._read.ticket(row)
            stored = self._store.lease_for_ticket(ticket_id)
            if stored is None:
                raise UnknownTicket(ticket_id)
            return self._read.lease(self._book.active.get(stored.lease_id, stored))

    def cancel_ticket(self, ticket_id: int, *, holder: str | None = None) -> Ticket:
        """Withdraw a waiting ticket; returns it as it was. It is unknown afterwards.

        The removal and its ``ticket_cancelled`` audit record commit in one
        transaction. Tickets queued behind it move up, and may be granted at once.
        Preemptions already requested for it stand: they were audited and their
        holders told, and the slots they free go to the next tickets.
        Raises :class:`TicketGranted` if the ticket already became a lease (release
        that lease instead), :class:`UnknownTicket` if there is no such ticket
        (never queued, or cancelled already), and :class:`NotLeaseHolder` if
        ``holder`` is given and is not the ticket's.
        """
        check_id(ticket_id, "ticket id")
        _check_holder(holder)
        with self._decide():
            self._check_open()
            self._ticket_holder_check(ticket_id, holder)
            row = self._book.tickets.get(ticket_id)
            if row is None:
                stored = self._store.lease_for_ticket(ticket_id)
                if stored is None:
                    raise UnknownTicket(ticket_id)
                raise TicketGranted(ticket_id, stored.lease_id)
            _, wall = self._now()
            self._commit(self._book.cancel(row, wall))
            # The tickets behind it may fit now.
            self._follow_up_locked()
            return self._read.ticket(row)

    def _renew_row_locked(
        self,
        lease_id: int,
        fencing_token: int,
        reported: frozenset[NonPreemptibleReason] | None,
        holder: str | None,
        checkpoint_age: float | None = None,
        at: tuple[float, float] | None = None,
    ) -> tuple[LeaseRow, PendingPreemption | None]:
        """Renew one lease (the caller holds the lock): the new row, and the pending
        preemption read with it. ``at`` is the (monotonic, wall) reading to renew at,
        read now if None: a batch renews at one instant."""
        self._check_open()
        row = self._active_row(lease_id, holder)
        now, wall = self._now() if at is None else at
        if now >= row.expires_at:
            self._expire_due_locked()
            raise LeaseExpired(lease_id, row.expires_at)
        if fencing_token != row.fencing_token:
            raise FencingTokenMismatch(lease_id, row.fencing_token, fencing_token)
        # The last checkpoint known, kept with the renewal so a restart keeps it; the
        # report applied; the pending preemption to answer with.
        flushed, pending = self.manager.renewal(lease_id, reported)
        if checkpoint_age is not None:
            reported_at = max(now - checkpoint_age, row.granted_at)
            flushed = reported_at if flushed is None else max(flushed, reported_at)
        checkpoint_wall = None if flushed is None else wall - (now - flushed)
        # In memory only, as etcd keeps its keepalives: nothing durable per renewal.
        # The executor checkpoints the new expiries (and checkpoint times), and a
        # restart gives every ACTIVE lease a fresh TTL, so no holder told "renewed"
        # loses its lease early.
        renewed = self._book.renew_in_memory(row, now, wall, checkpoint_wall)
        self._renewed.add(lease_id)
        if checkpoint_age is not None and flushed is not None:
            self.manager.note_checkpoint(lease_id, flushed)
        return renewed, pending

    def renew(
        self,
        lease_id: int,
        fencing_token: int,
        reasons: Iterable[NonPreemptibleReason] | None = None,
        *,
        holder: str | None = None,
        checkpoint_age: float | None = None,
    ) -> Lease:
        """Extend an ACTIVE, unexpired lease whose token matches, by its TTL.

        ``reasons`` is a remote worker's in-flight markers; it replaces the previous
        report and defers preemption like a local marker. It never stops expiry.
        ``checkpoint_age`` is a remote worker's seconds since its last completed
        checkpoint: the scheduler counts the work a forced end loses from it.
        Raises LeaseExpired, LeaseNotActive, FencingTokenMismatch or UnknownLease,
        and NotLeaseHolder if ``holder`` is given and is not the lease's.
        Renewals live in memory: they are checkpointed every
        :attr:`checkpoint_interval` seconds and never audited one by one.
        """
        check_id(lease_id)
        check_token(fencing_token)
        reported = _check_reasons(reasons)
        _check_holder(holder)
        age = _check_age(checkpoint_age)
        with self._decide():
            row, _ = self._renew_row_locked(lease_id, fencing_token, reported, holder, age)
            return self._read.lease(row)

    def renew_lease(
        self,
        lease_id: int,
        fencing_token: int,
        *,
        reasons: Iterable[NonPreemptibleReason] | None = None,
        holder: str | None = None,
        checkpoint_age: float | None = None,
        wait: bool = True,
    ) -> Renewal:
        """:meth:`renew`, and the lease's pending preemption, read under one lock.

        The same checks and errors as :meth:`renew`. ``Renewal.pending`` is the
        deferred preemption the holder must act on, or None.

        A renewal writes nothing durable, but its answer may reveal a change that is
        not durable yet (an expiry, a pending preemption). With ``wait=False`` the
        call does not wait for those: the caller must, before it answers, whenever
        :attr:`durable` is False (an event loop does so off its thread).
        """
        check_id(lease_id)
        check_token(fencing_token)
        reported = _check_reasons(reasons)
        _check_holder(holder)
        age = _check_age(checkpoint_age)
        with self._decide(wait=wait):
            row, pending = self._renew_row_locked(lease_id, fencing_token, reported, holder, age)
            return Renewal(self._read.lease(row), pending)

    def renew_many(
        self,
        renewals: RenewalEntries,
        *,
        holder: str | None = None,
        wait: bool = True,
    ) -> list[Renewal | SchedulerError]:
        """Renew many leases under one lock: ``(lease_id, fencing_token, reasons)`` each,
        or ``(lease_id, fencing_token, reasons, checkpoint_age)``.

        Returns one result per entry, in order: the :class:`Renewal`, or the
        :class:`SchedulerError` that entry alone raised (exactly what :meth:`renew_lease`
        would raise for it, :class:`NotLeaseHolder` included, checked per lease). One
        bad entry never fails the others. 1 to :data:`MAX_BATCH_RENEWALS` entries;
        ``wait`` as for :meth:`renew_lease`.
        """
        return [
            r if isinstance(r, SchedulerError) else Renewal(self._read.lease(r[0]), r[1])
            for r in self._renew_batch(renewals, holder, wait)
        ]

    def renew_expiries(
        self,
        renewals: RenewalEntries,
        *,
        holder: str | None = None,
        wait: bool = True,
    ) -> list[Renewed | SchedulerError]:
        """:meth:`renew_many`, answering each lease with a :class:`Renewed` (its id,
        token, new expiry and pending preemption) instead of a whole :class:`Lease`:
        the batch renewal's hot path."""
        return [
            r
            if isinstance(r, SchedulerError)
            else Renewed(r[0].lease_id, r[0].fencing_token, r[0].expires_at, r[1])
            for r in self._renew_batch(renewals, holder, wait)
        ]

    def _renew_batch(
        self,
        renewals: RenewalEntries,
        holder: str | None,
        wait: bool,
    ) -> list[tuple[LeaseRow, PendingPreemption | None] | SchedulerError]:
        kind: object = renewals  # checked at run time, whatever the annotation says
        if isinstance(kind, str | bytes) or not isinstance(kind, Sequence):
            raise InvalidRequest(f"renewals {renewals!r} is not a sequence of entries")
        if not 1 <= len(renewals) <= MAX_BATCH_RENEWALS:
            raise InvalidRequest(
                f"a batch renewal takes 1 to {MAX_BATCH_RENEWALS} leases, not {len(renewals)}"
            )
        _check_holder(holder)
        checked: list[_CheckedRenewal | SchedulerError] = []
        for entry in renewals:
            # The common entry, checked inline: an id, a token, no reasons, no age.
            if type(entry) is tuple and len(entry) == 4:
                lease_id, token, reasons, age = entry
                if (
                    type(lease_id) is int
                    and 0 <= lease_id < ID_LIMIT
                    and type(token) is int
                    and age is None
                    and type(reasons) is list
                    and not reasons
                ):
                    checked.append((lease_id, token, _NO_REASONS, None))
                    continue
            try:
                lease_id, token, reasons, *rest = entry
                if len(rest) > 1:
                    raise ValueError(entry)
                age = _check_age(rest[0] if rest else None)
                checked.append(
                    (check_id(lease_id), check_token(token), _check_reasons(reasons), age)
                )
            except SchedulerError as exc:
                checked.append(exc)
            except (TypeError, ValueError):
                checked.append(
                    InvalidRequest(
                        f"entry {entry!r} is not (lease_id, fencing_token, reasons"
                        "[, checkpoint_age])"
                    )
                )
        results: list[tuple[LeaseRow, PendingPreemption | None] | SchedulerError] = []
        with self._decide(wait=wait):
            self._check_open()
            renew = self._renew_row_locked
            at = self._now()  # one instant for the whole batch, as it holds one lock
            for item in checked:
                if isinstance(item, SchedulerError):
                    results.append(item)
                    continue
                lease_id, token, reported, age = item
                try:
                    results.append(renew(lease_id, token, reported, holder, age, at))
                except SchedulerError as exc:
                    if isinstance(exc, StoreFailed):
                        raise
                    results.append(exc)
        return results

    def release(
        self,
        lease_id: int,
        *,
        holder: str | None = None,
        work_lost_records: int | None = None,
        work_lost_seconds: float | None = None,
        wait: bool = True,
    ) -> Lease:
        """End a lease as RELEASED and free its slots (queued tickets may be granted).

        ``work_lost_records`` and ``work_lost_seconds`` are the holder's account of the
        work done since its last completed checkpoint (0 after a final checkpoint);
        unreported seconds are counted from the last checkpoint the scheduler knows,
        unreported records stay None. A lease with a grace window whose preemption
        is pending ends PREEMPTED instead, audited as ``preemption_cooperative``.
        With ``holder``, a lease of another holder raises :class:`NotLeaseHolder`.
        ``wait=False``: the caller waits for :attr:`durable` before it answers.
        """
        check_id(lease_id)
        _check_holder(holder)
        records, seconds = check_work_lost(work_lost_records, work_lost_seconds)
        with self._decide(wait=wait):
            self._check_open()
            self._lease_row(lease_id, holder)
            self._expire_due_locked()
            row = self._active_row(lease_id)
            now, wall = self._now()
            lost = self._work_lost(row, now, wall, records, seconds)
            if row.grace and self.manager.pending(lease_id) is not None:
                change = self._book.release_cooperatively(row, wall, lost)
            else:
                change = self._book.release(row, wall, lost)
            lease = self._end_locked(change)
            self._follow_up_locked()
            return lease

    def fence(self, lease_id: int) -> Lease:
        """The operator's revoke: end a lease as FENCED and free its slots."""
        check_id(lease_id)
        with self._decide():
            self._check_open()
            self._expire_due_locked()
            row = self._active_row(lease_id)
            now, wall = self._now()
            lease = self._end_locked(self._book.fence(row, wall, self._work_lost(row, now, wall)))
            self._follow_up_locked()
            return lease

    def hold(self, lease_id: int, reason: str, expires_in: float | None = None) -> Lease:
        """Set the operator's hold on an ACTIVE lease (replacing one it has).

        A hold defers the lease's preemption like any marker: never beyond
        ``max_defer`` from the request. It never stops expiry, and no renewal
        touches it. It lapses after ``expires_in`` seconds (None: until
        :meth:`unhold`). Set, cleared and lapsed holds are audited and stored, so
        a hold survives a restart. Raises LeaseNotActive, LeaseExpired or
        UnknownLease, and InvalidRequest for a bad reason or ``expires_in``.
        """
        check_id(lease_id)
        check_hold_reason(reason)
        seconds = check_hold_seconds(expires_in)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active_row(lease_id)
            now, wall = self._now()
            self._commit(self._book.set_hold(row, reason, seconds, now=now, wall=wall))
            return self._read.lease(self._book.active[lease_id])

    def unhold(self, lease_id: int) -> Lease:
        """Clear the lease's hold; a preemption it deferred is carried out now.

        Raises NoHold when the lease has none, and LeaseNotActive, LeaseExpired or
        UnknownLease as :meth:`hold` does.
        """
        check_id(lease_id)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active_row(lease_id)
            if not row.held:
                raise NoHold(lease_id)
            _, wall = self._now()
            self._commit(self._book.clear_hold(row, wall))
            lease = self._read.lease(self._book.active[lease_id])
        self.manager.wake.set()  # the executor carries out a preemption it deferred
        return lease

    def record_tokens_reloaded(
        self,
        *,
        source: str,
        admin: bool = False,
        workers: Iterable[str] = (),
        error: str | None = None,
    ) -> AuditRecord:
        """Audit a reload of the service's tokens from ``source`` (a path): the
        principals now in use, or ``error`` when the reload failed and the previous
        tokens stay. Never pass a token here. Returns the appended record."""
        if not source:
            raise InvalidRequest(f"source {source!r} must be a non-empty string")
        if error is None:
            entry = entries.tokens_reloaded(
                source=source, admin=admin, workers=[check_name(w, "worker") for w in workers]
            )
        else:
            entry = entries.tokens_reload_failed(source=source, error=str(error)[:500])
        with self._lock:
            self._check_open()
            _, wall = self._now()
            change = Change(audit=chain(self._book.head, wall, [entry]))
            self._commit(change)
            return change.audit[0]

    def ticket_waits(self, *, holder: str | None = None) -> list[TicketWait]:
        """Every waiting ticket (or ``holder``'s) in queue order, with why it waits."""
        _check_holder(holder)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            waits = explain_waits(self._book, self._read)
        return [w for w in waits if holder is None or w.ticket.holder == holder]

    def ticket_wait(self, ticket_id: int, *, holder: str | None = None) -> TicketWait | Lease:
        """Why one ticket waits, or the Lease it became (as :meth:`poll`)."""
        check_id(ticket_id, "ticket id")
        _check_holder(holder)
        with self._lock:
            self._check_open()
            self._ticket_holder_check(ticket_id, holder)
            self._expire_due_locked()
            if ticket_id not in self._book.tickets:
                outcome = self.poll(ticket_id)
                assert isinstance(outcome, Lease)
                return outcome
            waits = explain_waits(self._book, self._read)
        return next(w for w in waits if w.ticket.ticket_id == ticket_id)

    def get(self, lease_id: int, *, holder: str | None = None) -> Lease:
        """The lease, in whatever state; UnknownLease if it was never granted.

        A read: it commits nothing. An ACTIVE lease whose TTL ran out is reported
        EXPIRED (as it will be stored once the executor commits the expiry, which
        this call wakes it for). With ``holder``, a lease of another holder raises
        :class:`NotLeaseHolder`.
        """
        check_id(lease_id)
        _check_holder(holder)
        with self._decide():
            self._check_open()
            row = self._lease_row(lease_id, holder)
            lease = self._read.lease_as_of(row, self._clock.monotonic())
        if lease.state is not row.state:
            self.manager.wake.set()
        return lease

    def leases(self, state: LeaseState | None = None) -> list[Lease]:
        """Leases, optionally of one state, oldest grant first.

        Every lease ever granted unless ``state`` says otherwise: it grows without
        bound. Services page with :meth:`lease_page` instead. The scheduler's lock is
        held only to expire what is due and copy the ACTIVE leases, not for the read.
        """
        if state is not None and not isinstance(state, LeaseState):
            raise InvalidRequest(f"state {state!r} is not a LeaseState")
        with self._decide():
            self._check_open()
            self._expire_due_locked()
            if state is LeaseState.ACTIVE:
                rows = sorted(self._book.active.values(), key=lambda r: r.granted_at)
                return [self._read.lease(r) for r in rows]
            active = dict(self._book.active)
        # Active rows in memory equal the stored ones (each change commits first).
        rows = self._store.list_leases(state)
        self._wait_durable()  # the read may have seen commits written after the lock
        return [self._read.lease(active.get(r.lease_id, r)) for r in rows]

    def lease_page(
        self,
        state: LeaseState | None = None,
        *,
        holder: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[Lease], int | None]:
        """One page of leases in grant order (oldest first, ties by id), and the cursor.

        ``state`` and ``holder`` filter; ``limit`` is 1 to :data:`MAX_LEASE_PAGE`.
        ``after`` is the cursor a previous page returned: the id of its last lease.
        Returns ``(leases, next_after)``, where ``next_after`` is None on the last page.
        A cursor that names no lease (or, with ``holder``, none of that holder's)
        raises :class:`InvalidRequest`. The cost is the page's, whatever the history:
        a keyset read on the store, outside the scheduler's lock.
        """
        if state is not None and not isinstance(state, LeaseState):
            raise InvalidRequest(f"state {state!r} is not a LeaseState")
        if holder is not None:
            check_name(holder, "holder")
        if after is not None:
            check_id(after, "after")
        check_count(limit, "limit", 1, MAX_LEASE_PAGE)
        with self._decide():
            self._check_open()
            self._expire_due_locked()
        page = self._read.page(
            state=state, holder=holder, after=after, limit=limit, active=self._book.active
        )
        self._wait_durable()  # the read may have seen commits written after the lock
        return page

    def lease_counts(self) -> dict[LeaseState, int]:
        """How many leases are in each state (every state, zeros included).

        An aggregate on the store (no lease is read) taken outside the scheduler's
        lock, which is held only to expire what is due first: for ``/metrics``.
        """
        with self._decide():
            self._check_open()
            self._expire_due_locked()
        counts = self._store.count_leases_by_state()
        self._wait_durable()
        return {state: counts.get(state, 0) for state in LeaseState}

    def tickets(self) -> list[Ticket]:
        """Pending tickets, in the order they will be granted."""
        with self._decide():
            self._check_open()
            book = self._book
            return [self._read.ticket(book.tickets[i]) for i in book.ticket_ids()]

    @property
    def used_slots(self) -> int:
        """Slots held by ACTIVE leases."""
        with self._decide():
            return self._book.used

    def _request_from_manager(self, lease_id: int, cause: str) -> PreemptionDecision:
        # The manager's contract answers NOT_TRACKED for any id it does not track,
        # including one that was never granted.
        try:
            return self.request_preemption(lease_id, cause)
        except UnknownLease:
            return PreemptionDecision(lease_id, PreemptionOutcome.NOT_TRACKED, cause)

    def request_preemption(self, lease_id: int, cause: str) -> PreemptionDecision:
        """Preempt a lease now, or defer it while it is marked (at most ``max_defer``).

        Returns NOT_TRACKED for a lease that is no longer ACTIVE; raises UnknownLease
        for one that never existed. A lease already pending keeps its deadline.
        """
        check_id(lease_id)
        check_cause(cause)
        with self._decide():
            self._check_open()
            self._expire_due_locked()
            row = self._book.active.get(lease_id)
            if row is None:
                if self._store.get_lease(lease_id) is None:
                    raise UnknownLease(lease_id)
                return PreemptionDecision(lease_id, PreemptionOutcome.NOT_TRACKED, cause)
            decision = self._request_preemption_locked(row, cause)
        self.manager.wake.set()
        return decision

    def pending_preemption(self, lease_id: int) -> PendingPreemption | None:
        """The lease's pending (deferred) preemption, or None."""
        check_id(lease_id)
        return self.manager.pending(lease_id)

    def reasons(self, lease_id: int) -> frozenset[NonPreemptibleReason]:
        """The reasons holding the lease non-preemptible now (local and reported)."""
        check_id(lease_id)
        return self.manager.reasons(lease_id)

    def on_preempt(self, lease_id: int, callback: PreemptCallback) -> None:
        """Register the in-process holder's callback; the executor invokes it with the
        PREEMPTED lease. Replaces an earlier callback for the same lease."""
        check_id(lease_id)
        if not callable(callback):
            raise InvalidRequest(f"callback {callback!r} is not callable")
        with self._decide():
            self._check_open()
            self._active_row(lease_id)
            self._callbacks[lease_id] = callback

    def __repr__(self) -> str:
        book = self._book
        return (
            f"Scheduler(capacity={self.capacity}, used={book.used}, "
            f"active={len(book.active)}, tickets={len(book.tickets)})"
        )
