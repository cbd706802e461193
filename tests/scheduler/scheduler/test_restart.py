"""Restart: close the store, reopen the file, build a new Scheduler on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grafos_scheduler import (
    FencingTokenMismatch,
    InvalidRequest,
    Lease,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    PreemptionOutcome,
    Ticket,
)
from support.scheduling import SchedulerFactory, as_lease


def test_restart_restores_everything(make_scheduler: SchedulerFactory, clock: ManualClock) -> None:
    first = make_scheduler(4, max_defer=60.0)
    short = as_lease(first.acquire("short", "w", 10, 1, 10.0))
    long = as_lease(first.acquire("long", "w", 0, 1, 100.0))
    marked = as_lease(first.acquire("marked", "w", 0, 1, 100.0))
    big = as_lease(first.acquire("big", "w", 9, 1, 100.0))
    first.manager.mark_non_preemptible(marked.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
    waiting = first.acquire("waiting", "w", 9, 2, 100.0)
    assert isinstance(waiting, Ticket)  # needs 2: 'long' goes at once, 'marked' is deferred
    assert first.get(long.lease_id).state is LeaseState.PREEMPTED
    decision = first.request_preemption(marked.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    head_before = first.audit.head()
    first.close()

    clock.advance(20.0)  # longer than 'short''s TTL: down past its stored expiry
    second = make_scheduler(4, max_defer=60.0)
    # Renewals live in memory, so every restored ACTIVE lease gets a fresh TTL from
    # the restart: none expires before restart time plus its TTL.
    restored = second.get(short.lease_id)
    assert restored.state is LeaseState.ACTIVE
    assert restored.expires_at == 20.0 + 10.0
    kept = second.get(big.lease_id)
    assert kept.state is LeaseState.ACTIVE
    assert kept.expires_at == 20.0 + 100.0
    # The restart is audited after everything before, and nothing expired at it.
    after = second.audit.records(after_seq=head_before[0])
    assert [r.kind for r in after] == ["restart"]
    # The pending preemption survived; no marker survives a restart, so it runs now.
    assert second.pending_preemption(marked.lease_id) is not None
    second.tick()
    assert second.get(marked.lease_id).state is LeaseState.PREEMPTED
    granted = second.poll(waiting.ticket_id)
    assert isinstance(granted, Lease)
    assert granted.job == "waiting"
    clock.advance(10.0)  # now 'short''s fresh TTL runs out
    second.tick()
    assert second.get(short.lease_id).state is LeaseState.EXPIRED
    # Tokens never go backwards.
    again = as_lease(second.acquire("short", "w", 0, 1, 10.0))
    assert again.fencing_token == short.fencing_token + 1
    assert second.audit.verify().ok


def test_tokens_survive_many_restarts(make_scheduler: SchedulerFactory) -> None:
    last = 0
    for _ in range(4):
        scheduler = make_scheduler(2)
        lease = as_lease(scheduler.acquire("job", "w", 0, 1, 5.0))
        assert lease.fencing_token == last + 1
        last = lease.fencing_token
        scheduler.release(lease.lease_id)
        scheduler.close()
    scheduler = make_scheduler(2)
    kinds = [r.kind for r in scheduler.audit.records(limit=1000)]
    assert kinds.count("start") == 1
    assert kinds.count("restart") == 4
    assert scheduler.audit.verify().ok


_CRASHING_SCHEDULER = """
import os, sys
from grafos_scheduler import Scheduler, SqliteStore
scheduler = Scheduler(2, SqliteStore(sys.argv[1]))
lease = scheduler.acquire("job", "w", 0, 1, 3600.0)
print(f"{lease.lease_id:032x} {lease.fencing_token}", flush=True)
os._exit(0)  # no close, no cleanup: as if the process were killed after acknowledging
"""


def test_acknowledged_grant_survives_a_killed_process(
    make_scheduler: SchedulerFactory, db_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_SCHEDULER, str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lease_hex, token = done.stdout.split()
    # The dead process's owner lock went with it: a new scheduler may open the file.
    second = make_scheduler(2)
    restored = second.get(int(lease_hex, 16))
    assert restored.state is LeaseState.ACTIVE
    assert restored.fencing_token == int(token) == 1
    assert second.used_slots == 1
    assert second.audit.verify().ok


@pytest.mark.parametrize(("held", "capacity"), [(4, 2), (3, 1)])
def test_restart_with_a_capacity_below_the_held_slots_is_refused(
    make_scheduler: SchedulerFactory, clock: ManualClock, held: int, capacity: int
) -> None:
    first = make_scheduler(4)
    for i in range(held):
        first.acquire(f"j{i}", "w", 0, 1, 100.0)
    head = first.audit.head()
    first.close()
    with pytest.raises(InvalidRequest, match=rf"capacity {capacity} .* {held} slots"):
        make_scheduler(capacity)
    third = make_scheduler(held)
    assert third.used_slots == held <= third.capacity
    # The refused start wrote nothing: its restart record is not in the chain.
    kinds = [r.kind for r in third.audit.records(after_seq=head[0], limit=10)]
    assert kinds == ["restart"]


def test_restart_with_a_capacity_below_a_waiting_ticket_is_refused(
    make_scheduler: SchedulerFactory,
) -> None:
    first = make_scheduler(4)
    first.acquire("small", "w", 9, 1, 100.0)
    assert isinstance(first.acquire("wide", "w", 0, 4, 100.0), Ticket)
    first.close()
    with pytest.raises(InvalidRequest, match="pending ticket of 4 slots"):
        make_scheduler(2)


@pytest.mark.parametrize("advance", [0.0, 9.5, 30.0])
def test_a_restored_lease_gets_a_fresh_ttl_from_the_restart(
    make_scheduler: SchedulerFactory, clock: ManualClock, advance: float
) -> None:
    first = make_scheduler()
    lease = as_lease(first.acquire("job", "w", 0, 1, 10.0))
    first.close()
    clock.advance(advance)
    second = make_scheduler()
    restored = second.get(lease.lease_id)
    assert restored.state is LeaseState.ACTIVE
    assert restored.expires_at == advance + 10.0
    with pytest.raises(FencingTokenMismatch):
        second.renew(lease.lease_id, 99)
    assert second.renew(lease.lease_id, 1).expires_at == advance + 10.0


def test_a_repeated_request_for_a_restored_unmarked_preemption_carries_it_out(
    make_scheduler: SchedulerFactory,
) -> None:
    # Found by the state machine: markers do not survive a restart, so a pending
    # preemption read back from the store has nothing left to defer it.
    first = make_scheduler(2)
    lease = as_lease(first.acquire("job", "w", 0, 1, 100.0))
    first.manager.mark_non_preemptible(lease.lease_id, NonPreemptibleReason.CHECKPOINT_IN_PROGRESS)
    assert first.request_preemption(lease.lease_id, "room").outcome is PreemptionOutcome.DEFERRED
    first.close()

    second = make_scheduler(2)
    decision = second.request_preemption(lease.lease_id, "again")
    assert decision.outcome is PreemptionOutcome.PREEMPTED
    assert decision.cause == "room", "the original request's cause stands"
    assert second.get(lease.lease_id).state is LeaseState.PREEMPTED
    kinds = [r.kind for r in second.audit.records(after_seq=0, limit=1000)]
    assert kinds.count("preemption_requested") == 1, kinds
    assert kinds.count("preemption_executed") == 1, kinds
    assert second.audit.verify().ok
