"""The zombie leader, the leader cut off from its database, PostgreSQL restarting."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from grafos_scheduler import PostgresStore, SchedulerClient
from support.postgres import PostgresCluster

from .conftest import ADMIN_TOKEN, WORKERS, ReplicaFactory, leader_of, through, wait_health
from .tcp_proxy import TcpProxy
from .workload import Workload, check_against_database, elections

pytestmark = pytest.mark.slow

WORKER = {"Authorization": f"Bearer {WORKERS['w0']}"}


def _epochs_never_interleave(url: str) -> None:
    with PostgresStore(url) as store:
        epochs = [e for _, e in store.audit_epochs(limit=10**9) if e is not None]
    assert epochs == sorted(epochs), f"records of an older epoch follow a newer one: {epochs}"


def test_the_zombie_leader_writes_nothing_and_steps_down(
    start_replica: ReplicaFactory, postgres_url: str
) -> None:
    ttl = 1.0
    first, second = start_replica("r0", leader_ttl=ttl), start_replica("r1", leader_ttl=ttl)
    for r in (first, second):
        r.wait_up()
    zombie = leader_of([first, second])
    successor = second if zombie is first else first
    wait_health(successor, lambda h: h["leader_url"] == zombie.url)
    old_epoch = (zombie.health() or {})["epoch"]
    with SchedulerClient(zombie.url, WORKERS["w0"]) as client:
        granted = client.acquire("held", slots=1, ttl=30.0).lease
        # A short lease: due to expire in the zombie's memory when it wakes up.
        client.acquire("short", slots=1, ttl=1.0)
    assert granted is not None

    zombie.signal(signal.SIGSTOP)
    try:
        wait_health(successor, lambda h: h["role"] == "leader", timeout=10 * ttl)
        # Callers still knocking on the frozen leader: their requests wait in its
        # listen queue and are the first thing it handles when it wakes.
        answers: list[int] = []

        def knock(job: str) -> None:
            try:
                response = httpx.post(
                    zombie.url + "/v1/leases",
                    json={"job": job, "slots": 1, "ttl": 30.0},
                    headers=WORKER,
                    timeout=30,
                )
                answers.append(response.status_code)
            except httpx.HTTPError:
                answers.append(0)

        def knock_release() -> None:
            response = httpx.post(
                zombie.url + f"/v1/leases/{granted.lease_id}/release", headers=WORKER, timeout=30
            )
            answers.append(response.status_code)

        knockers = [threading.Thread(target=knock, args=(f"zombie-{i}",)) for i in range(6)]
        knockers.append(threading.Thread(target=knock_release))
        for t in knockers:
            t.start()
        time.sleep(0.5)
    finally:
        zombie.signal(signal.SIGCONT)
    for t in knockers:
        t.join(timeout=30)
    accepted = [s for s in answers if 200 <= s < 300]
    assert len(answers) == 7
    assert accepted == [], f"the zombie accepted {len(accepted)} writes: {answers}"
    assert set(answers) <= {307, 503}, answers
    health = wait_health(zombie, lambda h: h["leader_url"] == successor.url)
    assert health["role"] == "standby"
    assert health["epoch"] > old_epoch

    with PostgresStore(postgres_url) as store:
        assert not [r for r in store.list_leases() if r.job.startswith("zombie-")]
        held = store.get_lease(int(granted.lease_id, 16))
        assert held is not None
        assert held.state.value == "active"
    _epochs_never_interleave(postgres_url)
    metrics = httpx.get(zombie.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert 'grafos_replica_role{role="standby"} 1' in metrics.text


def test_a_leader_cut_off_from_the_database_stops_before_its_leadership_ends(
    start_replica: ReplicaFactory,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
    proxy: TcpProxy,
) -> None:
    ttl = 2.0
    proxied = through(proxy, postgres_url, postgres_cluster)
    cut = start_replica("cut", leader_ttl=ttl, store_url=proxied)
    cut.wait_up()
    wait_health(cut, lambda h: h["role"] == "leader")
    other = start_replica("other", leader_ttl=ttl)
    other.wait_up()
    wait_health(other, lambda h: h["leader_url"] == cut.url)
    with SchedulerClient(cut.url, WORKERS["w0"]) as client:
        assert client.acquire("before", slots=1, ttl=30.0).lease is not None

    cut_at = time.time()
    proxy.blackhole()
    stopped = wait_health(cut, lambda h: h["role"] == "standby", timeout=3 * ttl)
    stopped_at = time.time()
    assert stopped["role"] == "standby"
    # It answers no API call now, by its own clock, though it cannot reach anyone.
    response = httpx.get(cut.url + "/v1/leases", headers=WORKER, follow_redirects=False)
    assert response.status_code in (307, 503)
    wait_health(other, lambda h: h["role"] == "leader", timeout=4 * ttl)
    elected = [t for t in elections(postgres_url) if t > cut_at]
    assert elected, "the other replica never took over"
    assert stopped_at < elected[0], (
        f"the cut-off leader acted until {stopped_at - cut_at:.2f} s after the cut, "
        f"its successor was elected at {elected[0] - cut_at:.2f} s"
    )
    with SchedulerClient([cut.url, other.url], WORKERS["w0"]) as client:
        assert client.acquire("after", slots=1, ttl=30.0).lease is not None
    proxy.restore()  # its stuck calls go through now, and are refused
    wait_health(cut, lambda h: h["role"] == "standby" and h["leader_url"] == other.url)
    _epochs_never_interleave(postgres_url)


def test_postgres_restarting_under_load_loses_nothing_acknowledged(
    start_replica: ReplicaFactory, postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    ttl = 1.5
    replicas = [start_replica(f"r{i}", leader_ttl=ttl) for i in range(2)]
    for r in replicas:
        r.wait_up()
    leader_of(replicas)
    workload = Workload([r.url for r in replicas], WORKERS, clients=3).start()
    try:
        workload.wait_for_grant_after(time.monotonic(), timeout=20)
        time.sleep(0.5)
        postgres_cluster.restart("immediate")  # a crash: recovery replays the WAL
        restarted = time.monotonic()
        try:
            workload.wait_for_grant_after(restarted, timeout=30)
        except AssertionError as exc:
            logs = "\n".join(f"{r.name}:\n{r.log.read_text()[-4000:]}" for r in replicas)
            raise AssertionError(f"{exc}\n{logs}") from None
        time.sleep(1.0)
    finally:
        workload.stop()
    counts = check_against_database(workload, postgres_url)
    assert counts["grants"] > 0
    assert not workload.errors, workload.errors[:5]


def test_a_grant_whose_commit_answer_is_lost_is_a_503_and_then_found(
    proxy: TcpProxy,  # first: torn down after the replica, which resigns through it
    start_replica: ReplicaFactory,
    postgres_url: str,
    postgres_cluster: PostgresCluster,
) -> None:
    # A long TTL: the replica leads again within seconds only because it resigns.
    solo = start_replica(
        "solo", leader_ttl=30.0, store_url=through(proxy, postgres_url, postgres_cluster)
    )
    solo.wait_up()
    epoch = wait_health(solo, lambda h: h["role"] == "leader")["epoch"]
    proxy.cut_after(b"COMMIT")
    body = {"job": "answer-lost", "slots": 1, "ttl": 30.0}
    response = httpx.post(solo.url + "/v1/leases", json=body, headers=WORKER, timeout=30)
    assert proxy.cut.is_set()
    # 503; or, had it led again before the answer left, a 307 to itself.
    assert response.status_code in (503, 307), response.text
    wait_health(solo, lambda h: h["role"] == "leader" and h["epoch"] > epoch, timeout=10)
    # The new leader read the database: the grant is there, and a retry is told so.
    retry = httpx.post(solo.url + "/v1/leases", json=body, headers=WORKER, timeout=30)
    assert retry.status_code == 409, retry.text
    listed = httpx.get(solo.url + "/v1/leases?state=active", headers=WORKER, timeout=30)
    assert [lease["job"] for lease in listed.json()["leases"]] == ["answer-lost"]
    other = httpx.post(solo.url + "/v1/leases", json={**body, "job": "next"}, headers=WORKER)
    assert other.status_code in (200, 201), other.text
