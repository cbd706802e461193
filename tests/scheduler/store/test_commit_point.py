"""The store's one write: commit(change). It checks the head and the tokens; the
chain itself is the domain's, so a store with no chain code still verifies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from grafos_scheduler import (
    AuditRecord,
    Change,
    Lease,
    LeaseRow,
    LeaseState,
    ManualClock,
    PreemptionOutcome,
    Scheduler,
    SqliteStore,
    StoreConflict,
    TicketRow,
    WorkLost,
    write_change,
)
from support.internals import GENESIS_HASH, active_row, book_of, stale_grant, store_of
from support.scheduling import as_lease


class _DictTransaction:
    """A StoreTransaction over plain dicts: rows and records kept as given."""

    def __init__(self, store: DictStore) -> None:
        self.leases = dict(store.leases)
        self.tickets = dict(store.tickets_by_id)
        self.tokens = dict(store.tokens)
        self.audit = list(store.audit)

    def audit_head(self) -> tuple[int, str]:
        return (self.audit[-1].seq, self.audit[-1].hash) if self.audit else (0, GENESIS_HASH)

    def fencing_token(self, job: str) -> int:
        return self.tokens.get(job, 0)

    def set_fencing_token(self, job: str, token: int) -> bool:
        if token <= self.tokens.get(job, 0):
            return False
        self.tokens[job] = token
        return True

    def insert_lease(self, row: LeaseRow) -> None:
        assert row.lease_id not in self.leases
        self.leases[row.lease_id] = row

    def update_lease(self, row: LeaseRow) -> None:
        assert self.leases[row.lease_id].state is LeaseState.ACTIVE
        self.leases[row.lease_id] = row

    def insert_ticket(self, row: TicketRow) -> None:
        self.tickets[row.ticket_id] = row

    def delete_ticket(self, ticket_id: int) -> None:
        self.tickets.pop(ticket_id, None)

    def append_audit(self, record: AuditRecord) -> None:
        self.audit.append(record)


class DictStore:
    """A whole SchedulerStore in memory, with no audit chain code of its own."""

    def __init__(self) -> None:
        self.leases: dict[int, LeaseRow] = {}
        self.tickets_by_id: dict[int, TicketRow] = {}
        self.tokens: dict[str, int] = {}
        self.audit: list[AuditRecord] = []
        self.commits = 0

    @contextmanager
    def _transaction(self) -> Iterator[_DictTransaction]:
        txn = _DictTransaction(self)
        yield txn  # an exception leaves the store as it was
        self.leases, self.tickets_by_id = txn.leases, txn.tickets
        self.tokens, self.audit = txn.tokens, txn.audit

    def commit(self, change: Change) -> None:
        with self._transaction() as txn:
            write_change(txn, change)
        self.commits += 1

    durable = True  # every commit is as durable as this dict when it returns

    def wait_durable(self) -> None:
        pass

    def audit_head(self) -> tuple[int, str]:
        return (self.audit[-1].seq, self.audit[-1].hash) if self.audit else (0, GENESIS_HASH)

    def fencing_token(self, job: str) -> int:
        return self.tokens.get(job, 0)

    def active_leases(self) -> list[LeaseRow]:
        rows = [r for r in self.leases.values() if r.state is LeaseState.ACTIVE]
        return sorted(rows, key=lambda r: r.granted_wall)

    def tickets(self) -> list[TicketRow]:
        return sorted(self.tickets_by_id.values(), key=lambda t: (-t.priority, t.position))

    def get_lease(self, lease_id: int) -> LeaseRow | None:
        return self.leases.get(lease_id)

    def lease_for_ticket(self, ticket_id: int) -> LeaseRow | None:
        return next((r for r in self.leases.values() if r.ticket_id == ticket_id), None)

    def list_leases(self, state: LeaseState | None = None) -> list[LeaseRow]:
        rows = [r for r in self.leases.values() if state is None or r.state is state]
        return sorted(rows, key=lambda r: r.granted_wall)

    def list_leases_page(
        self,
        *,
        state: LeaseState | None = None,
        holder: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[LeaseRow]:
        rows = sorted(self.list_leases(state), key=lambda r: (r.granted_wall, r.lease_id))
        rows = [r for r in rows if holder is None or r.holder == holder]
        if after is not None:
            cursor = self.leases.get(after)
            if cursor is None:
                return []
            key = (cursor.granted_wall, cursor.lease_id)
            rows = [r for r in rows if (r.granted_wall, r.lease_id) > key]
        return rows[:limit]

    def count_leases_by_state(self) -> dict[LeaseState, int]:
        counts = dict.fromkeys(LeaseState, 0)
        for row in self.leases.values():
            counts[row.state] += 1
        return counts

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        return [r for r in self.audit if r.seq > after_seq][:limit]

    def close(self) -> None:
        pass


def test_a_store_with_no_chain_code_keeps_a_chain_that_verifies() -> None:
    store, clock = DictStore(), ManualClock()
    with Scheduler(2, store, clock=clock, autostart=False) as scheduler:
        low = as_lease(scheduler.acquire("low", "w", 0, 2, 10.0))
        ticket = scheduler.acquire("high", "w", 5, 2, 10.0)  # preempts "low" at once
        assert isinstance(ticket, Lease)
        assert scheduler.get(low.lease_id).state is LeaseState.PREEMPTED
        clock.advance(11.0)
        scheduler.tick()
        assert scheduler.audit.verify().ok
    kinds = [r.kind for r in store.audit]
    assert kinds[0] == "start"
    assert "preemption_executed" in kinds
    assert kinds[-1] == "expire"
    # A restart on the same store chains on and still verifies.
    with Scheduler(2, store, clock=clock, autostart=False) as again:
        decision = again.request_preemption(low.lease_id, "late")
        assert decision.outcome is PreemptionOutcome.NOT_TRACKED
        verification = again.audit.verify()
        assert verification.ok
        assert verification.records_checked == len(kinds) + 1
    assert store.audit[-1].kind == "restart"


class _OldTransaction(_DictTransaction):
    """A transaction written before the token's write became its check: it returns None."""

    def set_fencing_token(self, job: str, token: int) -> bool:
        super().set_fencing_token(job, token)
        return None  # type: ignore[return-value]


def test_a_transaction_whose_token_write_answers_nothing_is_named() -> None:
    store = DictStore()
    with Scheduler(2, store, clock=ManualClock(), autostart=False) as scheduler:
        change = stale_grant(scheduler, "a", lease_id=7)
        with pytest.raises(TypeError, match=r"_OldTransaction.set_fencing_token returned None"):
            write_change(_OldTransaction(store), change)
        assert store.tokens == {}


def test_a_change_on_a_stale_head_is_refused_and_writes_nothing(db_path: Path) -> None:
    clock = ManualClock()
    with Scheduler(2, SqliteStore(db_path), clock=clock, autostart=False) as scheduler:
        lease = as_lease(scheduler.acquire("a", "w", 0, 1, 10.0))
        store: Any = store_of(scheduler)
        head = store.audit_head()
        row = active_row(scheduler, lease.lease_id)
        # The release as it would have been decided before the grant was recorded.
        stale = book_of(scheduler).release(row, clock.wall(), WorkLost(None, 0.0))
        stale = attrs.evolve(stale, audit=tuple(attrs.evolve(r, seq=1) for r in stale.audit))
        with pytest.raises(StoreConflict, match="audit head is seq"):
            store.commit(stale)
        assert store.audit_head() == head
        assert store.get_lease(lease.lease_id).state is LeaseState.ACTIVE
        assert scheduler.audit.verify().ok


def test_a_stale_head_is_refused_inside_an_open_group_too(db_path: Path) -> None:
    # Inside a group the store knows the head its last change wrote, and checks that.
    clock = ManualClock()
    with Scheduler(2, SqliteStore(db_path), clock=clock, autostart=False) as scheduler:
        lease = as_lease(scheduler.acquire("a", "w", 0, 1, 10.0, wait=False))
        store: Any = store_of(scheduler)
        row = active_row(scheduler, lease.lease_id)
        release = book_of(scheduler).release(row, clock.wall(), WorkLost(None, 0.0))
        seq = release.audit[0].seq
        # As if decided before the grant: it follows the head before the grant's record.
        stale = attrs.evolve(
            release, audit=tuple(attrs.evolve(r, seq=r.seq - 1) for r in release.audit)
        )
        with pytest.raises(StoreConflict, match="audit head is seq"):
            store.commit(stale)
        scheduler.wait_durable()
        assert store.audit_head()[0] == seq - 1
        assert store.get_lease(lease.lease_id).state is LeaseState.ACTIVE
        assert scheduler.release(lease.lease_id).state is LeaseState.RELEASED
        assert scheduler.audit.verify().ok


def test_a_fencing_token_not_above_the_stored_one_is_refused(db_path: Path) -> None:
    clock = ManualClock()
    with Scheduler(2, SqliteStore(db_path), clock=clock, autostart=False) as scheduler:
        first = as_lease(scheduler.acquire("a", "w", 0, 1, 10.0))
        scheduler.release(first.lease_id)
        store: Any = store_of(scheduler)
        change = stale_grant(scheduler, "a", lease_id=12345)
        with pytest.raises(StoreConflict, match="fencing token 1 for job 'a' is not above"):
            store.commit(change)
        assert store.get_lease(12345) is None
        assert store.fencing_token("a") == 1
        second = as_lease(scheduler.acquire("a", "w", 0, 1, 10.0))
        assert second.fencing_token == 2
