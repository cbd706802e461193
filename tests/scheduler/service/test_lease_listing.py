"""GET /v1/leases is paged (limit, after, next_after); a worker still sees only its own."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    Scheduler,
)
from support.scheduling import churn
from support.servers import Client, Headers, assert_error


def test_list_leases_is_paged_with_a_cursor(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    ids = churn(scheduler, "alice", 105)
    first = client.get("/v1/leases", headers=headers["admin"]).json()
    assert len(first["leases"]) == 100  # the default page
    assert [x["lease_id"] for x in first["leases"]] == ids[:100]  # oldest grant first
    assert first["next_after"] == ids[99]
    rest = client.get(
        "/v1/leases", params={"after": first["next_after"]}, headers=headers["admin"]
    ).json()
    assert [x["lease_id"] for x in rest["leases"]] == ids[100:]
    assert rest["next_after"] is None
    small = client.get("/v1/leases?limit=2&state=released", headers=headers["admin"]).json()
    assert [x["lease_id"] for x in small["leases"]] == ids[:2]
    assert small["next_after"] == ids[1]
    assert client.get("/v1/leases?state=active", headers=headers["admin"]).json() == {
        "leases": [],
        "next_after": None,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("after=zz", "after"),
        ("after=" + "0" * 32, "after"),  # well formed, but no such lease
    ],
)
def test_list_leases_refuses_bad_pages(
    client: Client, headers: Headers, query: str, field: str
) -> None:
    body = assert_error(client.get(f"/v1/leases?{query}", headers=headers["admin"]), 400)
    assert body["field"] == field


def test_list_leases_max_page_is_1000(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    churn(scheduler, "bob", 3)
    body = client.get("/v1/leases?limit=1000", headers=headers["admin"]).json()
    assert len(body["leases"]) == 3
    assert body["next_after"] is None


def test_a_worker_pages_through_its_own_leases_only(
    client: Client, headers: Headers, scheduler: Scheduler
) -> None:
    mine = churn(scheduler, "alice", 3)
    theirs = churn(scheduler, "bob", 3)
    page = client.get("/v1/leases?limit=2", headers=headers["alice"]).json()
    assert [x["lease_id"] for x in page["leases"]] == mine[:2]
    page = client.get(
        "/v1/leases", params={"limit": 2, "after": page["next_after"]}, headers=headers["alice"]
    ).json()
    assert [x["lease_id"] for x in page["leases"]] == mine[2:]
    assert page["next_after"] is None
    # Another worker's lease as a cursor: refused like an unknown one, nothing shown.
    body = assert_error(
        client.get("/v1/leases", params={"after": theirs[0]}, headers=headers["alice"]), 400
    )
    assert body["field"] == "after"
