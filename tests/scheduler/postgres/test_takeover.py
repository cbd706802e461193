"""Replicas in one process: the fenced write, the takeover's restore, fresh TTLs, and
the commit whose answer was lost."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from grafos_scheduler import (
    LeadershipLost,
    ManualClock,
    NonPreemptibleReason,
    PostgresStore,
    PreemptionOutcome,
    Replica,
    ReplicaRole,
    Scheduler,
    SchedulerStore,
    StoreConflict,
    StoreError,
)
from support.internals import stale_grant
from support.postgres import PostgresCluster
from support.scheduling import as_lease

from .conftest import through
from .tcp_proxy import TcpProxy


def _replica(url: str, name: str, ttl: float = 1.0) -> Replica:
    def make(store: SchedulerStore) -> Scheduler:
        return Scheduler(4, store, max_defer=30.0, leader_change=True)

    return Replica(
        PostgresStore(url), make, advertise_url=f"http://{name}", leader_ttl=ttl, owner=name
    )


def _leader_with_views(url: str) -> tuple[Replica, list[SchedulerStore]]:
    """A started replica with a long leader TTL, and the store view of each of its
    epochs (the view a scheduler writes through), in order."""
    views: list[SchedulerStore] = []

    def make(store: SchedulerStore) -> Scheduler:
        views.append(store)
        return Scheduler(4, store, max_defer=30.0, leader_change=True)

    replica = Replica(PostgresStore(url), make, advertise_url="http://a", leader_ttl=30.0)
    return replica.start(), views


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[list[Replica]]:
    made = [_replica(postgres_url, "a"), _replica(postgres_url, "b")]
    yield made
    for r in made:
        r.close()


def test_a_deposed_leader_writes_nothing_and_steps_down(
    replicas: list[Replica], postgres_url: str
) -> None:
    a = replicas[0].start()
    status = a.wait_for_role(ReplicaRole.LEADER, 20)
    assert status.scheduler is not None
    as_lease(status.scheduler.acquire("before", "w", 0, 1, 30.0))
    # Someone else holds the row now (as after a lapse and a takeover).
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE grafos_leadership SET epoch = epoch + 1, owner = 'thief', "
            "expires_at = clock_timestamp() + interval '1 minute'"
        )
    with pytest.raises(LeadershipLost, match=f"epoch {status.epoch}"):
        status.scheduler.acquire("after", "w", 0, 1, 30.0)
    assert a.refused_writes == 1
    assert a.status().role is ReplicaRole.STANDBY  # at once, before its thread notices
    with PostgresStore(postgres_url) as store:
        assert [r.job for r in store.list_leases()] == ["before"]
        assert store.audit_head()[0] == max(seq for seq, _ in store.audit_epochs())


def test_the_takeover_restores_leases_with_a_fresh_ttl_and_deferrals_at_their_deadline(
    replicas: list[Replica], postgres_url: str
) -> None:
    a, b = replicas
    a.start()
    first = a.wait_for_role(ReplicaRole.LEADER, 20)
    assert first.scheduler is not None
    lease = as_lease(first.scheduler.acquire("low", "w", 0, 4, 3.0))
    first.scheduler.manager.mark_non_preemptible(lease.lease_id, NonPreemptibleReason.OPERATOR_HOLD)
    decision = first.scheduler.request_preemption(lease.lease_id, "make room")
    assert decision.outcome is PreemptionOutcome.DEFERRED
    pending = first.scheduler.pending_preemption(lease.lease_id)
    assert pending is not None
    deadline_wall = time.time() + (pending.deadline - time.monotonic())
    time.sleep(1.0)
    b.start()
    a.close()  # resigns: b need not wait for the row to lapse
    second = b.wait_for_role(ReplicaRole.LEADER, 20)
    assert second.epoch == first.epoch + 1
    assert second.scheduler is not None
    restored = second.scheduler.get(lease.lease_id)
    assert restored.fencing_token == lease.fencing_token
    # A whole TTL from the takeover, though a second of it had passed before.
    assert restored.expires_at - time.monotonic() > 2.5
    again = second.scheduler.pending_preemption(lease.lease_id)
    assert again is not None
    assert abs(time.time() + (again.deadline - time.monotonic()) - deadline_wall) < 0.5
    with PostgresStore(postgres_url) as store:
        kinds = [r.kind for r in store.audit_records(0, 1000)]
    assert kinds.count("leader_elected") == 2
    assert kinds[-1] == "restart"


def test_fresh_ttl_gives_every_restored_lease_a_whole_ttl(
    make_store: Callable[[], SchedulerStore], store_kind: str
) -> None:
    clock = ManualClock()
    with Scheduler(4, make_store(), clock=clock, autostart=False) as first:
        lease = as_lease(first.acquire("j", "w", 0, 1, 10.0))
        clock.advance(8.0)
    with Scheduler(4, make_store(), clock=clock, autostart=False, leader_change=True) as second:
        assert second.get(lease.lease_id).expires_at == pytest.approx(clock.monotonic() + 10.0)
    assert store_kind in ("sqlite", "postgres")  # on both stores


def test_a_commit_whose_answer_is_lost_makes_the_leader_resign_and_restore(
    postgres_url: str, postgres_cluster: PostgresCluster, proxy: TcpProxy
) -> None:
    # A long TTL: only a resignation lets the next election happen within seconds.
    a = _replica(through(proxy, postgres_url, postgres_cluster), "a", ttl=30.0).start()
    try:
        first = a.wait_for_role(ReplicaRole.LEADER, 20)
        assert first.scheduler is not None
        as_lease(first.scheduler.acquire("before", "w", 0, 1, 30.0))
        proxy.cut_after(b"COMMIT")
        with pytest.raises(StoreError, match="may or may not be written"):
            first.scheduler.acquire("answer-lost", "w", 0, 1, 30.0)
        assert proxy.cut.is_set()
        assert a.status().role is ReplicaRole.STANDBY  # at once: memory may be behind
        # The change was written; the scheduler that did not see it must write no more.
        with PostgresStore(postgres_url) as store:
            assert sorted(r.job for r in store.list_leases()) == ["answer-lost", "before"]
        second = a.wait_for_role(ReplicaRole.LEADER, 10)
        assert second.epoch > first.epoch
        assert second.scheduler is not None
        assert sorted(lease.job for lease in second.scheduler.leases()) == [
            "answer-lost",
            "before",
        ]
        as_lease(second.scheduler.acquire("after", "w", 0, 1, 30.0))
        assert second.scheduler.audit.verify().ok
    finally:
        a.close()
    assert a.step_downs == 1


def test_a_store_ahead_of_memory_makes_the_leader_resign_and_restore(
    postgres_url: str,
) -> None:
    a, views = _leader_with_views(postgres_url)
    try:
        first = a.wait_for_role(ReplicaRole.LEADER, 20)
        assert first.scheduler is not None
        # A second writer in the same epoch: once it commits, the leader's memory is
        # behind the database.
        other = Scheduler(4, views[0], max_defer=30.0, leader_change=True, autostart=False)
        as_lease(other.acquire("two", "w", 0, 1, 30.0))
        with pytest.raises(StoreConflict, match="audit head"):
            first.scheduler.acquire("one", "w", 0, 1, 30.0)
        assert a.status().role is ReplicaRole.STANDBY
        second = a.wait_for_role(ReplicaRole.LEADER, 10)
        assert second.epoch > first.epoch
        assert second.scheduler is not None
        assert [lease.job for lease in second.scheduler.leases()] == ["two"]
        as_lease(second.scheduler.acquire("one", "w", 0, 1, 30.0))
        other.close()  # the view of an epoch that has ended
    finally:
        a.close()


def test_a_fencing_token_not_above_the_stored_one_is_refused_by_the_shared_store(
    postgres_url: str,
) -> None:
    a, views = _leader_with_views(postgres_url)
    try:
        status = a.wait_for_role(ReplicaRole.LEADER, 20)
        scheduler = status.scheduler
        assert scheduler is not None
        first = as_lease(scheduler.acquire("a", "w", 0, 1, 30.0))
        scheduler.release(first.lease_id)
        change = stale_grant(scheduler, "a", lease_id=12345)
        with pytest.raises(StoreConflict, match="fencing token 1 for job 'a' is not above"):
            views[0].commit(change)
        # Read beside the replica: its view closes when it steps down (below).
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            leases = conn.execute(
                "SELECT count(*) FROM grafos_leases WHERE lease_id = %s", (f"{12345:032x}",)
            ).fetchone()
            counter = conn.execute(
                "SELECT last_token FROM grafos_fencing_tokens WHERE job = 'a'"
            ).fetchone()
        assert leases is not None
        assert leases[0] == 0
        assert counter is not None
        assert counter[0] == 1
        # A refused change means the store is not what memory thought: the leader
        # steps down and takes over again from the database.
        give_up = time.monotonic() + 10
        second = a.status()
        while second.role is not ReplicaRole.LEADER or second.epoch == status.epoch:
            assert time.monotonic() < give_up, f"no new epoch after the refusal: {second}"
            time.sleep(0.02)
            second = a.status()
        assert second.scheduler is not None
        assert as_lease(second.scheduler.acquire("a", "w", 0, 1, 30.0)).fencing_token == 2
    finally:
        a.close()
