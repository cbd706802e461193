"""DELETE /v1/tickets/{id}: who may cancel, the statuses, the audit record."""

from __future__ import annotations

from grafos_scheduler import Scheduler
from support.servers import Client, Headers, acquire, assert_error


def test_delete_ticket_statuses_and_auth(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    blocker = acquire(client, headers["alice"], "big", slots=2).json()["lease"]
    ticket = acquire(client, headers["bob"], "job-b").json()["ticket"]
    url = f"/v1/tickets/{ticket['ticket_id']}"
    assert_error(client.delete(url), 401)
    assert assert_error(client.delete(url, headers=headers["alice"]), 403)["error"] == "forbidden"
    assert [t.job for t in scheduler.tickets()] == ["job-b"]  # untouched by the refusals
    cancelled = client.delete(url, headers=headers["bob"])
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == ticket | {"requested_at": cancelled.json()["requested_at"]}
    assert scheduler.tickets() == []
    assert assert_error(client.get(url, headers=headers["bob"]), 404)["error"] == "unknown_ticket"
    assert (
        assert_error(client.delete(url, headers=headers["bob"]), 404)["error"] == "unknown_ticket"
    )
    assert assert_error(client.delete("/v1/tickets/XYZ", headers=headers["bob"]), 400)["field"] == (
        "ticket_id"
    )
    # The admin may cancel anyone's; the audit log records it.
    other = acquire(client, headers["bob"], "job-c").json()["ticket"]
    assert (
        client.delete(f"/v1/tickets/{other['ticket_id']}", headers=headers["admin"]).status_code
        == 200
    )
    kinds = [r["kind"] for r in client.get("/v1/audit", headers=headers["admin"]).json()["records"]]
    assert kinds.count("ticket_cancelled") == 2
    # A ticket granted already: 409, naming the lease to release instead.
    queued = acquire(client, headers["bob"], "job-d").json()["ticket"]
    client.post(f"/v1/leases/{blocker['lease_id']}/release", headers=headers["alice"])
    lease = client.get(f"/v1/tickets/{queued['ticket_id']}", headers=headers["bob"]).json()
    assert lease["status"] == "granted"
    # Another worker learns nothing of it (403 before 409).
    assert_error(client.delete(f"/v1/tickets/{queued['ticket_id']}", headers=headers["alice"]), 403)
    granted = assert_error(
        client.delete(f"/v1/tickets/{queued['ticket_id']}", headers=headers["bob"]), 409
    )
    assert granted["error"] == "ticket_granted"
    assert lease["lease"]["lease_id"] in granted["message"]
