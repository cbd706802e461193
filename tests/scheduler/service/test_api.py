"""The v1 API through the real ASGI app (Litestar's TestClient), on a real scheduler."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from grafos_scheduler import NonPreemptibleReason, Scheduler, SqliteStore, TokenConfig, create_app
from support.servers import Client, Headers, acquire, assert_error


def test_acquire_grants_201_with_hex_id_and_times(client: Client, headers: Headers) -> None:
    r = acquire(client, headers["alice"], priority=3)
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "granted"
    assert body["ticket"] is None
    lease = body["lease"]
    assert re.fullmatch(r"[0-9a-f]{32}", lease["lease_id"])
    assert lease["holder"] == "alice"
    assert lease["job"] == "job-a"
    assert lease["priority"] == 3
    assert lease["fencing_token"] == 1
    assert lease["state"] == "active"
    assert 0 < lease["expires_in"] <= 30.0
    assert lease["expires_at"].endswith("+00:00")
    assert lease["reasons"] == []
    assert lease["pending_preemption"] is None


def test_acquire_pending_202_then_poll_until_granted(client: Client, headers: Headers) -> None:
    first = acquire(client, headers["alice"], slots=2).json()["lease"]
    r = acquire(client, headers["bob"], job="job-b")
    assert r.status_code == 202
    ticket = r.json()["ticket"]
    assert r.json()["status"] == "pending"
    assert re.fullmatch(r"[0-9a-f]{32}", ticket["ticket_id"])
    polled = client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=headers["bob"])
    assert polled.status_code == 200
    assert polled.json()["status"] == "pending"
    # Another worker may not poll bob's ticket.
    assert_error(client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=headers["alice"]), 403)
    client.post(f"/v1/leases/{first['lease_id']}/release", headers=headers["alice"])
    polled = client.get(f"/v1/tickets/{ticket['ticket_id']}", headers=headers["bob"]).json()
    assert polled["status"] == "granted"
    assert polled["lease"]["holder"] == "bob"


def test_renew_extends_and_reports_reasons(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    r = client.post(
        f"/v1/leases/{lease['lease_id']}/renew",
        json={"fencing_token": 1, "reasons": ["checkpoint_in_progress"]},
        headers=headers["alice"],
    )
    assert r.status_code == 200
    body = r.json()
    assert body["preemption_requested"] is False
    assert body["preemption_deadline"] is None
    assert 0 < body["expires_in"] <= 30.0
    assert scheduler.reasons(int(lease["lease_id"], 16)) == {
        NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
    }
    got = client.get(f"/v1/leases/{lease['lease_id']}", headers=headers["alice"]).json()
    assert got["reasons"] == ["checkpoint_in_progress"]


def test_deferred_preemption_is_visible_in_renew_and_get(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    client.post(
        f"{url}/renew",
        json={"fencing_token": 1, "reasons": ["checkpoint_in_progress"]},
        headers=headers["alice"],
    )
    decision = client.post(
        f"{url}/preempt", json={"cause": "maintenance"}, headers=headers["admin"]
    )
    assert decision.status_code == 200
    d = decision.json()
    assert d["outcome"] == "deferred"
    assert d["reasons"] == ["checkpoint_in_progress"]
    assert 0 < d["deadline_in"] <= 30.0
    renewed = client.post(
        f"{url}/renew",
        json={"fencing_token": 1, "reasons": ["checkpoint_in_progress"]},
        headers=headers["alice"],
    ).json()
    assert renewed["preemption_requested"] is True
    assert renewed["preemption_cause"] == "maintenance"
    assert renewed["preemption_deadline_in"] > 0
    pending = client.get(url, headers=headers["alice"]).json()["pending_preemption"]
    assert pending["cause"] == "maintenance"
    assert pending["reasons"] == ["checkpoint_in_progress"]


def test_immediate_preemption_then_renew_is_410(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    d = client.post(f"{url}/preempt", json={"cause": "now"}, headers=headers["admin"]).json()
    assert d["outcome"] == "preempted"
    assert d["deadline"] is None
    body = assert_error(
        client.post(f"{url}/renew", json={"fencing_token": 1}, headers=headers["alice"]), 410
    )
    assert "preempted" in body["message"]
    assert client.get(url, headers=headers["alice"]).json()["state"] == "preempted"


def test_renew_stale_token_is_409(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    r = client.post(
        f"/v1/leases/{lease['lease_id']}/renew", json={"fencing_token": 7}, headers=headers["alice"]
    )
    body = assert_error(r, 409)
    assert body["error"] == "stale_fencing_token"
    assert "7" in body["message"]


def test_renew_after_release_is_410_and_release_twice_is_410(
    client: Client, headers: Headers
) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    released = client.post(f"{url}/release", headers=headers["alice"])
    assert released.status_code == 200
    assert released.json()["state"] == "released"
    assert_error(
        client.post(f"{url}/renew", json={"fencing_token": 1}, headers=headers["alice"]), 410
    )
    assert_error(client.post(f"{url}/release", headers=headers["alice"]), 410)


def test_renew_expired_lease_is_410(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"], ttl=0.05).json()["lease"]
    import time

    time.sleep(0.15)  # the real clock must pass the expiry; no assert depends on the margin
    r = client.post(
        f"/v1/leases/{lease['lease_id']}/renew", json={"fencing_token": 1}, headers=headers["alice"]
    )
    body = assert_error(r, 410)
    assert body["error"] in {"lease_expired", "lease_not_active"}


def test_fence_is_admin_only_and_ends_the_lease(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    assert_error(client.post(f"{url}/fence", headers=headers["alice"]), 403)
    fenced = client.post(f"{url}/fence", headers=headers["admin"])
    assert fenced.status_code == 200
    assert fenced.json()["state"] == "fenced"
    assert_error(client.post(f"{url}/fence", headers=headers["admin"]), 410)


def test_list_leases_workers_see_their_own(client: Client, headers: Headers) -> None:
    acquire(client, headers["alice"], job="job-a")
    acquire(client, headers["bob"], job="job-b")
    mine = client.get("/v1/leases", headers=headers["alice"]).json()["leases"]
    assert [x["holder"] for x in mine] == ["alice"]
    everything = client.get("/v1/leases", headers=headers["admin"]).json()["leases"]
    assert sorted(x["holder"] for x in everything) == ["alice", "bob"]
    active = client.get("/v1/leases?state=active", headers=headers["admin"]).json()["leases"]
    assert len(active) == 2
    assert client.get("/v1/leases?state=released", headers=headers["admin"]).json()["leases"] == []


def test_job_already_leased_is_409(client: Client, headers: Headers) -> None:
    acquire(client, headers["alice"])
    body = assert_error(acquire(client, headers["bob"]), 409)
    assert body["error"] == "job_already_leased"


def test_unknown_lease_and_ticket_are_404(client: Client, headers: Headers) -> None:
    missing = "0" * 32
    assert_error(client.get(f"/v1/leases/{missing}", headers=headers["admin"]), 404)
    assert_error(client.get(f"/v1/tickets/{missing}", headers=headers["admin"]), 404)
    assert_error(client.get("/v1/no-such-route", headers=headers["admin"]), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"job": "j", "slots": 0, "ttl": 1}, "slots"),
        ({"job": "j", "slots": -3, "ttl": 1}, "slots"),
        ({"job": "j", "slots": 1, "ttl": 0}, "ttl"),
        ({"job": "j", "slots": 1, "ttl": -1.5}, "ttl"),
        ({"job": "j", "slots": 1, "ttl": 1, "colour": "red"}, "colour"),
        ({"job": "j", "slots": "1", "ttl": 1}, "slots"),
        ({"job": "j", "slots": True, "ttl": 1}, "slots"),
        ({"job": "j", "slots": 1.5, "ttl": 1}, "slots"),
        ({"job": "j", "slots": 1, "ttl": "soon"}, "ttl"),
        ({"job": 5, "slots": 1, "ttl": 1}, "job"),
        ({"job": "", "slots": 1, "ttl": 1}, "job"),
        ({"job": "has space", "slots": 1, "ttl": 1}, "job"),
        ({"slots": 1, "ttl": 1}, "job"),
        ({"job": "j", "slots": 1, "ttl": 1, "priority": 2**70}, "priority"),
        ({"job": "j", "slots": 3, "ttl": 1}, "slots"),  # more than the capacity of 2
    ],
)
def test_acquire_bad_input_is_400_naming_the_field(
    client: Client, headers: Headers, body: dict[str, Any], field: str
) -> None:
    assert_error(client.post("/v1/leases", json=body, headers=headers["alice"]), 400, field)


@pytest.mark.parametrize("raw", [b"", b"[]", b"not json", b'{"job": NaN}', b'"text"', b"{" * 5000])
def test_acquire_malformed_body_is_400(client: Client, headers: Headers, raw: bytes) -> None:
    r = client.post(
        "/v1/leases",
        content=raw,
        headers={**headers["alice"], "Content-Type": "application/json"},
    )
    assert_error(r, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "fencing_token"),
        ({"fencing_token": 0}, "fencing_token"),
        ({"fencing_token": 2**64}, "fencing_token"),
        ({"fencing_token": 1, "reasons": ["napping"]}, "reasons[0]"),
        ({"fencing_token": 1, "reasons": "checkpoint_in_progress"}, "reasons"),
        ({"fencing_token": 1, "extra": True}, "extra"),
    ],
)
def test_renew_bad_input_is_400(
    client: Client, headers: Headers, body: dict[str, Any], field: str
) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    r = client.post(f"/v1/leases/{lease['lease_id']}/renew", json=body, headers=headers["alice"])
    assert_error(r, 400, field)


@pytest.mark.parametrize(
    "lease_id", ["xyz", "A" * 32, "0" * 31, "0" * 33, "g" * 32, "-" + "0" * 31]
)
def test_malformed_lease_id_is_400(client: Client, headers: Headers, lease_id: str) -> None:
    assert_error(client.get(f"/v1/leases/{lease_id}", headers=headers["admin"]), 400, "lease_id")


def test_bad_query_values_are_400(client: Client, headers: Headers) -> None:
    assert_error(client.get("/v1/leases?state=sleeping", headers=headers["admin"]), 400, "state")
    assert_error(client.get("/v1/audit?limit=0", headers=headers["admin"]), 400, "limit")
    assert_error(client.get("/v1/audit?after_seq=-1", headers=headers["admin"]), 400, "after_seq")


def test_bodiless_routes_refuse_a_body(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    r = client.post(
        f"/v1/leases/{lease['lease_id']}/release", json={"force": True}, headers=headers["alice"]
    )
    assert_error(r, 400)
    r = client.post(f"/v1/leases/{lease['lease_id']}/release", json={}, headers=headers["alice"])
    assert r.status_code == 200


def test_preempt_cause_must_be_text(client: Client, headers: Headers) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}/preempt"
    assert_error(client.post(url, json={"cause": "   "}, headers=headers["admin"]), 400, "cause")
    assert_error(client.post(url, json={"cause": 3}, headers=headers["admin"]), 400, "cause")


def test_audit_paging_head_and_verify(client: Client, headers: Headers) -> None:
    for job in ("a1", "a2", "a3"):
        lease = acquire(client, headers["alice"], job=job).json()
        if lease["status"] == "granted":
            client.post(
                f"/v1/leases/{lease['lease']['lease_id']}/release", headers=headers["alice"]
            )
    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(f"/v1/audit?after_seq={after}&limit=2", headers=headers["admin"]).json()
        seen += page["records"]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert [r["seq"] for r in seen] == list(range(1, len(seen) + 1))
    assert {"grant", "release"} <= {r["kind"] for r in seen}
    head = client.get("/v1/audit/head", headers=headers["admin"]).json()
    assert head == {"seq": seen[-1]["seq"], "hash": seen[-1]["hash"]}
    verified = client.get("/v1/audit/verify", headers=headers["admin"]).json()
    assert verified["ok"] is True
    assert verified["first_bad_seq"] is None
    assert verified["records"] == len(seen)
    assert verified["head"] == head


def test_metrics_report_leases_preemptions_markers_and_latency(
    client: Client, headers: Headers
) -> None:
    lease = acquire(client, headers["alice"]).json()["lease"]
    url = f"/v1/leases/{lease['lease_id']}"
    client.post(
        f"{url}/renew",
        json={"fencing_token": 1, "reasons": ["checkpoint_in_progress"]},
        headers=headers["alice"],
    )
    client.post(f"{url}/preempt", json={"cause": "x"}, headers=headers["admin"])
    r = client.get("/metrics", headers=headers["admin"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'grafos_leases{state="active"} 1.0' in text
    assert 'grafos_nonpreemptible_leases{reason="checkpoint_in_progress"} 1.0' in text
    assert 'grafos_preemptions_total{outcome="deferred"} 1.0' in text
    assert "grafos_preemptions_pending 1.0" in text
    assert "grafos_observer_misses_total" in text
    assert 'route="/v1/leases/{lease_id}/renew"' in text
    assert "grafos_http_request_duration_seconds_bucket" in text


def test_healthz_is_open_and_schema_is_served(client: Client, headers: Headers) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/schema/openapi.json", headers=headers["alice"]).json()
    assert "/v1/leases/{lease_id}/renew" in schema["paths"]
    acquire_schema = schema["components"]["schemas"]["AcquireRequest"]
    assert acquire_schema["additionalProperties"] is False
    assert acquire_schema["properties"]["slots"]["minimum"] == 1


def test_unexpected_errors_are_500_without_traceback(
    client: Client, headers: Headers, scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("disk on fire")

    scheduler.lease_page = explode  # type: ignore[method-assign,assignment]
    r = client.get("/v1/leases", headers=headers["admin"])
    body = assert_error(r, 500)
    assert body["error"] == "internal_error"
    assert "disk on fire" not in r.text
    assert any("disk on fire" in (rec.exc_text or str(rec.exc_info)) for rec in caplog.records)


def test_a_store_failure_is_a_503_that_leaks_nothing(
    tmp_path: Path, tokens: TokenConfig, headers: dict[str, dict[str, str]]
) -> None:
    # A real failure: another connection holds the database's write lock past the
    # scheduler's busy timeout, so the acquire's transaction cannot begin.
    db = tmp_path / "locked.db"
    with Scheduler(2, SqliteStore(db, busy_timeout=0.2), max_defer=30.0) as scheduler:
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            with TestClient(create_app(scheduler, tokens), raise_server_exceptions=False) as c:
                answer = c.post(
                    "/v1/leases",
                    json={"job": "j", "priority": 0, "slots": 1, "ttl": 10},
                    headers=headers["alice"],
                )
        finally:
            blocker.rollback()
            blocker.close()
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["error"] == "store_unavailable"
        assert str(tmp_path) not in answer.text, "the server's paths stay in its log"
        assert "Traceback" not in answer.text
        # Nothing half-done: once the lock is gone the same request succeeds.
        with TestClient(create_app(scheduler, tokens)) as c:
            again = c.post(
                "/v1/leases",
                json={"job": "j", "priority": 0, "slots": 1, "ttl": 10},
                headers=headers["alice"],
            )
        assert again.status_code == 201, again.text
