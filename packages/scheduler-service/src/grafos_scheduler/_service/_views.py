"""Domain objects as wire views: ids in hex, monotonic times as "in" seconds and UTC.

The scheduler's times are monotonic and mean nothing to a client. Every view is built
from one :class:`Now`, a single reading of the scheduler's two clocks, so the times
of one answer agree with each other.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any, Protocol

import attrs

from .._domain._audit import AuditRecord
from .._domain._clock import Clock
from .._domain._lease import Lease, LeaseState, Ticket
from .._domain._preemption import NonPreemptibleReason, PendingPreemption, PreemptionDecision
from .._domain._ticket_wait import TicketWait, WaitReason
from .._wire._models import (
    AcquireResult,
    AuditRecordView,
    DeferredVictimView,
    HoldView,
    LeaseView,
    PendingPreemptionView,
    PreemptionDecisionView,
    RenewResult,
    TicketView,
    TicketWaitView,
    VictimView,
    format_id,
)

__all__ = [
    "Now",
    "acquire_result",
    "audit_record_view",
    "iso_utc",
    "lease_view",
    "preemption_decision_view",
    "renew_result",
    "ticket_view",
    "ticket_wait_view",
    "why_text",
]


# The "YYYY-MM-DDTHH:MM:SS" of recent whole seconds: a batch renewal formats a
# thousand expiries that fall within a second or two of each other.
_SECONDS: dict[float, str] = {}


def iso_utc(wall: float) -> str:
    """``wall`` (POSIX seconds) as UTC ISO 8601 with milliseconds: exactly
    ``datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")``."""
    # fromtimestamp rounds to the microsecond, half to even, and isoformat then
    # truncates to the millisecond; so does this, with the seconds cached.
    fraction, whole = math.modf(wall)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    seconds = _SECONDS.get(whole)
    if seconds is None:
        if len(_SECONDS) > 64:
            _SECONDS.clear()
        seconds = _SECONDS[whole] = dt.datetime.fromtimestamp(whole, dt.UTC).isoformat()[:19]
    return f"{seconds}.{micros // 1000:03d}+00:00"


@attrs.frozen
class Now:
    """One reading of the scheduler's clocks, to turn its monotonic times into answers.

    Answers carry a time as seconds from now (exact) and as a UTC ISO 8601 time (for
    people).
    """

    monotonic: float
    wall: float

    @classmethod
    def read(cls, clock: Clock) -> Now:
        return cls(clock.monotonic(), clock.wall())

    def iso(self, at: float) -> str:
        return iso_utc(self.wall + (at - self.monotonic))

    def until(self, at: float) -> float:
        return round(max(0.0, at - self.monotonic), 6)

    def iso_or_none(self, at: float | None) -> str | None:
        return None if at is None else self.iso(at)

    def until_or_none(self, at: float | None) -> float | None:
        return None if at is None else self.until(at)


def _reason_names(reasons: Iterable[NonPreemptibleReason]) -> Any:
    # Any: the values are exactly the ReasonName literals, which mypy cannot see.
    return sorted(r.value for r in reasons)


def lease_view(
    lease: Lease,
    now: Now,
    *,
    reasons: Iterable[NonPreemptibleReason] = (),
    pending: PendingPreemption | None = None,
) -> LeaseView:
    """``lease``, with the reasons holding it and its pending preemption (if ACTIVE)."""
    pending_view = None
    if pending is not None:
        pending_view = PendingPreemptionView(
            cause=pending.cause,
            reasons=_reason_names(pending.reasons),
            requested_at=now.iso(pending.requested_at),
            deadline=now.iso(pending.deadline),
            deadline_in=now.until(pending.deadline),
            grace_deadline=now.iso_or_none(pending.grace_deadline),
            grace_deadline_in=now.until_or_none(pending.grace_deadline),
        )
    hold = lease.hold
    hold_view = None
    if hold is not None:
        hold_view = HoldView(
            reason=hold.reason,
            set_at=now.iso(hold.set_at),
            expires_at=now.iso_or_none(hold.expires_at),
            expires_in=now.until_or_none(hold.expires_at),
        )
    active = lease.state is LeaseState.ACTIVE
    return LeaseView(
        lease_id=format_id(lease.lease_id),
        job=lease.job,
        holder=lease.holder,
        priority=lease.priority,
        slots=lease.slots,
        ttl=lease.ttl,
        fencing_token=lease.fencing_token,
        state=lease.state.value,
        granted_at=now.iso(lease.granted_at),
        expires_at=now.iso(lease.expires_at),
        # An ended lease has no time left, not a countdown to an expiry that is moot.
        expires_in=now.until(lease.expires_at) if active else None,
        reasons=_reason_names(reasons),
        pending_preemption=pending_view,
        hold=hold_view,
        ended_at=now.iso_or_none(lease.ended_at),
        end_cause=lease.end_cause,
        grace=lease.grace,
        work_lost_records=lease.work_lost_records,
        work_lost_seconds=lease.work_lost_seconds,
    )


def ticket_view(ticket: Ticket, now: Now, wait: TicketWait | None = None) -> TicketView:
    """``ticket``; with ``wait``, also why it waits (in words and in fields)."""
    return TicketView(
        ticket_id=format_id(ticket.ticket_id),
        job=ticket.job,
        holder=ticket.holder,
        priority=ticket.priority,
        slots=ticket.slots,
        ttl=ticket.ttl,
        requested_at=now.iso(ticket.requested_at),
        why=None if wait is None else why_text(wait, now),
        wait=None if wait is None else ticket_wait_view(wait, now),
        grace=ticket.grace,
    )


def ticket_wait_view(wait: TicketWait, now: Now) -> TicketWaitView:
    return TicketWaitView(
        reason=wait.reason.value,
        position=wait.position,
        needed_slots=wait.needed,
        free_slots=wait.free,
        pending_slots=wait.pending,
        shortfall=wait.shortfall,
        eligible_slots=wait.eligible_slots,
        eligible_victims=[
            VictimView(
                lease_id=format_id(v.lease_id),
                job=v.job,
                priority=v.priority,
                slots=v.slots,
                reasons=_reason_names(v.reasons),
            )
            for v in wait.eligible
        ],
        deferred_victims=[
            DeferredVictimView(
                lease_id=format_id(p.lease_id),
                cause=p.cause,
                reasons=_reason_names(p.reasons),
                deadline=now.iso(p.deadline),
                deadline_in=now.until(p.deadline),
            )
            for p in wait.deferred
        ],
        blocked_by=None if wait.blocked_by is None else format_id(wait.blocked_by),
    )


def _slots(n: int) -> str:
    return f"{n} slot{'' if n == 1 else 's'}"


def why_text(wait: TicketWait, now: Now) -> str:
    """Why a ticket waits, in one sentence for people (the CLI and the dashboard)."""
    if wait.reason is WaitReason.BLOCKED_BEHIND_HEAD:
        assert wait.blocked_by is not None
        return (
            f"blocked behind the head of the queue, ticket {format_id(wait.blocked_by)} "
            f"(it would fit in the {_slots(wait.free)} free; no overtaking)"
        )
    ahead = wait.needed - wait.ticket.slots
    need = _slots(wait.needed) + (f" with the {_slots(ahead)} ahead of it" if ahead else "")
    if wait.reason is WaitReason.INSUFFICIENT_VICTIMS:
        return (
            f"needs {need}: {wait.free} free, {wait.pending} being freed, short by "
            f"{wait.shortfall}; the leases below its priority hold only "
            f"{_slots(wait.eligible_slots)}, so it waits for leases to end"
        )
    if wait.deferred:
        first = min(p.deadline for p in wait.deferred)
        return (
            f"needs {need}: {wait.free} free, {wait.pending} being freed by "
            f"{len(wait.deferred)} deferred preemption{'' if len(wait.deferred) == 1 else 's'}"
            f" (the first forced in {now.until(first):.1f} s at the latest)"
        )
    if wait.shortfall == 0:
        return f"needs {need}: {wait.free} free; granted as soon as the queue moves"
    return (
        f"needs {need}: {wait.free} free, short by {wait.shortfall}; the leases below its "
        f"priority hold {_slots(wait.eligible_slots)}, and their preemption is requested"
    )


def acquire_result(outcome: LeaseView | TicketView) -> AcquireResult:
    """The answer to acquire and to a poll: granted with its lease, or pending."""
    if isinstance(outcome, LeaseView):
        return AcquireResult(status="granted", lease=outcome)
    return AcquireResult(status="pending", ticket=outcome)


class _Renewed(Protocol):
    @property
    def lease_id(self) -> int: ...
    @property
    def fencing_token(self) -> int: ...
    @property
    def expires_at(self) -> float: ...


# The last expiry formatted, with the reading it was formatted against.
_LAST_EXPIRY: tuple[tuple[float, float, float], str, float] = ((-1.0, 0.0, 0.0), "", 0.0)


def renew_result(lease: _Renewed, pending: PendingPreemption | None, now: Now) -> RenewResult:
    """A renew's answer, from the :class:`Lease` or the :class:`Renewed` it produced."""
    if pending is None:  # the common case, spelled out: a batch builds a thousand
        global _LAST_EXPIRY
        at = lease.expires_at
        key = (at, now.monotonic, now.wall)
        last = _LAST_EXPIRY
        if last[0] == key:
            # A batch renews at one instant, so leases with one TTL share an expiry.
            iso, until = last[1], last[2]
        else:
            iso, until = now.iso(at), round(max(0.0, at - now.monotonic), 6)
            _LAST_EXPIRY = (key, iso, until)
        return RenewResult(f"{lease.lease_id:032x}", lease.fencing_token, iso, until, False)
    deadline = pending.deadline
    return RenewResult(
        lease_id=format_id(lease.lease_id),
        fencing_token=lease.fencing_token,
        expires_at=now.iso(lease.expires_at),
        expires_in=now.until(lease.expires_at),
        preemption_requested=True,
        preemption_cause=pending.cause,
        preemption_deadline=now.iso_or_none(deadline),
        preemption_deadline_in=now.until_or_none(deadline),
    )


def preemption_decision_view(decision: PreemptionDecision, now: Now) -> PreemptionDecisionView:
    return PreemptionDecisionView(
        lease_id=format_id(decision.lease_id),
        outcome=decision.outcome.value,
        cause=decision.cause,
        reasons=_reason_names(decision.reasons),
        deadline=now.iso_or_none(decision.deadline),
        deadline_in=now.until_or_none(decision.deadline),
    )


def audit_record_view(record: AuditRecord) -> AuditRecordView:
    lease_id = record.lease_id
    return AuditRecordView(
        seq=record.seq,
        time=dt.datetime.fromtimestamp(record.time, dt.UTC).isoformat(timespec="milliseconds"),
        kind=record.kind,
        lease_id=None if lease_id is None else format_id(lease_id),
        job=record.job,
        data=dict(record.data),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )
