"""Authorisation is decided in one place: who may act on which lease, ticket or route."""

from __future__ import annotations

import logging

import pytest

from grafos_scheduler import NonPreemptibleReason, Principal
from support.internals import FieldError, ReasonName
from support.internals import policy as _policy
from support.servers import Client, Headers, granted

ADMIN = Principal("admin", is_admin=True)
ALICE = Principal("alice", is_admin=False)


def test_the_admin_acts_on_any_holder_a_worker_on_its_own() -> None:
    assert _policy.holder_scope(ADMIN) is None
    assert _policy.holder_scope(ALICE) == "alice"


def test_only_the_admin_passes_require_admin() -> None:
    _policy.require_admin(ADMIN)
    with pytest.raises(_policy.Forbidden, match="'alice' is not the admin"):
        _policy.require_admin(ALICE)


def test_a_renewal_reports_only_checkpoint_in_progress() -> None:
    # The admin's too: a hold reported in a renewal was cleared by the worker's next one.
    both: list[ReasonName] = ["checkpoint_in_progress", "operator_hold"]
    for principal in (ALICE, ADMIN):
        assert _policy.reported_reasons(principal, ["checkpoint_in_progress"]) == [
            NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
        ]
        with pytest.raises(FieldError, match=r"not 'operator_hold'.*/holds") as refused:
            _policy.reported_reasons(principal, both)
        assert refused.value.field == "reasons[1]"


def test_every_lease_route_refuses_another_workers_lease(
    client: Client, headers: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    lease = granted(client, headers["alice"], "alice-job")
    url = f"/v1/leases/{lease['lease_id']}"
    renew = {"fencing_token": lease["fencing_token"]}
    caplog.set_level(logging.WARNING, logger="grafos_scheduler.http")
    refused = [
        client.get(url, headers=headers["bob"]),
        client.post(f"{url}/renew", json=renew, headers=headers["bob"]),
        client.post(f"{url}/release", headers=headers["bob"]),
        client.post(f"{url}/preempt", json={}, headers=headers["bob"]),
        client.post(f"{url}/fence", headers=headers["bob"]),
        client.post(f"{url}/preempt", json={}, headers=headers["alice"]),  # admin only
        client.post(f"{url}/fence", headers=headers["alice"]),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert {r.json()["error"] for r in refused} == {"forbidden"}
    # The refusal names the id, never the holder.
    assert all("alice" not in r.json()["message"] for r in refused[:3])
    forbidden = [r for r in caplog.records if getattr(r, "event", None) == "forbidden"]
    assert [getattr(r, "principal", None) for r in forbidden] == ["bob"] * 3
    # Nothing changed: the lease is still alice's, active, with its token.
    mine = client.get(url, headers=headers["alice"]).json()
    assert (mine["state"], mine["fencing_token"]) == ("active", lease["fencing_token"])
    assert client.get(url, headers=headers["admin"]).status_code == 200


def test_ticket_routes_refuse_another_workers_ticket(client: Client, headers: Headers) -> None:
    granted(client, headers["admin"], "fill-1")
    granted(client, headers["admin"], "fill-2")
    r = client.post(
        "/v1/leases", json={"job": "waits", "slots": 1, "ttl": 30}, headers=headers["alice"]
    )
    assert r.status_code == 202, r.text
    url = f"/v1/tickets/{r.json()['ticket']['ticket_id']}"
    assert client.get(url, headers=headers["bob"]).status_code == 403
    assert client.delete(url, headers=headers["bob"]).status_code == 403
    assert client.get(url, headers=headers["alice"]).json()["status"] == "pending"
    assert client.delete(url, headers=headers["admin"]).status_code == 200
