"""Releases, expiries, fences and preemptions race flush starts and completes."""

from __future__ import annotations

import random
import threading

import pytest

from grafos_scheduler import (
    Lease,
    LeaseState,
    ManualClock,
    NonPreemptibleReason,
    SchedulerError,
)
from support.scheduling import SchedulerFactory

FLUSHERS = 6
ROUNDS = 300


@pytest.mark.parametrize("executor", ["tick", "thread"])
def test_observer_races_lease_ends(
    make_scheduler: SchedulerFactory, clock: ManualClock, executor: str
) -> None:
    scheduler = make_scheduler(8, max_defer=5.0)
    if executor == "thread":
        # The executor thread races the observer and the main thread's tick() too.
        scheduler.start()
    live: list[int] = []
    live_lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Barrier(FLUSHERS + 1)

    def flusher(seed: int) -> None:
        rng = random.Random(seed)
        started.wait()
        try:
            while not stop.is_set():
                with live_lock:
                    lease_id = rng.choice(live) if live else rng.getrandbits(128)
                scheduler.observer.on_flush_start(lease_id)
                if rng.random() < 0.3:
                    threading.Event().wait(0.0001)  # let the mutator interleave
                scheduler.observer.on_flush_complete(lease_id)
        except BaseException as exc:  # the observer must never raise
            errors.append(exc)

    threads = [threading.Thread(target=flusher, args=(i,)) for i in range(FLUSHERS)]
    for t in threads:
        t.start()
    started.wait()
    rng = random.Random(0)
    try:
        for i in range(ROUNDS):
            action = rng.choice(["acquire", "acquire", "release", "fence", "expire", "preempt"])
            try:
                if action == "acquire":
                    result = scheduler.acquire(f"job{i}", "w", rng.randint(0, 3), 1, 2.0)
                    if isinstance(result, Lease):
                        with live_lock:
                            live.append(result.lease_id)
                elif live:
                    with live_lock:
                        lease_id = rng.choice(live)
                    if action == "release":
                        scheduler.release(lease_id)
                    elif action == "fence":
                        scheduler.fence(lease_id)
                    elif action == "preempt":
                        scheduler.request_preemption(lease_id, "race")
                    else:
                        clock.advance(0.5)
                scheduler.tick()
            except SchedulerError:
                pass  # the lease ended under us: that is the race being tested
            with live_lock:
                live[:] = [x for x in live if scheduler.manager.is_tracked(x)]
    finally:
        stop.set()
        for t in threads:
            t.join(60.0)
    assert not errors
    assert all(not t.is_alive() for t in threads)
    # Every flush completed, so no tracked lease keeps a marker: nothing leaked.
    active = scheduler.leases(LeaseState.ACTIVE)
    for lease in active:
        assert (
            scheduler.manager.marker_count(
                lease.lease_id, NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
            )
            == 0
        )
    scheduler.tick()
    active = scheduler.leases(LeaseState.ACTIVE)
    assert len(scheduler.manager) == len(active)
    # With every marker cleared, each deferred preemption has been carried out.
    assert all(scheduler.pending_preemption(x.lease_id) is None for x in active)
    assert scheduler.used_slots <= scheduler.capacity
    # Deterministic: a notification for a lease that was never granted is one miss.
    before = scheduler.observer.misses
    scheduler.observer.on_flush_start(2**128 - 1)
    assert scheduler.observer.misses == before + 1
    assert scheduler.audit.verify().ok
