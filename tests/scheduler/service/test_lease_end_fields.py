"""An ended lease does not look alive: no expires_in, an end time and an end cause."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest

from grafos_scheduler import BackgroundServer
from support.servers import ADMIN_TOKEN, WORKER_TOKENS, assert_error, bearer

ADMIN = bearer(ADMIN_TOKEN)
ALICE = bearer(WORKER_TOKENS["alice"])


@pytest.fixture
def http(server: BackgroundServer) -> Any:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def _grant(http: httpx.Client, job: str) -> dict[str, Any]:
    r = http.post("/v1/leases", json={"job": job, "slots": 1, "ttl": 120}, headers=ALICE)
    lease: dict[str, Any] = r.json()["lease"]
    return lease


def test_a_preempted_lease_has_no_future_expiry(http: httpx.Client) -> None:
    # The bug: a preempted lease showed expires_in 119.
    lease = _grant(http, "p")
    assert lease["expires_in"] > 100
    assert (lease["ended_at"], lease["end_cause"]) == (None, None)
    url = f"/v1/leases/{lease['lease_id']}"
    assert (
        http.post(f"{url}/preempt", json={"cause": "room"}, headers=ADMIN).json()["outcome"]
        == "preempted"
    )
    view = http.get(url, headers=ALICE).json()
    assert view["state"] == "preempted"
    assert view["expires_in"] is None
    assert view["end_cause"] == "preempted: room"
    ended = dt.datetime.fromisoformat(view["ended_at"])
    assert abs((dt.datetime.now(dt.UTC) - ended).total_seconds()) < 5


def test_every_ended_view_says_how(http: httpx.Client) -> None:
    released = http.post(f"/v1/leases/{_grant(http, 'r')['lease_id']}/release", headers=ALICE)
    fenced = http.post(f"/v1/leases/{_grant(http, 'f')['lease_id']}/fence", headers=ADMIN)
    for answer, cause in ((released, "released"), (fenced, "fenced by an operator")):
        view = answer.json()
        assert (view["expires_in"], view["end_cause"]) == (None, cause)
        assert view["ended_at"] is not None
    listed = http.get("/v1/leases?state=released", headers=ADMIN).json()["leases"]
    assert [v["end_cause"] for v in listed] == ["released"]


def test_preempting_an_ended_lease_is_410_like_release_and_fence(http: httpx.Client) -> None:
    # The bug: 200 not_tracked.
    lease = _grant(http, "gone")
    url = f"/v1/leases/{lease['lease_id']}"
    http.post(f"{url}/preempt", json={"cause": "first"}, headers=ADMIN)
    again = assert_error(http.post(f"{url}/preempt", json={"cause": "again"}, headers=ADMIN), 410)
    assert again["error"] == "lease_not_active"
    assert "preempted" in again["message"]
    assert assert_error(http.post(f"{url}/fence", headers=ADMIN), 410)["error"] == (
        "lease_not_active"
    )


def test_admin_preempt_with_no_body_is_a_clear_400(http: httpx.Client) -> None:
    # The bug: 400 field "data": "data: 'data'".
    lease = _grant(http, "nobody")
    url = f"/v1/leases/{lease['lease_id']}/preempt"
    for r in (http.post(url, headers=ADMIN), http.post(url, json={}, headers=ADMIN)):
        body = assert_error(r, 400, "cause")
        assert body["message"] == "the field 'cause' is required"
    assert http.get(f"/v1/leases/{lease['lease_id']}", headers=ADMIN).json()["state"] == "active"
