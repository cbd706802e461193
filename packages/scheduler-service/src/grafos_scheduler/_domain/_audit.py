"""The hash-chained audit log: canonical encoding, chaining and verification.

Pure domain code. The lease book chains records onto the head it knows
(:func:`chain`); a store persists the finished records in the same transaction as
the state change they describe, and hands them back in seq order for :class:`AuditLog`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs

from .._domain._errors import InvalidRequest
from .._domain._ids import id_hex
from .._domain._limits import check_count

#: The most records one page of :meth:`AuditLog.records` returns.
MAX_PAGE = 10_000

#: The ``prev_hash`` of the first record.
GENESIS_HASH = "0" * 64


class AuditKind(enum.Enum):
    """What an audit record records."""

    START = "start"  # the first start of a scheduler on an empty store
    RESTART = "restart"  # every later start on the same store
    QUEUED = "queued"  # an acquire that had to wait: a ticket
    TICKET_CANCELLED = "ticket_cancelled"  # a waiting ticket withdrawn before its grant
    GRANT = "grant"
    RELEASE = "release"
    EXPIRE = "expire"
    FENCE = "fence"
    PREEMPTION_REQUESTED = "preemption_requested"
    PREEMPTION_DEFERRED = "preemption_deferred"
    PREEMPTION_EXECUTED = "preemption_executed"
    PREEMPTION_FORCED = "preemption_forced"
    # A lease with a grace window whose holder checkpointed and released after the
    # request, before its deadline: it ends PREEMPTED, having lost what it reported.
    PREEMPTION_COOPERATIVE = "preemption_cooperative"
    # A waiting ticket's shortfall that the leases below its priority cannot cover:
    # nothing is preempted. Recorded again only when the shortfall or the room changes.
    PREEMPTION_REFUSED = "preemption_refused"
    # A replica won the leadership of a shared (PostgreSQL) store: a new epoch.
    LEADER_ELECTED = "leader_elected"
    HOLD_SET = "hold_set"  # an operator hold set (or replaced) on an ACTIVE lease
    HOLD_CLEARED = "hold_cleared"  # cleared by an operator
    HOLD_EXPIRED = "hold_expired"  # its expires_in ran out
    TOKENS_RELOADED = "tokens_reloaded"  # the service read its token file again
    TOKENS_RELOAD_FAILED = "tokens_reload_failed"  # ...and kept the old tokens


@attrs.frozen
class AuditRecord:
    """One link of the chain: ``hash = SHA-256(prev_hash || canonical encoding)``."""

    seq: int
    time: float  # wall clock, seconds since the epoch
    kind: str
    lease_id: int | None
    job: str | None
    data: Mapping[str, Any] = attrs.field(hash=False)
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form: ids as 32-character hex."""
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "lease_id": None if self.lease_id is None else id_hex(self.lease_id),
            "job": self.job,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def canonical_encoding(
    seq: int,
    time: float,
    kind: str,
    lease_id: int | None,
    job: str | None,
    data: Mapping[str, Any],
) -> bytes:
    """The bytes that are hashed: JSON with sorted keys and compact separators.

    Lease ids are 32-character lowercase hex, so the encoding never depends on how a
    JSON library treats integers above 2**53.
    """
    body = {
        "seq": seq,
        "time": time,
        "kind": kind,
        "lease_id": None if lease_id is None else id_hex(lease_id),
        "job": job,
        "data": data,
    }
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"audit data {data!r} is not canonical JSON: {exc}") from None
    return text.encode("utf-8")


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """SHA-256 over the previous hash (hex, ASCII) followed by the canonical encoding."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def make_record(
    prev_seq: int,
    prev_hash: str,
    *,
    time: float,
    kind: AuditKind,
    lease_id: int | None,
    job: str | None,
    data: Mapping[str, Any],
) -> AuditRecord:
    """The record that follows (``prev_seq``, ``prev_hash``) in the chain."""
    seq = prev_seq + 1
    canonical = canonical_encoding(seq, time, kind.value, lease_id, job, data)
    return AuditRecord(
        seq,
        time,
        kind.value,
        lease_id,
        job,
        dict(data),
        prev_hash,
        chain_hash(prev_hash, canonical),
    )


@attrs.frozen
class AuditEntry:
    """What an audit record will say, before it is chained (no seq, no hashes yet)."""

    kind: AuditKind
    lease_id: int | None
    job: str | None
    data: Mapping[str, Any] = attrs.field(hash=False)


def chain(
    head: tuple[int, str], time: float, entries: Iterable[AuditEntry]
) -> tuple[AuditRecord, ...]:
    """The finished records that follow ``head`` (seq, hash), in order, all at ``time``.

    This is the whole chaining rule: a store persists these records as they are.
    """
    seq, prev_hash = head
    records: list[AuditRecord] = []
    for entry in entries:
        record = make_record(
            seq,
            prev_hash,
            time=time,
            kind=entry.kind,
            lease_id=entry.lease_id,
            job=entry.job,
            data=entry.data,
        )
        records.append(record)
        seq, prev_hash = record.seq, record.hash
    return tuple(records)


def record_hash_ok(record: AuditRecord) -> bool:
    """True when the record's hash matches its content and its prev_hash."""
    try:
        canonical = canonical_encoding(
            record.seq, record.time, record.kind, record.lease_id, record.job, record.data
        )
    except (InvalidRequest, TypeError, ValueError):
        return False
    return chain_hash(record.prev_hash, canonical) == record.hash


@attrs.frozen
class AuditVerification:
    """The result of :meth:`AuditLog.verify`; true when the chain is intact.

    ``first_bad_seq`` names the first record that is missing, out of place, or whose
    hash or link does not match. A chain cannot show that its tail was cut: compare
    ``head`` with a copy exported earlier.
    """

    ok: bool
    first_bad_seq: int | None
    reason: str
    records_checked: int
    head: tuple[int, str]

    def __bool__(self) -> bool:
        return self.ok


class ChainVerifier:
    """Walks records in seq order and stops at the first bad one."""

    __slots__ = ("bad_seq", "checked", "prev_hash", "reason", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.prev_hash = GENESIS_HASH
        self.checked = 0
        self.bad_seq: int | None = None
        self.reason = "the chain verifies"

    def feed(self, records: Iterable[AuditRecord]) -> bool:
        """Check the next records; False once a bad one is found."""
        for record in records:
            expected = self.seq + 1
            if record.seq != expected:
                self._bad(
                    min(expected, record.seq),
                    f"expected seq {expected}, found seq {record.seq}: a record is missing "
                    "or out of order",
                )
                return False
            if record.prev_hash != self.prev_hash:
                self._bad(record.seq, f"seq {record.seq} does not link to seq {self.seq}")
                return False
            if not record_hash_ok(record):
                self._bad(record.seq, f"seq {record.seq} does not match its hash")
                return False
            self.seq = record.seq
            self.prev_hash = record.hash
            self.checked += 1
        return True

    def _bad(self, seq: int, reason: str) -> None:
        self.bad_seq = seq
        self.reason = reason

    def result(self) -> AuditVerification:
        """The verdict so far."""
        return AuditVerification(
            self.bad_seq is None,
            self.bad_seq,
            self.reason,
            self.checked,
            (self.seq, self.prev_hash),
        )


def verify_records(records: Iterable[AuditRecord]) -> AuditVerification:
    """Verify a whole chain given in seq order."""
    verifier = ChainVerifier()
    verifier.feed(records)
    return verifier.result()


class AuditSource(Protocol):
    """Where an :class:`AuditLog` reads its records (a scheduler store)."""

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Records with seq > ``after_seq``, in seq order, at most ``limit`` of them."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) when empty."""
        ...


class AuditLog:
    """Read access to the audit chain: verify it, export its head, page through it."""

    __slots__ = ("_source",)

    def __init__(self, source: AuditSource) -> None:
        self._source = source

    def verify(self, *, page: int = 1000) -> AuditVerification:
        """Walk the whole chain and report the first bad seq, or success.

        ``page`` is how many records are read at a time, from 1 to MAX_PAGE.
        """
        check_count(page, "page", 1, MAX_PAGE)
        verifier = ChainVerifier()
        after = 0
        while True:
            batch = self._source.audit_records(after, page)
            if not batch:
                break
            if not verifier.feed(batch):
                break
            after = batch[-1].seq
        return verifier.result()

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record, to export elsewhere."""
        return self._source.audit_head()

    def records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Up to ``limit`` records with seq > ``after_seq``, oldest first."""
        check_count(after_seq, "after_seq", 0)
        check_count(limit, "limit", 1, MAX_PAGE)
        return self._source.audit_records(after_seq, limit)
