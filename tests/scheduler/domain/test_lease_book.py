"""The lease book decides without changing itself; apply() is the only way in."""

from __future__ import annotations

import inspect

import attrs

from grafos_scheduler import AuditKind, Change, LeaseState, ManualClock, PreemptionManager, WorkLost
from support.internals import GENESIS_HASH, AuditEntry, LeaseBook, chain, verify_records
from support.internals import audit_entries as _audit_entries


def _book(capacity: int = 4) -> LeaseBook:
    return LeaseBook(capacity, "epoch-1", PreemptionManager(ManualClock(), 30.0))


def _grant(book: LeaseBook, job: str = "j", lease_id: int = 7, last_token: int = 0) -> Change:
    change, _row = book.grant(
        lease_id=lease_id,
        job=job,
        holder="w",
        priority=0,
        slots=1,
        ttl=10.0,
        ticket_id=None,
        last_token=last_token,
        now=100.0,
        wall=1_000.0,
    )
    return change


def test_a_decision_leaves_the_book_as_it_was_until_it_is_applied() -> None:
    book = _book()
    change = _grant(book)
    assert book.active == {}
    assert book.used == 0
    assert book.head == (0, GENESIS_HASH)
    assert not book.manager.is_tracked(7)
    book.apply(change)
    assert set(book.active) == {7}
    assert book.used == 1
    assert book.manager.is_tracked(7)
    assert book.head == change.new_head


def test_a_grant_mints_the_next_token_and_chains_its_record_on_the_head() -> None:
    book = _book()
    change = _grant(book, last_token=41)
    assert change.fencing_tokens == (("j", 42),)
    assert change.inserted_leases[0].fencing_token == 42
    assert change.expected_head == (0, GENESIS_HASH)
    (record,) = change.audit
    assert (record.seq, record.kind, record.data["fencing_token"]) == (1, "grant", 42)
    assert verify_records(change.audit).ok


def test_successive_changes_chain_onto_each_other() -> None:
    book = _book()
    first = _grant(book)
    book.apply(first)
    row = book.active[7]
    second = book.release(row, 1_001.0, WorkLost(None, 1.0))
    assert second.expected_head == first.new_head
    assert second.updated_leases[0].state is LeaseState.RELEASED
    assert verify_records(first.audit + second.audit).ok
    book.apply(second)
    assert book.active == {}
    assert book.used == 0


def test_a_renewal_changes_the_expiry_in_memory_and_writes_no_audit_record() -> None:
    book = _book()
    book.apply(_grant(book))
    old, head = book.active[7], book.head
    assert old.expires_at == 110.0
    renewed = book.renew_in_memory(old, now=105.0, wall=1_005.0)
    assert book.active[7] is renewed
    assert renewed == attrs.evolve(old, expires_at=115.0, expires_wall=1_015.0)
    assert book.head == head  # no audit record


def test_the_chain_is_the_domains_rule() -> None:
    entries = [AuditEntry(AuditKind.RELEASE, 1, "j", {}), AuditEntry(AuditKind.FENCE, 2, "k", {})]
    records = chain((0, GENESIS_HASH), 5.0, entries)
    assert [r.seq for r in records] == [1, 2]
    assert records[1].prev_hash == records[0].hash
    assert verify_records(records).ok


def test_every_audit_kind_has_a_builder() -> None:
    # One function per kind of record, not payloads written inline.
    builders = [f for _, f in inspect.getmembers(_audit_entries, inspect.isfunction)]
    source = "\n".join(inspect.getsource(f) for f in builders)
    missing = [k.name for k in AuditKind if f"AuditKind.{k.name}" not in source]
    assert missing == []


def test_renewals_keep_one_expiry_entry_per_lease_and_the_due_one_is_the_latest() -> None:
    book = _book()
    book.apply(_grant(book))
    row = book.active[7]
    for i in range(1, 1001):
        row = book.renew_in_memory(row, now=100.0 + i / 100, wall=1_000.0 + i / 100)
    assert row.expires_at == 120.0
    assert len(book._expiry) == 1  # a renewal pushes nothing
    # The old entry comes up at 110: not due, it moves to the renewed expiry.
    assert book.due_expiry(110.0) is None
    assert book._expiry == [(120.0, 7)]
    assert book.next_expiry() == 120.0
    assert book.due_expiry(119.99) is None
    assert book.due_expiry(120.0) is row
