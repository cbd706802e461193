"""The HTTP API's request and response bodies.

The wire models are frozen, slotted attrs classes. Their constraints are written once,
as ``msgspec.Meta`` in ``Annotated`` types: the OpenAPI schema at ``/schema`` shows them,
and ``_parsing.parse_body`` enforces them. Litestar's own decoding ignores unknown
fields and reports errors in its own shape, so the server never uses it: every request
body is decoded once, by ``parse_body``, and every refusal is one :class:`ErrorBody`
that names the field.

Lease and ticket ids cross JSON as 32-character lowercase hex strings, because JSON
numbers lose precision above 2**53. Monotonic scheduler times cannot mean anything to
another process, so every time is sent twice: as seconds from now (``expires_in``), which
is exact, and as a UTC wall-clock ISO 8601 string (``expires_at``), which is for people.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import attrs
from msgspec import Meta

from .._domain._audit import AuditVerification
from .._domain._ids import ID_PATTERN, id_hex
from .._domain._lease import LeaseState
from .._domain._lease_events import LeaseEventKind
from .._domain._limits import (
    CAUSE_PATTERN,
    MAX_BATCH_RENEWALS,
    MAX_CAUSE_LENGTH,
    MAX_FENCING_TOKEN,
    MAX_HOLD_SECONDS,
    MAX_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_SLOTS,
    MAX_TTL,
    MAX_WORK_LOST_RECORDS,
    MAX_WORK_LOST_SECONDS,
    MIN_PRIORITY,
    NAME_PATTERN,
)
from .._domain._preemption import NonPreemptibleReason, PreemptionOutcome
from .._domain._ticket_wait import WaitReason

__all__ = [
    "ID_PATTERN",
    "AcquireRequest",
    "AcquireResult",
    "AuditHeadView",
    "AuditPage",
    "AuditRecordView",
    "AuditVerificationView",
    "DeferredVictimView",
    "ErrorBody",
    "Health",
    "HoldRequest",
    "HoldView",
    "LeaseList",
    "LeaseStateName",
    "LeaseView",
    "PendingPreemptionView",
    "PreemptRequest",
    "PreemptionDecisionView",
    "ReasonName",
    "ReleaseRequest",
    "RenewRequest",
    "RenewResult",
    "RenewalEntry",
    "RenewalsRequest",
    "RenewalsResult",
    "TicketList",
    "TicketView",
    "TicketWaitView",
    "VictimView",
    "WaitReasonName",
    "WatchAnswer",
    "WatchEvent",
    "WatchEventKind",
    "format_id",
]

# The limits are the domain's (_domain/_limits.py, _domain/_ids.py): the wire, the
# OpenAPI schema and the in-process Scheduler refuse the same values. The patterns
# are published in the OpenAPI schema, where (ECMA 262) $ means the end of the
# string; the checks here read a final $ as \Z (see _python_pattern): "job\n" is refused.
INT64_MAX = MAX_FENCING_TOKEN
MAX_CAUSE = MAX_CAUSE_LENGTH

# Literal types for the schema; _check_literals() below ties them to the enums.
LeaseStateName = Literal["active", "released", "expired", "fenced", "preempted"]
ReasonName = Literal["checkpoint_in_progress", "operator_hold"]
OutcomeName = Literal["preempted", "deferred", "not_tracked"]
WaitReasonName = Literal["blocked_behind_head", "awaiting_preemptions", "insufficient_victims"]
WatchEventKind = Literal["preemption_requested", "lease_ended"]
LeaseIdStr = Annotated[str, Meta(pattern=ID_PATTERN, description="32 lowercase hex digits")]
JobName = Annotated[str, Meta(pattern=NAME_PATTERN, min_length=1, max_length=MAX_NAME_LENGTH)]


def _check_literals() -> None:
    for literal, enum_type in (
        (LeaseStateName, LeaseState),
        (ReasonName, NonPreemptibleReason),
        (OutcomeName, PreemptionOutcome),
        (WaitReasonName, WaitReason),
        (WatchEventKind, LeaseEventKind),
    ):
        values = {m.value for m in enum_type}
        if set(get_args(literal)) != values:  # pragma: no cover - caught at import
            raise AssertionError(f"{literal} does not list the values of {enum_type}")


_check_literals()


def format_id(value: int) -> str:
    """A 128-bit id as the 32-character lowercase hex string used on the wire."""
    return id_hex(value)


# ----------------------------------------------------------------------------- errors


@attrs.frozen
class ErrorBody:
    """The one shape of every error answer."""

    status: int
    error: str  # a stable machine-readable code, e.g. "invalid_request", "lease_gone"
    message: str  # for people; names the offending value
    field: str | None = None  # the request field at fault, when there is one


# ----------------------------------------------------------------------------- requests


@attrs.frozen
class AcquireRequest:
    """Ask for ``slots`` of capacity for ``job``; the holder is the caller's principal."""

    job: JobName
    slots: Annotated[int, Meta(ge=1, le=MAX_SLOTS)]
    # Any positive ttl, as the issue states; a tiny one is simply expired at once.
    ttl: Annotated[float, Meta(gt=0, le=MAX_TTL, description="seconds")]
    priority: Annotated[int, Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    # The server refuses a grace above its max_grace or max_defer (400 naming both).
    grace: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_TTL,
            description="seconds a preemption waits for a final checkpoint and release",
        ),
    ] = 0.0


@attrs.frozen
class RenewRequest:
    """Extend a lease; ``reasons`` replaces the worker's previous in-flight report.

    ``checkpoint_age``: seconds since the worker's last completed checkpoint, so that
    the work a forced end loses is counted from it.
    """

    fencing_token: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    reasons: list[ReasonName] = attrs.field(factory=list)
    checkpoint_age: Annotated[float, Meta(ge=0, le=MAX_WORK_LOST_SECONDS)] | None = None


@attrs.frozen
class ReleaseRequest:
    """The holder's account of the work done since its last completed checkpoint
    (0 and 0 after a final checkpoint). Optional: an empty body releases as well."""

    work_lost_records: Annotated[int, Meta(ge=0, le=MAX_WORK_LOST_RECORDS)] | None = None
    work_lost_seconds: Annotated[float, Meta(ge=0, le=MAX_WORK_LOST_SECONDS)] | None = None


@attrs.frozen
class RenewalEntry:
    """One lease of a batch renewal: the fields of a single renew, and the lease id."""

    lease_id: LeaseIdStr
    fencing_token: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    reasons: list[ReasonName] = attrs.field(factory=list)
    checkpoint_age: Annotated[float, Meta(ge=0, le=MAX_WORK_LOST_SECONDS)] | None = None


@attrs.frozen
class RenewalsRequest:
    """Renew many leases in one request (``POST /v1/renewals``), each as a single renew.

    A bad entry is an error for that entry alone (see :func:`parse_renewals`).
    """

    leases: Annotated[list[RenewalEntry], Meta(min_length=1, max_length=MAX_BATCH_RENEWALS)]


@attrs.frozen
class PreemptRequest:
    """An operator's request to preempt a lease, with the cause to record (required:
    every decision says why)."""

    cause: Annotated[str, Meta(min_length=1, max_length=MAX_CAUSE, pattern=CAUSE_PATTERN)]


@attrs.frozen
class HoldRequest:
    """Set an operator hold: ``expires_in`` seconds, or null for a hold until cleared."""

    reason: Annotated[str, Meta(min_length=1, max_length=MAX_CAUSE, pattern=CAUSE_PATTERN)]
    expires_in: Annotated[float, Meta(gt=0, le=MAX_HOLD_SECONDS, description="seconds")] | None = (
        None
    )


# ----------------------------------------------------------------------------- answers


@attrs.frozen
class PendingPreemptionView:
    """A deferred preemption: why it waits, and the deadline at which it is forced."""

    cause: str
    reasons: list[ReasonName]
    requested_at: str  # UTC ISO 8601
    deadline: str  # UTC ISO 8601
    deadline_in: float  # seconds from the answer; 0 when already due
    # Set for a lease with a grace window: the window's end (request + grace).
    grace_deadline: str | None = None
    grace_deadline_in: float | None = None


@attrs.frozen
class HoldView:
    """An operator hold on an ACTIVE lease."""

    reason: str
    set_at: str  # UTC ISO 8601
    expires_at: str | None = None  # UTC ISO 8601; null: until cleared
    expires_in: float | None = None  # seconds from the answer; null: until cleared


@attrs.frozen
class LeaseView:
    lease_id: LeaseIdStr
    job: str
    holder: str
    priority: int
    slots: int
    ttl: float
    fencing_token: int
    state: LeaseStateName
    granted_at: str  # UTC ISO 8601
    expires_at: str  # UTC ISO 8601: when the TTL runs (or ran) out
    expires_in: float | None  # seconds from the answer (0 once passed); null once ended
    reasons: list[ReasonName]  # in-flight non-preemptible markers
    pending_preemption: PendingPreemptionView | None = None
    hold: HoldView | None = None  # the operator hold, while ACTIVE
    ended_at: str | None = None  # UTC ISO 8601, once ended
    end_cause: str | None = None  # why it ended, in words, once ended
    grace: float = 0.0  # seconds a preemption waits for the holder's release
    # Once ended: work done since the last completed checkpoint (records null: unknown).
    work_lost_records: int | None = None
    work_lost_seconds: float | None = None


@attrs.frozen
class VictimView:
    """A lease below a ticket's priority that preemption could take."""

    lease_id: LeaseIdStr
    job: str
    priority: int
    slots: int
    reasons: list[ReasonName]  # empty: preemptible now; else a preemption would be deferred


@attrs.frozen
class DeferredVictimView:
    """A preemption under way, deferred by markers or a hold until its deadline."""

    lease_id: LeaseIdStr
    cause: str
    reasons: list[ReasonName]
    deadline: str  # UTC ISO 8601
    deadline_in: float  # seconds from the answer


@attrs.frozen
class TicketWaitView:
    """Why a ticket waits (see :class:`grafos_scheduler.TicketWait`)."""

    reason: WaitReasonName
    position: int  # 1: the head of the queue
    needed_slots: int  # this ticket's slots and those of every ticket ahead of it
    free_slots: int
    pending_slots: int  # what preemptions under way will free
    shortfall: int  # what free and pending slots leave of needed_slots (>= 0)
    eligible_slots: int  # held by leases below its priority, not already being preempted
    eligible_victims: list[VictimView]  # the first 20 of them, in order of preference
    deferred_victims: list[DeferredVictimView]  # every preemption under way
    blocked_by: LeaseIdStr | None = None  # the head ticket, when blocked behind it


@attrs.frozen
class TicketView:
    ticket_id: LeaseIdStr
    job: str
    holder: str
    priority: int
    slots: int
    ttl: float
    requested_at: str  # UTC ISO 8601
    why: str | None = None  # why it waits, in words (in lists and polls)
    wait: TicketWaitView | None = None  # ... and in fields
    grace: float = 0.0


@attrs.frozen
class TicketList:
    """Every waiting ticket the caller may see, in the order they will be granted."""

    tickets: list[TicketView]


@attrs.frozen
class AcquireResult:
    """Answer to acquire and to polling a ticket: exactly one of ``lease`` and ``ticket``."""

    status: Literal["granted", "pending"]
    lease: LeaseView | None = None
    ticket: TicketView | None = None


@attrs.frozen
class RenewResult:
    lease_id: LeaseIdStr
    fencing_token: int
    expires_at: str  # UTC ISO 8601
    expires_in: float
    preemption_requested: bool
    preemption_cause: str | None = None
    preemption_deadline: str | None = None  # UTC ISO 8601
    preemption_deadline_in: float | None = None


@attrs.frozen
class RenewalsResult:
    """One result per entry of a batch renewal, in the same order: what a single renew
    answers for that lease, or the error body it would have answered."""

    results: list[RenewResult | ErrorBody]


@attrs.frozen
class LeaseList:
    """One page of leases, oldest grant first."""

    leases: list[LeaseView]
    # Pass as ``after`` for the next page; null on the last page.
    next_after: LeaseIdStr | None = None


@attrs.frozen
class PreemptionDecisionView:
    lease_id: LeaseIdStr
    outcome: OutcomeName
    cause: str
    reasons: list[ReasonName]
    deadline: str | None = None  # UTC ISO 8601, set when deferred
    deadline_in: float | None = None


@attrs.frozen
class WatchEvent:
    """Something a holder must act on, or learn of, at once.

    - ``preemption_requested``: stop at the next safe point, checkpoint, release before
      ``deadline_in`` seconds (the end of the grace window, or the max_defer bound).
    - ``lease_ended``: the lease is over (``state``, ``outcome`` say how); stop using it.
    """

    lease_id: LeaseIdStr
    kind: WatchEventKind
    deadline_in: float | None  # seconds from the answer; null for lease_ended
    deadline: str | None  # UTC ISO 8601
    job: str
    holder: str
    state: LeaseStateName  # "active" while a preemption is pending; the end state after
    cause: str | None
    grace: float
    at: str  # UTC ISO 8601: when the scheduler recorded it
    # lease_ended only: the audit kind of the end (release, expire, fence,
    # preemption_executed, preemption_forced, preemption_cooperative) and the work lost.
    outcome: str | None = None
    work_lost_records: int | None = None
    work_lost_seconds: float | None = None


@attrs.frozen
class WatchAnswer:
    """A watch's answer: events after the cursor given (empty at the timeout), and the
    cursor to pass next. ``reset`` is true when the cursor was absent, from before a
    restart or older than the server keeps: ``events`` then re-send the current state
    (every preemption still pending on the caller's leases) instead of a delta."""

    events: list[WatchEvent]
    cursor: str
    reset: bool = False


@attrs.frozen
class AuditRecordView:
    seq: int
    time: str  # UTC ISO 8601
    kind: str
    lease_id: str | None
    job: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


@attrs.frozen
class AuditPage:
    records: list[AuditRecordView]
    next_after_seq: int | None  # pass as after_seq for the next page; null at the end


@attrs.frozen
class AuditHeadView:
    seq: int
    hash: str


@attrs.frozen
class AuditVerificationView:
    """The wire form of the domain's :class:`AuditVerification`."""

    ok: bool
    first_bad_seq: int | None
    reason: str
    records: int
    head: AuditHeadView

    @classmethod
    def of(cls, result: AuditVerification, head: tuple[int, str]) -> AuditVerificationView:
        """``result`` as sent, with the store's current ``head``."""
        return cls(
            ok=result.ok,
            first_bad_seq=result.first_bad_seq,
            reason=result.reason,
            records=result.records_checked,
            head=AuditHeadView(seq=head[0], hash=head[1]),
        )


@attrs.frozen
class Health:
    status: Literal["ok"] = "ok"
