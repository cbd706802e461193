"""POST /v1/renewals: many renewals in one request, one result per entry, in order."""

from __future__ import annotations

from typing import Any

from support.servers import ERROR_KEYS, Client, Headers, assert_error, granted

RENEW_KEYS = {
    "lease_id",
    "fencing_token",
    "expires_at",
    "expires_in",
    "preemption_requested",
    "preemption_cause",
    "preemption_deadline",
    "preemption_deadline_in",
}


def _entry(lease: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"lease_id": lease["lease_id"], "fencing_token": lease["fencing_token"], **changes}


def test_mixed_good_and_bad_entries_each_get_their_own_result(
    client: Client, headers: Headers
) -> None:
    mine = granted(client, headers["alice"], "mine")
    theirs = granted(client, headers["bob"], "theirs")
    body = {
        "leases": [
            _entry(mine, reasons=["checkpoint_in_progress"]),
            _entry(mine, fencing_token=mine["fencing_token"] + 1),
            _entry(theirs),  # another worker's lease: an error for that entry alone
            {"lease_id": "f" * 32, "fencing_token": 1},
            {"lease_id": "NOT-HEX", "fencing_token": 1},
            _entry(mine, reasons=["operator_hold"]),  # a worker may not set a hold
            _entry(mine, surplus=1),
            _entry(mine),
        ]
    }
    r = client.post("/v1/renewals", json=body, headers=headers["alice"])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 8
    assert set(results[0]) == RENEW_KEYS
    assert results[0]["lease_id"] == mine["lease_id"]
    assert results[0]["preemption_requested"] is False
    errors = results[1:7]
    assert all(set(e) == ERROR_KEYS for e in errors), errors
    assert [(e["status"], e["error"]) for e in errors] == [
        (409, "stale_fencing_token"),
        (403, "forbidden"),
        (404, "unknown_lease"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
    ]
    assert "does not hold lease" in errors[1]["message"]
    assert "bob" not in errors[1]["message"], "the other holder is not named"
    assert errors[3]["field"] == "leases[4].lease_id"
    assert errors[4]["field"] == "leases[5].reasons[0]"
    assert errors[5]["field"] == "leases[6].surplus"
    assert set(results[7]) == RENEW_KEYS
    # The other worker's lease was not renewed, and alice's reported flush counts.
    lease = client.get(f"/v1/leases/{mine['lease_id']}", headers=headers["alice"]).json()
    assert lease["reasons"] == []  # the last entry reported no reasons: it replaces
    other = client.get(f"/v1/leases/{theirs['lease_id']}", headers=headers["bob"]).json()
    assert other["expires_in"] <= theirs["expires_in"]


def test_the_admin_renews_every_worker_s_leases(client: Client, headers: Headers) -> None:
    a = granted(client, headers["alice"], "a")
    b = granted(client, headers["bob"], "b")
    r = client.post(
        "/v1/renewals", json={"leases": [_entry(a), _entry(b)]}, headers=headers["admin"]
    )
    assert r.status_code == 200, r.text
    assert [x["lease_id"] for x in r.json()["results"]] == [a["lease_id"], b["lease_id"]]


def test_a_thousand_entries_are_renewed_and_one_more_is_refused(
    client: Client, headers: Headers
) -> None:
    lease = granted(client, headers["alice"], "many")
    ok = client.post(
        "/v1/renewals", json={"leases": [_entry(lease)] * 1000}, headers=headers["alice"]
    )
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["results"]) == 1000
    too_many = client.post(
        "/v1/renewals", json={"leases": [_entry(lease)] * 1001}, headers=headers["alice"]
    )
    body = assert_error(too_many, 400, "leases")
    assert "1001" in body["message"]


def test_an_empty_or_missing_list_is_refused(client: Client, headers: Headers) -> None:
    empty = client.post("/v1/renewals", json={"leases": []}, headers=headers["alice"])
    assert "0 items" in assert_error(empty, 400, "leases")["message"]
    missing = client.post("/v1/renewals", json={}, headers=headers["alice"])
    assert_error(missing, 400, "leases")
    other = client.post("/v1/renewals", json={"leases": [], "x": 1}, headers=headers["alice"])
    assert_error(other, 400, "x")


def test_it_needs_a_bearer_token(client: Client, headers: Headers) -> None:
    lease = granted(client, headers["alice"], "job")
    r = client.post("/v1/renewals", json={"leases": [_entry(lease)]})
    assert_error(r, 401)


def test_the_schema_publishes_the_batch(client: Client, headers: Headers) -> None:
    schema = client.get("/schema/openapi.json", headers=headers["alice"]).json()
    operation = schema["paths"]["/v1/renewals"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    leases = body["properties"]["leases"]
    assert (leases["minItems"], leases["maxItems"]) == (1, 1000)
    assert set(leases["items"]["required"]) == {"lease_id", "fencing_token"}
    assert leases["items"]["additionalProperties"] is False
