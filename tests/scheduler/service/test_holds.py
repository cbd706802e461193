"""Holds over HTTP: POST/DELETE /v1/leases/{id}/holds, a real server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from grafos_scheduler import (
    BackgroundServer,
    NotFound,
    PermissionDenied,
    Scheduler,
    SchedulerClient,
    SqliteStore,
    TokenConfig,
    create_app,
)
from support.servers import ADMIN_TOKEN, WORKER_TOKENS, assert_error, bearer

ADMIN = bearer(ADMIN_TOKEN)
ALICE = bearer(WORKER_TOKENS["alice"])


def _grant(http: httpx.Client, job: str = "job-a", ttl: float = 60.0) -> dict[str, Any]:
    r = http.post("/v1/leases", json={"job": job, "slots": 1, "ttl": ttl}, headers=ALICE)
    assert r.status_code == 201, r.text
    lease: dict[str, Any] = r.json()["lease"]
    return lease


@pytest.fixture
def http(server: BackgroundServer) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_a_hold_is_shown_and_outlives_the_workers_renewals(http: httpx.Client) -> None:
    # The bug: a hold was an admin renewal's reported reason, and the worker's next
    # plain renewal cleared it; the preemption it deferred then went at once.
    lease = _grant(http)
    url = f"/v1/leases/{lease['lease_id']}"
    r = http.post(f"{url}/holds", json={"reason": "node drain", "expires_in": 300}, headers=ADMIN)
    assert r.status_code == 200, r.text
    hold = r.json()["hold"]
    assert hold["reason"] == "node drain"
    assert 299 < hold["expires_in"] <= 300
    assert hold["expires_at"].endswith("+00:00")
    decision = http.post(f"{url}/preempt", json={"cause": "room"}, headers=ADMIN).json()
    assert decision["outcome"] == "deferred"
    assert decision["reasons"] == ["operator_hold"]
    renew = {"fencing_token": lease["fencing_token"], "reasons": []}
    for _ in range(3):
        assert http.post(f"{url}/renew", json=renew, headers=ALICE).status_code == 200
    time.sleep(0.2)  # the executor would have carried a cleared hold's preemption out
    view = http.get(url, headers=ALICE).json()
    assert view["state"] == "active"
    assert view["hold"]["reason"] == "node drain"
    assert view["reasons"] == ["operator_hold"]
    assert view["pending_preemption"]["reasons"] == ["operator_hold"]


def test_an_admin_renewal_cannot_carry_a_hold(http: httpx.Client) -> None:
    lease = _grant(http)
    body = {"fencing_token": lease["fencing_token"], "reasons": ["operator_hold"]}
    r = http.post(f"/v1/leases/{lease['lease_id']}/renew", json=body, headers=ADMIN)
    assert "/holds" in assert_error(r, 400, "reasons[0]")["message"]


def test_unhold_carries_out_the_deferred_preemption(http: httpx.Client) -> None:
    lease = _grant(http)
    url = f"/v1/leases/{lease['lease_id']}"
    hold = http.post(f"{url}/holds", json={"reason": "wait"}, headers=ADMIN).json()["hold"]
    assert (hold["reason"], hold["expires_at"], hold["expires_in"]) == ("wait", None, None)
    assert hold["set_at"] == http.get(url, headers=ADMIN).json()["hold"]["set_at"]
    http.post(f"{url}/preempt", json={"cause": "room"}, headers=ADMIN)
    cleared = http.delete(f"{url}/holds", headers=ADMIN)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["hold"] is None
    give_up = time.monotonic() + 10
    while (view := http.get(url, headers=ADMIN).json())["state"] == "active":
        assert time.monotonic() < give_up
        time.sleep(0.02)
    assert view["state"] == "preempted"
    assert view["end_cause"] == "preempted: room"
    kinds = [r["kind"] for r in http.get("/v1/audit?limit=1000", headers=ADMIN).json()["records"]]
    assert kinds[-5:] == [
        "hold_set",
        "preemption_requested",
        "preemption_deferred",
        "hold_cleared",
        "preemption_executed",
    ]


def test_hold_errors(http: httpx.Client) -> None:
    lease = _grant(http)
    url = f"/v1/leases/{lease['lease_id']}/holds"
    assert_error(http.post(url, json={"reason": "x"}, headers=ALICE), 403)
    assert_error(http.delete(url, headers=ALICE), 403)
    assert_error(http.post(url, json={"reason": 5}, headers=ALICE), 403)  # before the body
    assert_error(http.post(url, headers=ADMIN), 400, "reason")
    assert_error(http.post(url, json={"reason": "  "}, headers=ADMIN), 400, "reason")
    assert_error(
        http.post(url, json={"reason": "x", "expires_in": 0}, headers=ADMIN), 400, "expires_in"
    )
    assert_error(
        http.post(url, json={"reason": "x", "expires_in": 604801}, headers=ADMIN), 400, "expires_in"
    )
    assert_error(http.post(url, json={"reason": "x", "for": 1}, headers=ADMIN), 400, "for")
    assert assert_error(http.delete(url, headers=ADMIN), 404)["error"] == "no_hold"
    unknown = "/v1/leases/" + "ab" * 16 + "/holds"
    assert assert_error(http.post(unknown, json={"reason": "x"}, headers=ADMIN), 404)["error"] == (
        "unknown_lease"
    )
    http.post(f"/v1/leases/{lease['lease_id']}/release", headers=ALICE)
    assert assert_error(http.post(url, json={"reason": "x"}, headers=ADMIN), 410)["error"] == (
        "lease_not_active"
    )
    assert_error(http.delete(url, headers=ADMIN), 410)


def test_client_hold_and_unhold(admin: SchedulerClient, alice: SchedulerClient) -> None:
    granted = alice.acquire("job-c", slots=1, ttl=60)
    assert granted.lease is not None
    lid = granted.lease.lease_id
    held = admin.hold(lid, "maintenance", 30.0)
    assert held.hold is not None
    assert held.hold.reason == "maintenance"
    seen = alice.get(lid).hold  # the holder sees the hold too
    assert seen is not None
    assert seen.reason == "maintenance"
    with pytest.raises(PermissionDenied):
        alice.hold(lid, "mine")
    assert admin.unhold(lid).hold is None
    with pytest.raises(NotFound) as info:
        admin.unhold(lid)
    assert info.value.code == "no_hold"


def test_a_hold_survives_a_restart_of_the_service(tmp_path: Path) -> None:
    tokens = TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)
    db = tmp_path / "scheduler.db"
    with Scheduler(2, SqliteStore(db)) as first, BackgroundServer(create_app(first, tokens)) as s:
        with SchedulerClient(s.url, WORKER_TOKENS["alice"]) as alice:
            result = alice.acquire("job-r", slots=1, ttl=600)
        assert result.lease is not None
        lid = result.lease.lease_id
        with SchedulerClient(s.url, ADMIN_TOKEN) as admin:
            admin.hold(lid, "across the restart", 3600)
    with (
        Scheduler(2, SqliteStore(db)) as second,
        BackgroundServer(create_app(second, tokens)) as s,
        SchedulerClient(s.url, ADMIN_TOKEN) as admin,
    ):
        view = admin.get(lid)
        assert view.hold is not None
        assert view.hold.reason == "across the restart"
        assert view.hold.expires_in is not None
        assert 3500 < view.hold.expires_in <= 3600
        assert view.reasons == ["operator_hold"]
        assert admin.preempt(lid, "room").outcome == "deferred"
