"""SchedulerClient.renew_many, and renewals from many threads sharing requests."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from grafos_scheduler import (
    BackgroundServer,
    LeaseGone,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    TokenConflict,
)
from support.servers import WORKER_TOKENS


def test_renew_many_answers_each_entry(alice: SchedulerClient, server: BackgroundServer) -> None:
    mine = alice.acquire("mine", slots=1, ttl=30).lease
    assert mine is not None
    with SchedulerClient(server.url, WORKER_TOKENS["bob"]) as bob:
        theirs = bob.acquire("theirs", slots=1, ttl=30).lease
    assert theirs is not None
    alice.release(mine.lease_id)
    again = alice.acquire("again", slots=1, ttl=30).lease
    assert again is not None
    results = alice.renew_many(
        [
            (again.lease_id, again.fencing_token, ["checkpoint_in_progress"]),
            (again.lease_id, again.fencing_token + 1, []),
            (mine.lease_id, mine.fencing_token, []),
            (theirs.lease_id, theirs.fencing_token, []),
            (again.lease_id, again.fencing_token, ["operator_hold"]),
        ]
    )
    assert not isinstance(results[0], Exception)
    assert results[0].lease_id == again.lease_id
    assert isinstance(results[1], TokenConflict)
    assert isinstance(results[2], LeaseGone)
    assert isinstance(results[3], PermissionDenied)
    assert isinstance(results[4], RequestRejected)
    assert results[4].field == "leases[4].reasons[0]"
    with pytest.raises(RequestRejected, match="0 items"):
        alice.renew_many([])


class CountingClient(SchedulerClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def renew_many(self, renewals: Any, **kwargs: Any) -> Any:
        self.batches.append(len(renewals))
        return super().renew_many(renewals, **kwargs)


def test_renewals_from_many_threads_share_requests(server: BackgroundServer) -> None:
    client = CountingClient(server.url, WORKER_TOKENS["alice"])
    with client:
        # The service's scheduler has 2 slots: two leases, renewed by 16 threads.
        leases = [client.acquire(f"j{i}", slots=1, ttl=30).lease for i in range(2)]
        start = threading.Barrier(16)
        failures: list[BaseException] = []

        def renew(i: int) -> None:
            lease = leases[i % 2]
            assert lease is not None
            start.wait()
            for _ in range(5):
                try:
                    answer = client.renew(lease.lease_id, lease.fencing_token)
                    assert answer.lease_id == lease.lease_id
                except BaseException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=renew, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not failures, failures
        assert sum(client.batches) == 80, "every renewal was sent exactly once"
        assert len(client.batches) < 80, "renewals that were due together shared a request"
        assert max(client.batches) > 1
