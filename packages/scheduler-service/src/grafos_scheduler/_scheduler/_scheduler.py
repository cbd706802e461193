"""The Scheduler: composes the domain with a store and runs the executor thread."""

from __future__ import annotations

import bisect
import heapq
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .._domain._audit import AuditKind, AuditLog
from .._domain._clock import Clock, as_clock
from .._domain._errors import (
    CapacityExceeded,
    FencingTokenMismatch,
    InvalidRequest,
    JobAlreadyLeased,
    LeaseExpired,
    LeaseNotActive,
    SchedulerError,
    StoreSuperseded,
    TicketGranted,
    UnknownLease,
    UnknownTicket,
)
from .._domain._lease import (
    Lease,
    LeaseState,
    Ticket,
    check_count,
    check_id,
    check_name,
    check_priority,
    check_slots,
    check_ttl,
    id_hex,
    new_id,
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
from .._store._protocol import LeaseRow, SchedulerStore, StoreTransaction, TicketRow

_log = logging.getLogger("grafos_scheduler")

MAX_CAUSE_LENGTH = 1024
# The executor re-reads the clock at least this often, so a ManualClock or a wall
# clock that jumps cannot leave it asleep past a deadline for long.
_MAX_SLEEP = 0.5

PreemptCallback = Callable[[Lease], None]

#: The most leases one :meth:`Scheduler.lease_page` returns.
MAX_LEASE_PAGE = 1000


def _check_cause(cause: object) -> str:
    if not isinstance(cause, str) or not cause.strip() or len(cause) > MAX_CAUSE_LENGTH:
        raise InvalidRequest(
            f"cause {cause!r} must be a non-empty string of at most {MAX_CAUSE_LENGTH} characters"
        )
    return cause


def _check_token(token: object) -> int:
    if not isinstance(token, int) or isinstance(token, bool):
        raise InvalidRequest(f"fencing token {token!r} is not an integer")
    return token


def _check_reasons(reasons: object) -> frozenset[NonPreemptibleReason] | None:
    if reasons is None:
        return None
    if isinstance(reasons, str | bytes) or not isinstance(reasons, Iterable):
        raise InvalidRequest(f"reasons {reasons!r} is not a collection of NonPreemptibleReason")
    checked: set[NonPreemptibleReason] = set()
    for r in list(reasons):
        if not isinstance(r, NonPreemptibleReason):
            raise InvalidRequest(f"reason {r!r} is not a NonPreemptibleReason")
        checked.add(r)
    return frozenset(checked)


def _reason_names(reasons: Iterable[NonPreemptibleReason]) -> list[str]:
    return sorted(r.value for r in reasons)


class Scheduler:
    """Leases a fixed capacity of slots, with fencing tokens, preemption and an audit log.

    - :meth:`acquire` grants a lease when there is room. Otherwise it queues a
      :class:`Ticket` (granted in priority order, first come first served within a
      priority) and asks the :class:`PreemptionManager` for lower-priority victims.
    - At most one ACTIVE lease per job: a second acquire for a job that holds an
      ACTIVE lease or a pending ticket raises :class:`JobAlreadyLeased`.
    - Every state change and its audit record commit in one store transaction.
    - The executor (:meth:`start`'s thread, or :meth:`tick` called by hand) expires
      leases, carries out due preemptions and invokes preemption callbacks.

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
    ) -> None:
        self.capacity: int = check_count(capacity, "capacity", 1)
        self._store = store
        self._clock: Clock = as_clock(clock)
        #: The manager tracking ACTIVE leases and their non-preemptible markers
        #: (``mark_non_preemptible``, ``clear_non_preemptible``, ``reasons``). Its
        #: ``request_preemption`` is bound to this scheduler's, so a request made on
        #: either is recorded and carried out the same way.
        self.manager = PreemptionManager(self._clock, max_defer)
        #: A ``grafos_pipeline.CheckpointFlushObserver`` wired to :attr:`manager`.
        self.observer = PreemptionFlushObserver(self.manager)
        #: The audit chain: ``verify()``, ``head()``, ``records(after_seq, limit)``.
        self.audit = AuditLog(store)
        # Monotonic readings in the store are trusted only by the process that took them.
        self._epoch = secrets.token_hex(8)
        self._lock = threading.RLock()
        self._closed = False
        self._active: dict[int, LeaseRow] = {}
        self._active_by_job: dict[str, int] = {}
        self._used = 0
        self._expiry: list[tuple[float, int]] = []
        self._tickets: dict[int, TicketRow] = {}
        self._ticket_order: list[tuple[int, int, int]] = []  # (-priority, position, id)
        self._ticket_by_job: dict[str, int] = {}
        self._callbacks: dict[int, PreemptCallback] = {}
        self._due_callbacks: deque[tuple[PreemptCallback, Lease]] = deque()
        # The last refusal audited per ticket, (shortfall, eligible): audited on change.
        self._refused: dict[int, tuple[int, int]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        with self._lock:
            self._recover()
        self.manager.bind(self._request_from_manager)
        if autostart:
            self.start()

    # -- lifecycle -------------------------------------------------------------------

    def _recover(self) -> None:
        """Reload state, expire what lapsed while down, and record the (re)start."""
        now, wall = self._clock.monotonic(), self._clock.wall()
        first_start = self._store.audit_head()[0] == 0
        kept: list[LeaseRow] = []
        with self._store.transaction() as txn:
            rows = txn.active_leases()
            tickets = txn.tickets()
            self._check_restored_capacity(rows, tickets, wall)
            txn.append_audit(
                time=wall,
                kind=AuditKind.START if first_start else AuditKind.RESTART,
                lease_id=None,
                job=None,
                data={
                    "capacity": self.capacity,
                    "max_defer": self.manager.max_defer,
                    "active_leases": len(rows),
                    "pending_tickets": len(tickets),
                },
            )
            for row in rows:
                if row.expires_wall <= wall:
                    ended = attrs.evolve(row, state=LeaseState.EXPIRED, ended_wall=wall)
                    txn.update_lease(ended)
                    txn.append_audit(
                        time=wall,
                        kind=AuditKind.EXPIRE,
                        lease_id=row.lease_id,
                        job=row.job,
                        data={"expires_wall": row.expires_wall, "while_down": True},
                    )
                    continue
                # Remaining time comes from the wall clock; the old monotonic one is void.
                # It never exceeds a fresh TTL, whatever a clock did across the restart.
                current = attrs.evolve(
                    row,
                    epoch=self._epoch,
                    granted_at=now - (wall - row.granted_wall),
                    expires_at=now + min(row.expires_wall - wall, row.ttl),
                )
                txn.update_lease(current)
                kept.append(current)
        for row in kept:
            self._add_active(row)
        for t in tickets:
            self._add_ticket(attrs.evolve(t, requested_at=now - (wall - t.requested_wall)))
        for row in kept:
            if row.preempt_cause is not None:
                assert row.preempt_requested_wall is not None
                assert row.preempt_deadline_wall is not None
                self.manager.restore_pending(
                    row.lease_id,
                    row.preempt_cause,
                    now - (wall - row.preempt_requested_wall),
                    now + min(row.preempt_deadline_wall - wall, self.manager.max_defer),
                )
        self._grant_tickets_locked()

    def _check_restored_capacity(
        self, rows: list[LeaseRow], tickets: list[TicketRow], wall: float
    ) -> None:
        # Refused before anything is written: the store stays as it was.
        held = sum(r.slots for r in rows if r.expires_wall > wall)
        if held > self.capacity:
            raise InvalidRequest(
                f"capacity {self.capacity} is smaller than the {held} slots held by the "
                f"ACTIVE leases in the store; restart with a capacity of at least {held}"
            )
        widest = max((t.slots for t in tickets), default=0)
        if widest > self.capacity:
            raise InvalidRequest(
                f"capacity {self.capacity} is smaller than a pending ticket of {widest} "
                f"slots in the store; restart with a capacity of at least {widest}"
            )

    def start(self) -> None:
        """Start the executor thread: expiry, due preemptions, preemption callbacks."""
        with self._lock:
            self._check_open()
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run_executor, name="grafos-scheduler-executor", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the executor and close the store; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        self.manager.wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)
        with self._lock:
            self._store.close()

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

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerError("the scheduler is closed")

    def _run_executor(self) -> None:
        wake = self.manager.wake
        while not self._stop.is_set():
            wake.wait(self._sleep_time())
            wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except StoreSuperseded:
                # A newer scheduler owns the database now: this one must stop writing.
                _log.warning("the store was taken over by a newer scheduler; executor stops")
                return
            except Exception:
                # A store error must not kill the executor; it retries on the next wake.
                _log.exception("the scheduler executor failed; retrying")
                self._stop.wait(_MAX_SLEEP)

    def _sleep_time(self) -> float:
        now = self._clock.monotonic()
        soonest = now + _MAX_SLEEP
        deadline = self.manager.next_deadline()
        if deadline is not None:
            soonest = min(soonest, deadline)
        with self._lock:
            if self._expiry:
                soonest = min(soonest, self._expiry[0][0])
        return max(0.0, soonest - now)

    def tick(self) -> None:
        """Expire due leases, carry out due preemptions, grant tickets, run callbacks.

        The executor thread calls this; tests with a ManualClock call it by hand.
        """
        with self._lock:
            if self._closed:
                return
            self._expire_due_locked()
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

    # -- in-memory bookkeeping -------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        return self._clock.monotonic(), self._clock.wall()

    def _to_lease(self, row: LeaseRow) -> Lease:
        if row.epoch == self._epoch:
            granted_at, expires_at = row.granted_at, row.expires_at
        else:
            now, wall = self._now()
            granted_at = now - (wall - row.granted_wall)
            expires_at = now + (row.expires_wall - wall)
        return Lease(
            lease_id=row.lease_id,
            job=row.job,
            holder=row.holder,
            priority=row.priority,
            slots=row.slots,
            ttl=row.ttl,
            fencing_token=row.fencing_token,
            state=row.state,
            granted_at=granted_at,
            expires_at=expires_at,
        )

    @staticmethod
    def _to_ticket(row: TicketRow) -> Ticket:
        return Ticket(
            ticket_id=row.ticket_id,
            job=row.job,
            holder=row.holder,
            priority=row.priority,
            slots=row.slots,
            ttl=row.ttl,
            requested_at=row.requested_at,
        )

    def _add_active(self, row: LeaseRow) -> None:
        self._active[row.lease_id] = row
        self._active_by_job[row.job] = row.lease_id
        self._used += row.slots
        heapq.heappush(self._expiry, (row.expires_at, row.lease_id))
        self.manager.track(row.lease_id, row.priority, row.slots)

    def _drop_active(self, row: LeaseRow) -> None:
        del self._active[row.lease_id]
        del self._active_by_job[row.job]
        self._used -= row.slots
        self.manager.untrack(row.lease_id)
        self._callbacks.pop(row.lease_id, None)

    def _add_ticket(self, row: TicketRow) -> None:
        self._tickets[row.ticket_id] = row
        self._ticket_by_job[row.job] = row.ticket_id
        bisect.insort(self._ticket_order, (-row.priority, row.position, row.ticket_id))

    def _fresh_id(self, txn: StoreTransaction) -> int:
        while True:
            value = new_id()
            if not txn.id_in_use(value):
                return value

    def _ended_error(self, lease_id: int) -> SchedulerError:
        row = self._store.get_lease(lease_id)
        if row is None:
            return UnknownLease(lease_id)
        if row.state is LeaseState.EXPIRED:
            return LeaseExpired(lease_id, self._to_lease(row).expires_at)
        return LeaseNotActive(lease_id, row.state.value)

    def _active_row(self, lease_id: int) -> LeaseRow:
        row = self._active.get(lease_id)
        if row is None:
            raise self._ended_error(lease_id)
        return row

    # -- state changes (each one transaction, audited) -------------------------------

    def _grant_locked(
        self, job: str, holder: str, priority: int, slots: int, ttl: float, ticket_id: int | None
    ) -> Lease:
        now, wall = self._now()
        with self._store.transaction() as txn:
            lease_id = self._fresh_id(txn)
            token = txn.mint_fencing_token(job)
            row = LeaseRow(
                lease_id=lease_id,
                job=job,
                holder=holder,
                priority=priority,
                slots=slots,
                ttl=ttl,
                fencing_token=token,
                state=LeaseState.ACTIVE,
                epoch=self._epoch,
                granted_at=now,
                expires_at=now + ttl,
                granted_wall=wall,
                expires_wall=wall + ttl,
                ticket_id=ticket_id,
            )
            txn.insert_lease(row)
            if ticket_id is not None:
                txn.delete_ticket(ticket_id)
            txn.append_audit(
                time=wall,
                kind=AuditKind.GRANT,
                lease_id=lease_id,
                job=job,
                data={
                    "holder": holder,
                    "priority": priority,
                    "slots": slots,
                    "ttl": ttl,
                    "fencing_token": token,
                    "ticket_id": None if ticket_id is None else id_hex(ticket_id),
                },
            )
        self._add_active(row)
        return self._to_lease(row)

    def _grant_tickets_locked(self) -> dict[int, Lease]:
        """Grant queued tickets in order while the head fits (no overtaking).

        Then, for the tickets still waiting, ask for the preemptions they need now
        (victims may have become eligible since they queued); unmarked victims go at
        once and free room for the next round.
        """
        granted = self._grant_fitting_locked()
        while self._ticket_order and self._preempt_for_queue_locked():
            granted.update(self._grant_fitting_locked())
        return granted

    def _grant_fitting_locked(self) -> dict[int, Lease]:
        granted: dict[int, Lease] = {}
        while self._ticket_order:
            ticket_id = self._ticket_order[0][2]
            t = self._tickets[ticket_id]
            if t.slots > self.capacity - self._used:
                break
            granted[ticket_id] = self._grant_locked(
                t.job, t.holder, t.priority, t.slots, t.ttl, ticket_id
            )
            self._ticket_order.pop(0)
            del self._tickets[ticket_id]
            del self._ticket_by_job[t.job]
            self._refused.pop(ticket_id, None)
        return granted

    def _end_locked(
        self,
        row: LeaseRow,
        state: LeaseState,
        records: list[tuple[AuditKind, Mapping[str, Any]]],
    ) -> Lease:
        _, wall = self._now()
        ended = attrs.evolve(row, state=state, ended_wall=wall)
        with self._store.transaction() as txn:
            txn.update_lease(ended)
            for kind, data in records:
                txn.append_audit(
                    time=wall, kind=kind, lease_id=row.lease_id, job=row.job, data=data
                )
        callback = self._callbacks.get(row.lease_id)
        self._drop_active(row)
        lease = self._to_lease(ended)
        if state is LeaseState.PREEMPTED and callback is not None:
            self._due_callbacks.append((callback, lease))
            self.manager.wake.set()
        return lease

    def _expire_due_locked(self) -> None:
        now = self._clock.monotonic()
        heap = self._expiry
        expired = False
        while heap and heap[0][0] <= now:
            expires_at, lease_id = heap[0]
            row = self._active.get(lease_id)
            if row is not None and row.expires_at == expires_at:
                # Popped only once the expiry committed: a failed write leaves the
                # entry in place, and the next call tries again.
                self._end_locked(
                    row,
                    LeaseState.EXPIRED,
                    [(AuditKind.EXPIRE, {"expires_wall": row.expires_wall, "while_down": False})],
                )
                expired = True
            # else: ended already, or renewed: a later entry stands for it
            heapq.heappop(heap)
        if expired:
            self._follow_up_locked()

    def _carry_out_locked(self, due: DuePreemption) -> None:
        row = self._active.get(due.lease_id)
        if row is None:
            self.manager.untrack(due.lease_id)
            return
        kind = AuditKind.PREEMPTION_FORCED if due.forced else AuditKind.PREEMPTION_EXECUTED
        data = {
            "cause": due.cause,
            "reasons": _reason_names(due.reasons),
            "deadline_wall": row.preempt_deadline_wall,
        }
        try:
            self._end_locked(row, LeaseState.PREEMPTED, [(kind, data)])
        except BaseException:
            self._retrack(row)
            raise

    def _retrack(self, row: LeaseRow) -> None:
        # The store refused the change: the lease is still ACTIVE, so the manager gets
        # it back as it was (markers, order, pending preemption with its deadline).
        if (
            row.lease_id in self._active
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
            executed: tuple[AuditKind, Mapping[str, Any]] = (
                AuditKind.PREEMPTION_EXECUTED,
                {"cause": decision.cause, "reasons": []},
            )
            # A pending request was audited when it was made; only the execution is new.
            records = (
                [executed]
                if already
                else [(AuditKind.PREEMPTION_REQUESTED, {"cause": cause}), executed]
            )
            try:
                self._end_locked(row, LeaseState.PREEMPTED, records)
            except BaseException:
                self._retrack(row)
                raise
            if grant:
                self._follow_up_locked()
        elif decision.outcome is PreemptionOutcome.DEFERRED and not already:
            assert decision.deadline is not None
            now, wall = self._now()
            deadline_wall = wall + (decision.deadline - now)
            pending = attrs.evolve(
                row,
                preempt_cause=cause,
                preempt_requested_wall=wall,
                preempt_deadline_wall=deadline_wall,
            )
            try:
                with self._store.transaction() as txn:
                    txn.update_lease(pending)
                    txn.append_audit(
                        time=wall,
                        kind=AuditKind.PREEMPTION_REQUESTED,
                        lease_id=row.lease_id,
                        job=row.job,
                        data={"cause": cause},
                    )
                    txn.append_audit(
                        time=wall,
                        kind=AuditKind.PREEMPTION_DEFERRED,
                        lease_id=row.lease_id,
                        job=row.job,
                        data={
                            "cause": cause,
                            "reasons": _reason_names(decision.reasons),
                            "max_defer": self.manager.max_defer,
                            "deadline_wall": deadline_wall,
                        },
                    )
            except BaseException:
                self.manager.cancel_pending(row.lease_id)
                raise
            self._active[row.lease_id] = pending
        return decision

    # -- public operations -----------------------------------------------------------

    def acquire(
        self, job: str, holder: str, priority: int, slots: int, ttl: float
    ) -> Lease | Ticket:
        """Grant a lease now, or queue a Ticket and start preempting lower priorities.

        Raises CapacityExceeded when ``slots`` exceeds the whole capacity,
        JobAlreadyLeased when the job holds an ACTIVE lease or a pending ticket, and
        InvalidRequest for bad arguments. A queued request that can be served at once
        by preempting unmarked victims returns the granted Lease.
        """
        check_name(job, "job")
        check_name(holder, "holder")
        check_priority(priority)
        check_slots(slots)
        ttl = check_ttl(ttl)
        if slots > self.capacity:
            raise CapacityExceeded(slots, self.capacity)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            existing = self._active_by_job.get(job)
            if existing is not None:
                raise JobAlreadyLeased(job, existing)
            waiting = self._ticket_by_job.get(job)
            if waiting is not None:
                raise JobAlreadyLeased(job, waiting, pending=True)
            queue_ahead = bool(self._ticket_order) and -self._ticket_order[0][0] >= priority
            if not queue_ahead and slots <= self.capacity - self._used:
                return self._grant_locked(job, holder, priority, slots, ttl, None)
            ticket = self._queue_locked(job, holder, priority, slots, ttl)
            # The ticket is committed: a failure to preempt for it is the executor's.
            self._follow_up_locked()
            result: Lease | Ticket = self._to_ticket(ticket)
            if ticket.ticket_id not in self._tickets:
                # Unmarked victims went at once and the ticket was granted already.
                lease_id = self._active_by_job[job]
                result = self._to_lease(self._active[lease_id])
        self.manager.wake.set()  # callbacks of immediate preemptions are the executor's
        return result

    def _queue_locked(
        self, job: str, holder: str, priority: int, slots: int, ttl: float
    ) -> TicketRow:
        now, wall = self._now()
        with self._store.transaction() as txn:
            ticket_id = self._fresh_id(txn)
            row = txn.insert_ticket(
                TicketRow(
                    ticket_id=ticket_id,
                    job=job,
                    holder=holder,
                    priority=priority,
                    slots=slots,
                    ttl=ttl,
                    epoch=self._epoch,
                    requested_at=now,
                    requested_wall=wall,
                )
            )
            txn.append_audit(
                time=wall,
                kind=AuditKind.QUEUED,
                lease_id=None,
                job=job,
                data={
                    "ticket_id": id_hex(ticket_id),
                    "holder": holder,
                    "priority": priority,
                    "slots": slots,
                    "ttl": ttl,
                },
            )
        self._add_ticket(row)
        return row

    def _preempt_for_queue_locked(self) -> bool:
        """Request the preemptions the waiting tickets need; True if any went at once.

        Tickets are served in queue order, so ticket k needs room for itself and every
        ticket ahead of it. What is free and what pending preemptions will free count
        first, so slots already being preempted are never asked for twice. A ticket
        whose shortfall the leases below it cannot cover is refused preemption, and
        the refusal is audited once per change of (shortfall, eligible slots).
        """
        freed_now = False
        demand = 0
        for _neg, _pos, ticket_id in list(self._ticket_order):
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                continue
            demand += ticket.slots
            shortfall = demand - (self.capacity - self._used) - self.manager.pending_slots()
            if shortfall <= 0:
                continue
            victims = self.manager.select_victims(shortfall, ticket.priority)
            if not victims:
                self._refuse_locked(ticket, shortfall)
                continue
            self._refused.pop(ticket_id, None)
            cause = (
                f"free {ticket.slots} slots for ticket {id_hex(ticket.ticket_id)} "
                f"(job {ticket.job!r}, priority {ticket.priority})"
            )
            for lease_id in victims:
                row = self._active.get(lease_id)
                if row is not None:
                    decision = self._request_preemption_locked(row, cause, grant=False)
                    freed_now |= decision.outcome is PreemptionOutcome.PREEMPTED
        return freed_now

    def _refuse_locked(self, ticket: TicketRow, shortfall: int) -> None:
        eligible = self.manager.eligible_slots(ticket.priority)
        key = (shortfall, eligible)
        if self._refused.get(ticket.ticket_id) == key:
            return  # nothing changed since the last refusal was recorded
        _, wall = self._now()
        with self._store.transaction() as txn:
            txn.append_audit(
                time=wall,
                kind=AuditKind.PREEMPTION_REFUSED,
                lease_id=None,
                job=ticket.job,
                data={
                    "ticket_id": id_hex(ticket.ticket_id),
                    "priority": ticket.priority,
                    "slots": ticket.slots,
                    "shortfall": shortfall,
                    "eligible_slots": eligible,
                    "free_slots": self.capacity - self._used,
                    "pending_slots": self.manager.pending_slots(),
                },
            )
        self._refused[ticket.ticket_id] = key

    def poll(self, ticket_id: int) -> Lease | Ticket:
        """The ticket while it waits, or the Lease it became; UnknownTicket otherwise."""
        check_id(ticket_id, "ticket id")
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._tickets.get(ticket_id)
            if row is not None:
                return self._to_ticket(row)
            stored = self._store.lease_for_ticket(ticket_id)
            if stored is None:
                raise UnknownTicket(ticket_id)
            return self._to_lease(self._active.get(stored.lease_id, stored))

    def cancel_ticket(self, ticket_id: int) -> Ticket:
        """Withdraw a waiting ticket; returns it as it was. It is unknown afterwards.

        The removal and its ``ticket_cancelled`` audit record commit in one
        transaction. Tickets queued behind it move up, and may be granted at once.
        Preemptions already requested for it stand: they were audited and their
        holders told, and the slots they free go to the next tickets.
        Raises :class:`TicketGranted` if the ticket already became a lease (release
        that lease instead) and :class:`UnknownTicket` if there is no such ticket
        (never queued, or cancelled already).
        """
        check_id(ticket_id, "ticket id")
        with self._lock:
            self._check_open()
            row = self._tickets.get(ticket_id)
            if row is None:
                stored = self._store.lease_for_ticket(ticket_id)
                if stored is None:
                    raise UnknownTicket(ticket_id)
                raise TicketGranted(ticket_id, stored.lease_id)
            _, wall = self._now()
            with self._store.transaction() as txn:
                txn.delete_ticket(ticket_id)
                txn.append_audit(
                    time=wall,
                    kind=AuditKind.TICKET_CANCELLED,
                    lease_id=None,
                    job=row.job,
                    data={
                        "ticket_id": id_hex(ticket_id),
                        "holder": row.holder,
                        "priority": row.priority,
                        "slots": row.slots,
                    },
                )
            self._ticket_order.remove((-row.priority, row.position, ticket_id))
            del self._tickets[ticket_id]
            del self._ticket_by_job[row.job]
            self._refused.pop(ticket_id, None)
            # The tickets behind it may fit now.
            self._follow_up_locked()
            return self._to_ticket(row)

    def renew(
        self,
        lease_id: int,
        fencing_token: int,
        reasons: Iterable[NonPreemptibleReason] | None = None,
    ) -> Lease:
        """Extend an ACTIVE, unexpired lease whose token matches, by its TTL.

        ``reasons`` is a remote worker's in-flight markers; it replaces the previous
        report and defers preemption like a local marker. It never stops expiry.
        Raises LeaseExpired, LeaseNotActive, FencingTokenMismatch or UnknownLease.
        Renewals are persisted, not audited one by one.
        """
        check_id(lease_id)
        _check_token(fencing_token)
        reported = _check_reasons(reasons)
        with self._lock:
            self._check_open()
            row = self._active_row(lease_id)
            now, wall = self._now()
            if now >= row.expires_at:
                self._expire_due_locked()
                raise LeaseExpired(lease_id, row.expires_at)
            if fencing_token != row.fencing_token:
                raise FencingTokenMismatch(lease_id, row.fencing_token, fencing_token)
            renewed = attrs.evolve(
                row, expires_at=now + row.ttl, expires_wall=wall + row.ttl, epoch=self._epoch
            )
            with self._store.transaction() as txn:
                txn.update_lease(renewed)
            self._active[lease_id] = renewed
            heapq.heappush(self._expiry, (renewed.expires_at, lease_id))
            if reported is not None:
                self.manager.report_reasons(lease_id, reported)
            return self._to_lease(renewed)

    def release(self, lease_id: int) -> Lease:
        """End a lease as RELEASED and free its slots (queued tickets may be granted)."""
        check_id(lease_id)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active_row(lease_id)
            lease = self._end_locked(row, LeaseState.RELEASED, [(AuditKind.RELEASE, {})])
            self._follow_up_locked()
            return lease

    def fence(self, lease_id: int) -> Lease:
        """The operator's revoke: end a lease as FENCED and free its slots."""
        check_id(lease_id)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active_row(lease_id)
            lease = self._end_locked(
                row, LeaseState.FENCED, [(AuditKind.FENCE, {"fencing_token": row.fencing_token})]
            )
            self._follow_up_locked()
            return lease

    def get(self, lease_id: int) -> Lease:
        """The lease, in whatever state; UnknownLease if it was never granted."""
        check_id(lease_id)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active.get(lease_id)
            if row is None:
                row = self._store.get_lease(lease_id)
                if row is None:
                    raise UnknownLease(lease_id)
            return self._to_lease(row)

    def leases(self, state: LeaseState | None = None) -> list[Lease]:
        """Leases, optionally of one state, oldest grant first.

        Every lease ever granted unless ``state`` says otherwise: it grows without
        bound. Services page with :meth:`lease_page` instead. The scheduler's lock is
        held only to expire what is due and copy the ACTIVE leases, not for the read.
        """
        if state is not None and not isinstance(state, LeaseState):
            raise InvalidRequest(f"state {state!r} is not a LeaseState")
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            if state is LeaseState.ACTIVE:
                rows = sorted(self._active.values(), key=lambda r: r.granted_at)
                return [self._to_lease(r) for r in rows]
            active = dict(self._active)
        # Active rows in memory equal the stored ones (each change commits first).
        return [self._to_lease(active.get(r.lease_id, r)) for r in self._store.list_leases(state)]

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
        with self._lock:
            self._check_open()
            self._expire_due_locked()
        if after is not None:
            cursor = self._store.get_lease(after)
            if cursor is None or (holder is not None and cursor.holder != holder):
                raise InvalidRequest(
                    f"after {id_hex(after)} is not the id of a lease from an earlier page"
                )
        rows = self._store.list_leases_page(
            state=state, holder=holder, after=after, limit=limit + 1
        )
        more = len(rows) > limit
        leases = [self._to_lease(r) for r in rows[:limit]]
        return leases, leases[-1].lease_id if more else None

    def lease_counts(self) -> dict[LeaseState, int]:
        """How many leases are in each state (every state, zeros included).

        An aggregate on the store (no lease is read) taken outside the scheduler's
        lock, which is held only to expire what is due first: for ``/metrics``.
        """
        with self._lock:
            self._check_open()
            self._expire_due_locked()
        counts = self._store.count_leases_by_state()
        return {state: counts.get(state, 0) for state in LeaseState}

    def tickets(self) -> list[Ticket]:
        """Pending tickets, in the order they will be granted."""
        with self._lock:
            self._check_open()
            return [self._to_ticket(self._tickets[key[2]]) for key in self._ticket_order]

    @property
    def used_slots(self) -> int:
        """Slots held by ACTIVE leases."""
        with self._lock:
            return self._used

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
        _check_cause(cause)
        with self._lock:
            self._check_open()
            self._expire_due_locked()
            row = self._active.get(lease_id)
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
        with self._lock:
            self._check_open()
            self._active_row(lease_id)
            self._callbacks[lease_id] = callback

    def __repr__(self) -> str:
        return (
            f"Scheduler(capacity={self.capacity}, used={self._used}, "
            f"active={len(self._active)}, tickets={len(self._tickets)})"
        )
