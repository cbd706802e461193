"""Several replicas on one PostgreSQL database: one leader, standbys that redirect."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from grafos_scheduler import PostgresStore, SchedulerClient, SchedulerError, WorkerAgent

from .conftest import ADMIN_TOKEN, WORKERS, ReplicaFactory, leader_of, wait_health

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_one_leader_and_standbys_redirect_with_path_and_query(
    start_replica: ReplicaFactory,
) -> None:
    replicas = [start_replica(f"r{i}") for i in range(3)]
    for r in replicas:
        r.wait_up()
    leader = leader_of(replicas)
    health = leader.health()
    assert health is not None
    assert health == {
        "status": "ok",
        "role": "leader",
        "epoch": health["epoch"],
        "leader_url": leader.url,
    }
    assert health["epoch"] >= 1
    for standby in (r for r in replicas if r is not leader):
        # Competing once warmed up: then it knows who leads.
        got = wait_health(standby, lambda h: h["leader_url"] is not None)
        assert got == {
            "status": "ok",
            "role": "standby",
            "epoch": health["epoch"],
            "leader_url": leader.url,
        }
        response = httpx.get(
            standby.url + "/v1/leases?state=active&limit=7", headers=AUTH, follow_redirects=False
        )
        assert response.status_code == 307
        assert response.headers["location"] == leader.url + "/v1/leases?state=active&limit=7"
        assert response.json()["error"] == "not_leader"
        # Unauthenticated calls are sent on too: the leader is the one that refuses.
        response = httpx.post(standby.url + "/v1/leases", json={}, follow_redirects=False)
        assert response.status_code == 307
        metrics = httpx.get(standby.url + "/metrics", headers=AUTH).text
        assert 'grafos_replica_role{role="standby"} 1' in metrics
        assert f"grafos_replica_epoch {health['epoch']}" in metrics
        assert httpx.get(standby.url + "/metrics").status_code == 401
    metrics = httpx.get(leader.url + "/metrics", headers=AUTH).text
    assert 'grafos_replica_role{role="leader"} 1' in metrics
    assert "grafos_leases{" in metrics  # the scheduler's own metrics, beside the role


def test_the_failover_client_reaches_the_leader_through_any_replica(
    start_replica: ReplicaFactory,
) -> None:
    replicas = [start_replica(f"r{i}") for i in range(3)]
    for r in replicas:
        r.wait_up()
    leader = leader_of(replicas)
    standbys = [r.url for r in replicas if r is not leader]
    # Standbys first, and a URL where nothing listens: the client still gets there.
    nothing = "http://127.0.0.1:9"
    with SchedulerClient(",".join([nothing, *standbys, leader.url]), WORKERS["w0"]) as client:
        granted = client.acquire("job-a", slots=1, ttl=30)
        assert granted.status == "granted"
        assert granted.lease is not None
        client.release(granted.lease.lease_id)
    # The agent takes the same list, as a comma-separated string; it renews through it.
    agent = WorkerAgent(",".join([*standbys, leader.url]), "job-b", token=WORKERS["w1"], ttl=3.0)
    lease = agent.acquire(timeout=10)
    time.sleep(1.5)  # past a renewal
    assert agent.renewals >= 1
    assert agent.release() is not None
    assert lease.job == "job-b"
    agent.client.close()


def test_a_standby_with_no_known_leader_answers_503_not_leader(
    start_replica: ReplicaFactory, postgres_url: str
) -> None:
    with PostgresStore(postgres_url) as store:
        # Someone holds the leadership without an advertised URL, for long enough.
        assert store.take_leadership("elsewhere", None, 60.0, wall=time.time()) is not None
        replica = start_replica("r0")
        replica.wait_up()
        wait_health(replica, lambda h: h["epoch"] == 1)
        response = httpx.get(replica.url + "/v1/leases", headers=AUTH, follow_redirects=False)
        assert response.status_code == 503
        assert response.json()["error"] == "not_leader"
        assert replica.health() == {
            "status": "ok", "role": "standby", "epoch": 1, "leader_url": None,
        }  # fmt: skip


def test_an_unknown_schema_version_is_refused_by_name(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE grafos_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchedulerError, match=r"schema version '99', expected 1"):
        PostgresStore(postgres_url)


def test_a_bad_url_is_refused_by_name() -> None:
    with pytest.raises(SchedulerError, match="mysql://x"):
        PostgresStore("mysql://x")
