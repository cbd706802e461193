"""What each kind of audit record says: one builder per :class:`AuditKind`.

The payloads are part of the audit chain's format (they are hashed), so each is
written once, here, and the lease book only calls these.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._domain._audit import AuditEntry, AuditKind
from .._domain._ids import id_hex
from .._domain._preemption import NonPreemptibleReason
from .._domain._rows import LeaseRow, TicketRow
from .._domain._work_lost import WorkLost


def _reason_names(reasons: Iterable[NonPreemptibleReason]) -> list[str]:
    return sorted(r.value for r in reasons)


def started(
    *, first: bool, capacity: int, max_defer: float, active_leases: int, pending_tickets: int
) -> AuditEntry:
    """START on an empty store, RESTART on every later start."""
    return AuditEntry(
        AuditKind.START if first else AuditKind.RESTART,
        None,
        None,
        {
            "capacity": capacity,
            "max_defer": max_defer,
            "active_leases": active_leases,
            "pending_tickets": pending_tickets,
        },
    )


def queued(ticket: TicketRow) -> AuditEntry:
    return AuditEntry(
        AuditKind.QUEUED,
        None,
        ticket.job,
        {
            "ticket_id": id_hex(ticket.ticket_id),
            "holder": ticket.holder,
            "priority": ticket.priority,
            "slots": ticket.slots,
            "ttl": ticket.ttl,
            **({"grace": ticket.grace} if ticket.grace else {}),
        },
    )


def ticket_cancelled(ticket: TicketRow) -> AuditEntry:
    return AuditEntry(
        AuditKind.TICKET_CANCELLED,
        None,
        ticket.job,
        {
            "ticket_id": id_hex(ticket.ticket_id),
            "holder": ticket.holder,
            "priority": ticket.priority,
            "slots": ticket.slots,
        },
    )


def granted(row: LeaseRow) -> AuditEntry:
    return AuditEntry(
        AuditKind.GRANT,
        row.lease_id,
        row.job,
        {
            "holder": row.holder,
            "priority": row.priority,
            "slots": row.slots,
            "ttl": row.ttl,
            "fencing_token": row.fencing_token,
            "ticket_id": None if row.ticket_id is None else id_hex(row.ticket_id),
            **({"grace": row.grace} if row.grace else {}),
        },
    )


def released(row: LeaseRow, lost: WorkLost) -> AuditEntry:
    return AuditEntry(AuditKind.RELEASE, row.lease_id, row.job, lost.data())


def expired(row: LeaseRow, lost: WorkLost, *, while_down: bool) -> AuditEntry:
    return AuditEntry(
        AuditKind.EXPIRE,
        row.lease_id,
        row.job,
        {"expires_wall": row.expires_wall, "while_down": while_down, **lost.data()},
    )


def fenced(row: LeaseRow, lost: WorkLost) -> AuditEntry:
    return AuditEntry(
        AuditKind.FENCE,
        row.lease_id,
        row.job,
        {"fencing_token": row.fencing_token, **lost.data()},
    )


def preemption_requested(row: LeaseRow, cause: str) -> AuditEntry:
    data: dict[str, object] = {"cause": cause}
    if row.grace:
        data["grace"] = row.grace
    return AuditEntry(AuditKind.PREEMPTION_REQUESTED, row.lease_id, row.job, data)


def preemption_deferred(
    row: LeaseRow,
    cause: str,
    reasons: Iterable[NonPreemptibleReason],
    *,
    max_defer: float,
    deadline_wall: float,
) -> AuditEntry:
    return AuditEntry(
        AuditKind.PREEMPTION_DEFERRED,
        row.lease_id,
        row.job,
        {
            "cause": cause,
            "reasons": _reason_names(reasons),
            "max_defer": max_defer,
            "deadline_wall": deadline_wall,
            **({"grace": row.grace} if row.grace else {}),
        },
    )


def preemption_executed(row: LeaseRow, cause: str, lost: WorkLost) -> AuditEntry:
    """Carried out at once, with no marker holding the lease."""
    return AuditEntry(
        AuditKind.PREEMPTION_EXECUTED,
        row.lease_id,
        row.job,
        {"cause": cause, "reasons": [], **lost.data()},
    )


def preemption_due(
    row: LeaseRow,
    cause: str,
    reasons: Iterable[NonPreemptibleReason],
    lost: WorkLost,
    *,
    forced: bool,
    grace_expired: bool = False,
) -> AuditEntry:
    """A deferred preemption carried out: EXECUTED on the last clear, FORCED at its
    deadline (``grace_expired``: the holder let its grace window pass)."""
    data: dict[str, object] = {
        "cause": cause,
        "reasons": _reason_names(reasons),
        "deadline_wall": row.preempt_deadline_wall,
        **lost.data(),
    }
    if row.grace:
        data["grace"] = row.grace
        data["grace_expired"] = grace_expired
    return AuditEntry(
        AuditKind.PREEMPTION_FORCED if forced else AuditKind.PREEMPTION_EXECUTED,
        row.lease_id,
        row.job,
        data,
    )


def preemption_cooperative(row: LeaseRow, lost: WorkLost) -> AuditEntry:
    """The holder of a lease with a grace window released it while its preemption was
    pending: it took its final checkpoint in time."""
    return AuditEntry(
        AuditKind.PREEMPTION_COOPERATIVE,
        row.lease_id,
        row.job,
        {
            "cause": row.preempt_cause,
            "grace": row.grace,
            "requested_wall": row.preempt_requested_wall,
            "deadline_wall": row.preempt_deadline_wall,
            **lost.data(),
        },
    )


def preemption_refused(
    ticket: TicketRow, *, shortfall: int, eligible: int, free: int, pending: int
) -> AuditEntry:
    return AuditEntry(
        AuditKind.PREEMPTION_REFUSED,
        None,
        ticket.job,
        {
            "ticket_id": id_hex(ticket.ticket_id),
            "priority": ticket.priority,
            "slots": ticket.slots,
            "shortfall": shortfall,
            "eligible_slots": eligible,
            "free_slots": free,
            "pending_slots": pending,
        },
    )


def leader_elected(
    *, epoch: int, owner: str, url: str | None, leader_ttl: float, previous_owner: str | None
) -> AuditEntry:
    """A replica won the leadership of a shared store: epoch ``epoch`` begins."""
    return AuditEntry(
        AuditKind.LEADER_ELECTED,
        None,
        None,
        {
            "epoch": epoch,
            "owner": owner,
            "url": url,
            "leader_ttl": leader_ttl,
            "previous_owner": previous_owner,
        },
    )


def hold_set(row: LeaseRow, *, reason: str, expires_in: float | None, replaced: bool) -> AuditEntry:
    return AuditEntry(
        AuditKind.HOLD_SET,
        row.lease_id,
        row.job,
        {"reason": reason, "expires_in": expires_in, "replaced": replaced},
    )


def hold_cleared(row: LeaseRow) -> AuditEntry:
    return AuditEntry(AuditKind.HOLD_CLEARED, row.lease_id, row.job, {"reason": row.hold_reason})


def hold_expired(row: LeaseRow, *, while_down: bool) -> AuditEntry:
    return AuditEntry(
        AuditKind.HOLD_EXPIRED,
        row.lease_id,
        row.job,
        {
            "reason": row.hold_reason,
            "expires_wall": row.hold_expires_wall,
            "while_down": while_down,
        },
    )


def tokens_reloaded(*, source: str, admin: bool, workers: Iterable[str]) -> AuditEntry:
    """The service's principals changed: who may act is part of what was decided."""
    return AuditEntry(
        AuditKind.TOKENS_RELOADED,
        None,
        None,
        {"source": source, "admin": admin, "workers": sorted(workers)},
    )


def tokens_reload_failed(*, source: str, error: str) -> AuditEntry:
    return AuditEntry(
        AuditKind.TOKENS_RELOAD_FAILED, None, None, {"source": source, "error": error}
    )
