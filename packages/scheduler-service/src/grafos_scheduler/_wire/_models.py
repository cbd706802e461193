"""The HTTP API's request and response bodies, and the strict parser for requests.

The wire models are frozen, slotted attrs classes. Their constraints are written once,
as ``msgspec.Meta`` in ``Annotated`` types: the OpenAPI schema at ``/schema`` shows them,
and :func:`parse_body` enforces them. Litestar's own decoding ignores unknown fields and
reports errors in its own shape, so the server never uses it: every request body is
decoded once, by :func:`parse_body`, and every refusal is one :class:`ErrorBody` that
names the field.

Lease and ticket ids cross JSON as 32-character lowercase hex strings, because JSON
numbers lose precision above 2**53. Monotonic scheduler times cannot mean anything to
another process, so every time is sent twice: as seconds from now (``expires_in``), which
is exact, and as a UTC wall-clock ISO 8601 string (``expires_at``), which is for people.
"""

from __future__ import annotations

import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import attrs
import msgspec
from msgspec import Meta

from .._domain._audit import AuditVerification
from .._domain._errors import InvalidRequest
from .._domain._ids import ID_PATTERN, id_from_hex, id_hex
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
    "FieldError",
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
    "escape",
    "format_id",
    "parse_body",
    "parse_id",
    "parse_renewals",
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


def parse_id(text: str, field: str) -> int:
    """The 128-bit id in ``text``; :class:`FieldError` naming ``field`` otherwise."""
    try:
        return id_from_hex(text)
    except InvalidRequest:
        raise FieldError(field, f"{text!r} is not a 32-character lowercase hex id") from None


class FieldError(ValueError):
    """A request value that the API refuses; ``field`` names it (a dotted path)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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


# ----------------------------------------------------------------------------- parsing

_M = TypeVar("_M")
_S = TypeVar("_S")


def _refuse_constant(name: str) -> float:
    raise FieldError(None, f"{name} is not valid JSON")


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise FieldError(escape(key), f"the field {key!r} appears more than once")
        data[key] = value
    return data


def escape(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``, so it encodes as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_surrogates(value: object, field: str | None) -> None:
    """Refuse a lone surrogate (``"\\ud800"`` in JSON) in any key or string of the body.

    Such a string is not Unicode text: it cannot be stored, logged or sent back.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError(
                field, f"{value[:80]!r} is not valid Unicode text (it holds a lone surrogate)"
            ) from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_surrogates(item, f"{field or ''}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = escape(key) if field is None else f"{field}.{escape(key)}"
            if escape(key) != key:
                raise FieldError(
                    path, f"the field name {key!r} is not valid Unicode text (lone surrogate)"
                )
            _refuse_surrogates(item, path)


def parse_body(model: type[_M], raw: bytes) -> _M:
    """Decode ``raw`` JSON into ``model``, refusing unknown fields, wrong types and ranges.

    Also refused: duplicate keys, and lone surrogates in any key or string. Raises
    :class:`FieldError` naming the first field at fault.
    """
    if model is RenewRequest:
        fast: object = _parse_renew_fast(raw)
        if fast is not None:
            return fast  # type: ignore[return-value]  # model is RenewRequest
    elif model is AcquireRequest:
        fast = _parse_acquire_fast(raw)
        if fast is not None:
            return fast  # type: ignore[return-value]  # model is AcquireRequest
    return _parse_body_strict(model, raw)


def _parse_body_strict(model: type[_M], raw: bytes) -> _M:
    data = _decode(raw) if raw.strip() else {}
    _refuse_surrogates(data, None)
    return _convert(model, data)


def _decode(raw: bytes) -> object:
    try:
        return json.loads(
            raw, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates
        )
    except FieldError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FieldError(None, f"the body is not valid JSON: {exc}") from None


_Shape = tuple[tuple[tuple[str, object, bool], ...], frozenset[str]]
_SHAPES: dict[type[Any], _Shape] = {}


def _shape(model: type[Any]) -> _Shape:
    """``(name, type hint, required)`` per field of ``model``, and the field names;
    computed once per model.

    ``typing.get_type_hints`` evaluates the string annotations again at every call
    (about 150 µs for a renewal's body), so no request pays for it.
    """
    shape = _SHAPES.get(model)
    if shape is None:
        hints = typing.get_type_hints(model, include_extras=True)
        fields = tuple(
            (name, hints[name], attribute.default is attrs.NOTHING)
            for name, attribute in attrs.fields_dict(model).items()
        )
        shape = _SHAPES[model] = (fields, frozenset(name for name, _, _ in fields))
    return shape


# The C (msgspec) decoding of the two hottest bodies. msgspec checks the same shapes,
# types and ranges as the strict parser, but takes the last of duplicate keys where the
# strict parser refuses them; so a body is taken only if it holds no escape (which could
# spell a key another way) and every key occurs in the raw text exactly as often as it
# was decoded. Any other body is the strict parser's, which finds and names the fault.


class _FastRenew(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    fencing_token: Annotated[int, Meta(ge=1, le=INT64_MAX)]
    reasons: list[ReasonName] | msgspec.UnsetType = msgspec.UNSET
    checkpoint_age: (
        Annotated[float, Meta(ge=0, le=MAX_WORK_LOST_SECONDS)] | msgspec.UnsetType | None
    ) = msgspec.UNSET


class _FastEntry(_FastRenew, forbid_unknown_fields=True, kw_only=True):
    # Checked by _parse_renewals_fast: msgspec's pattern check costs 0.7 µs an entry.
    lease_id: str


class _FastRenewals(msgspec.Struct, forbid_unknown_fields=True):
    leases: Annotated[list[_FastEntry], Meta(min_length=1, max_length=MAX_BATCH_RENEWALS)]


class _FastAcquire(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    job: JobName
    slots: Annotated[int, Meta(ge=1, le=MAX_SLOTS)]
    ttl: Annotated[float, Meta(gt=0, le=MAX_TTL)]
    priority: Annotated[int, Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    grace: Annotated[float, Meta(ge=0, le=MAX_TTL)] | msgspec.UnsetType = msgspec.UNSET


_FAST_ACQUIRE = msgspec.json.Decoder(_FastAcquire)
_FAST_RENEW = msgspec.json.Decoder(_FastRenew)
_FAST_RENEWALS = msgspec.json.Decoder(_FastRenewals)


def _decode_fast(decoder: msgspec.json.Decoder[_S], raw: bytes) -> _S | None:
    if b"\\" in raw:
        return None
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _counted(raw: bytes, bodies: list[_FastRenew], keys: dict[bytes, int]) -> bool:
    """True if each renew key, and each of ``keys``, occurs in ``raw`` as often as it
    was decoded (``keys``: extra keys and how often each must occur)."""
    given = len(bodies)
    with_reasons = sum(1 for b in bodies if b.reasons is not msgspec.UNSET)
    with_age = sum(1 for b in bodies if b.checkpoint_age is not msgspec.UNSET)
    expected = {
        b'"fencing_token"': given,
        b'"reasons"': with_reasons,
        b'"checkpoint_age"': with_age,
        **keys,
    }
    return all(raw.count(key) == n for key, n in expected.items())


def _reasons(body: _FastRenew) -> list[ReasonName]:
    return [] if body.reasons is msgspec.UNSET else body.reasons


def _age(body: _FastRenew) -> float | None:
    return None if body.checkpoint_age is msgspec.UNSET else body.checkpoint_age


def _parse_renew_fast(raw: bytes) -> RenewRequest | None:
    """A plainly valid renew body, decoded in C; None for the strict parser to judge."""
    body = _decode_fast(_FAST_RENEW, raw)
    if body is None or not _counted(raw, [body], {}):
        return None
    return RenewRequest(body.fencing_token, _reasons(body), _age(body))


def _parse_acquire_fast(raw: bytes) -> AcquireRequest | None:
    """A plainly valid acquire body, decoded in C; None for the strict parser to judge."""
    body = _decode_fast(_FAST_ACQUIRE, raw)
    if body is None:
        return None
    # A name holds no quote, so each quoted key occurs in the text only as that key.
    expected = {
        b'"job"': 1,
        b'"slots"': 1,
        b'"ttl"': 1,
        b'"priority"': body.priority is not msgspec.UNSET,
        b'"grace"': body.grace is not msgspec.UNSET,
    }
    if not all(raw.count(key) == n for key, n in expected.items()):
        return None
    return AcquireRequest(
        job=body.job,
        slots=body.slots,
        ttl=body.ttl,
        priority=0 if body.priority is msgspec.UNSET else body.priority,
        grace=0.0 if body.grace is msgspec.UNSET else body.grace,
    )


def _parse_renewals_fast(raw: bytes) -> list[RenewalEntry | FieldError] | None:
    """A batch renewal in which every entry is valid, decoded in C; None for the strict
    parser to judge."""
    body = _decode_fast(_FAST_RENEWALS, raw)
    if body is None:
        return None
    leases = body.leases
    if not _counted(raw, list(leases), {b'"leases"': 1, b'"lease_id"': len(leases)}):
        return None
    for e in leases:
        # Exactly ID_PATTERN: 32 characters, each a lowercase hex digit.
        if len(e.lease_id) != 32 or e.lease_id.strip(_HEX_DIGITS):
            return None
    return [RenewalEntry(e.lease_id, e.fencing_token, _reasons(e), _age(e)) for e in leases]


_HEX_DIGITS = "0123456789abcdef"


def parse_renewals(raw: bytes) -> list[RenewalEntry | FieldError]:
    """Decode a batch renewal: the body strictly, then each entry on its own.

    The body's shape (an object with ``leases``, an array of 1 to
    :data:`MAX_BATCH_RENEWALS` items, nothing else) is checked first and raises
    :class:`FieldError`; an entry that is wrong becomes a ``FieldError`` in its place
    (its ``field`` is ``leases[i]...``), so one bad lease never fails the others.
    """
    fast = _parse_renewals_fast(raw)
    return fast if fast is not None else _parse_renewals_strict(raw)


def _parse_renewals_strict(raw: bytes) -> list[RenewalEntry | FieldError]:
    if not raw.strip():
        raise FieldError("leases", "the field 'leases' is required")
    data = _decode(raw)
    if not isinstance(data, dict):
        raise FieldError(None, f"the body must be a JSON object, not {_json_type(data)}")
    _refuse_surrogates(dict.fromkeys(data), None)
    for key in data:
        if key != "leases":
            raise FieldError(escape(str(key)), f"unknown field {key!r}")
    if "leases" not in data:
        raise FieldError("leases", "the field 'leases' is required")
    entries = data["leases"]
    if not isinstance(entries, list):
        raise FieldError("leases", f"expected an array, got {_json_type(entries)}")
    _check_length(Meta(min_length=1, max_length=MAX_BATCH_RENEWALS), entries, "leases")
    parsed: list[RenewalEntry | FieldError] = []
    for i, entry in enumerate(entries):
        field = f"leases[{i}]"
        try:
            _refuse_surrogates(entry, field)
            parsed.append(_convert(RenewalEntry, entry, field))
        except FieldError as exc:
            parsed.append(exc)
    return parsed


def _convert(model: type[_M], data: object, prefix: str | None = None) -> _M:
    if not isinstance(data, dict):
        if prefix is not None:
            raise FieldError(prefix, f"expected an object, got {_json_type(data)}")
        raise FieldError(None, f"the body must be a JSON object, not {_json_type(data)}")
    fields, names = _shape(model)
    at = "" if prefix is None else prefix + "."
    for key in data:
        if key not in names:
            raise FieldError(at + escape(str(key)), f"unknown field {key!r}")
    values: dict[str, object] = {}
    for name, hint, required in fields:
        if name not in data:
            if required:
                raise FieldError(at + name, f"the field {name!r} is required")
            continue
        values[name] = _check(hint, data[name], at + name)
    return model(**values)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_Checker = Callable[[object, str], object]
_CHECKERS: dict[object, _Checker] = {}


def _check(hint: object, value: object, field: str) -> object:
    """``value`` if it has the type and meets the constraints of ``hint``."""
    try:
        checker = _CHECKERS.get(hint)
    except TypeError:  # an unhashable hint: compile it each time
        return _compile(hint)(value, field)
    if checker is None:
        checker = _CHECKERS[hint] = _compile(hint)
    return checker(value, field)


def _compile(hint: object) -> _Checker:
    """The checker of ``hint``: the type introspection done once, not per value."""
    meta: Meta | None = None
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        meta = next((m for m in extras if isinstance(m, Meta)), None)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        nullable = type(None) in options
        (inner,) = [o for o in options if o is not type(None)]
        inner_check = _compile(inner)

        def optional(value: object, field: str) -> object:
            if value is None and nullable:
                return None
            return inner_check(value, field)

        return optional
    if origin is Literal:
        allowed = get_args(hint)
        shown = ", ".join(map(str, allowed))

        def literal(value: object, field: str) -> object:
            if value not in allowed or not isinstance(value, str):
                raise FieldError(field, f"{value!r} is not one of {shown}")
            return value

        return literal
    if origin is list:
        (item,) = get_args(hint)
        item_check = _compile(item)
        length = meta

        def array(value: object, field: str) -> object:
            if not isinstance(value, list):
                raise FieldError(field, f"expected an array, got {_json_type(value)}")
            if length is not None:
                _check_length(length, value, field)
            return [item_check(v, f"{field}[{i}]") for i, v in enumerate(value)]

        return array
    if isinstance(hint, type) and attrs.has(hint):
        model = hint
        return lambda value, field: _convert(model, value, field)
    base = _scalar(hint)
    if meta is None:
        return base
    constraints = meta

    def constrained(value: object, field: str) -> object:
        value = base(value, field)
        _check_meta(constraints, value, field)
        return value

    return constrained


def _scalar(hint: object) -> _Checker:
    if hint is str:

        def text(value: object, field: str) -> object:
            if not isinstance(value, str):
                raise FieldError(field, f"expected a string, got {_json_type(value)}")
            return value

        return text
    if hint is int:

        def integer(value: object, field: str) -> object:
            # bool is an int in Python, never in the API.
            if not isinstance(value, int) or isinstance(value, bool):
                raise FieldError(field, f"expected an integer, got {_json_type(value)}")
            return value

        return integer
    if hint is float:

        def number(value: object, field: str) -> object:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise FieldError(field, f"expected a number, got {_json_type(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise FieldError(field, f"{value!r} is not a finite number")
            return value

        return number
    raise TypeError(f"no parser for {hint!r}")  # a model field of a type we do not know


def _python_pattern(pattern: str) -> str:
    """A JSON Schema ``pattern`` for :func:`re.search`: a final ``$`` becomes ``\\Z``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _check_length(meta: Meta, value: list[object], field: str) -> None:
    if meta.min_length is not None and len(value) < meta.min_length:
        raise FieldError(field, f"{len(value)} items are fewer than the minimum {meta.min_length}")
    if meta.max_length is not None and len(value) > meta.max_length:
        raise FieldError(field, f"{len(value)} items are more than the maximum {meta.max_length}")


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_python_pattern(pattern))


def _check_meta(meta: Meta, value: object, field: str) -> None:
    if isinstance(value, int | float):
        if meta.ge is not None and value < meta.ge:
            raise FieldError(field, f"{value!r} is below the minimum {meta.ge}")
        if meta.gt is not None and value <= meta.gt:
            raise FieldError(field, f"{value!r} must be greater than {meta.gt}")
        if meta.le is not None and value > meta.le:
            raise FieldError(field, f"{value!r} is above the maximum {meta.le}")
    if isinstance(value, str):
        if meta.min_length is not None and len(value) < meta.min_length:
            raise FieldError(field, f"{value!r} is shorter than {meta.min_length} characters")
        if meta.max_length is not None and len(value) > meta.max_length:
            raise FieldError(
                field, f"{value[:40]!r}... is longer than {meta.max_length} characters"
            )
        # JSON Schema patterns are unanchored (search); ours anchor themselves with ^ $.
        if meta.pattern is not None and not _compiled(meta.pattern).search(value):
            raise FieldError(field, f"{value[:80]!r} does not match {meta.pattern}")
