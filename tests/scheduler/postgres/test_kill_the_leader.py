"""SIGKILL the leader again and again under load: nothing acknowledged is lost."""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import pytest

from .conftest import WORKERS, ReplicaFactory, ReplicaProcess, leader_of
from .workload import Workload, check_against_database, elections, summary

LEADER_TTL = 1.5
KILLS = 20

pytestmark = pytest.mark.slow


def _standby_up(replicas: list[ReplicaProcess], leader: ReplicaProcess) -> bool:
    """A standby competing already: it knows the leader (a booting one does not yet)."""
    for r in replicas:
        health = (r.health(0.5) or {}) if r is not leader and r.alive() else {}
        if health.get("role") == "standby" and health.get("leader_url") == leader.url:
            return True
    return False


def test_kill_the_leader_twenty_times(
    start_replica: ReplicaFactory, postgres_url: str, tmp_path: Path
) -> None:
    replicas = [start_replica(f"r{i}", leader_ttl=LEADER_TTL) for i in range(3)]
    for r in replicas:
        r.wait_up()
    leader_of(replicas)
    workload = Workload([r.url for r in replicas], WORKERS, clients=4).start()
    failovers: list[float] = []
    kill_walls: list[float] = []
    rng = random.Random(9)
    try:
        workload.wait_for_grant_after(time.monotonic(), timeout=20)
        for kill in range(KILLS):
            leader = leader_of(replicas)
            give_up = time.monotonic() + 30
            while not _standby_up(replicas, leader):
                assert time.monotonic() < give_up, "no standby came back up"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.1, LEADER_TTL))  # a random moment of its term
            killed_at = time.monotonic()
            kill_walls.append(time.time())
            leader.kill()
            grant = workload.wait_for_grant_after(killed_at, timeout=4 * LEADER_TTL + 10)
            failovers.append(grant.at - killed_at)
            # The killed one comes back as a standby, on its port.
            leader.start()
            del kill
    finally:
        workload.stop()
    (tmp_path / "failovers.json").write_text(json.dumps(failovers))
    print(f"failover after SIGKILL (leader ttl {LEADER_TTL} s): {summary(failovers)}")
    elected = elections(postgres_url)
    takeovers = [min((e - k for e in elected if e > k), default=-1.0) for k in kill_walls]
    print(f"takeover (kill to leader_elected): {summary(takeovers)}")
    print(
        "per kill (takeover, first grant):",
        [(round(a, 2), round(b, 2)) for a, b in zip(takeovers, failovers, strict=True)],
    )
    counts = check_against_database(workload, postgres_url)
    assert counts["epochs"] >= KILLS + 1
    assert not workload.errors, workload.errors[:5]
    assert statistics.median(failovers) <= LEADER_TTL + 1.0, summary(failovers)
    assert max(failovers) <= 2 * LEADER_TTL, summary(failovers)
