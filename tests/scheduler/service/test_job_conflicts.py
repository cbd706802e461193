"""The 409 for a job that is taken shows the lease or ticket id only to its holder or the admin."""

from __future__ import annotations

import re

from support.servers import Client, Headers, acquire, assert_error

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_a_taken_job_409_hides_the_lease_id_from_another_worker(
    client: Client, headers: Headers
) -> None:
    lease_id = acquire(client, headers["alice"], "sem-a").json()["lease"]["lease_id"]
    refused = assert_error(acquire(client, headers["bob"], "sem-a"), 409)
    assert refused["error"] == "job_already_leased"
    assert "'sem-a'" in refused["message"]
    assert lease_id not in refused["message"]
    assert not HEX32.search(refused["message"])
    assert "alice" not in refused["message"]
    # The holder and the admin still get the id.
    for who in ("alice", "admin"):
        own = assert_error(acquire(client, headers[who], "sem-a"), 409)
        assert own["error"] == "job_already_leased"
        assert lease_id in own["message"], who


def test_a_queued_job_409_hides_the_ticket_id_from_another_worker(
    client: Client, headers: Headers
) -> None:
    acquire(client, headers["alice"], "big", slots=2)
    ticket_id = acquire(client, headers["alice"], "sem-b").json()["ticket"]["ticket_id"]
    refused = assert_error(acquire(client, headers["bob"], "sem-b"), 409)
    assert "'sem-b'" in refused["message"]
    assert "pending ticket" in refused["message"]
    assert not HEX32.search(refused["message"])
    own = assert_error(acquire(client, headers["alice"], "sem-b"), 409)
    assert ticket_id in own["message"]
