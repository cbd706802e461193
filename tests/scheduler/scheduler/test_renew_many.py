"""Scheduler.renew_many: one lock for many renewals, one result per entry, in order."""

from __future__ import annotations

import pytest

from grafos_scheduler import (
    FencingTokenMismatch,
    InvalidRequest,
    Lease,
    LeaseExpired,
    LeaseNotActive,
    ManualClock,
    NonPreemptibleReason,
    NotLeaseHolder,
    Renewal,
    Scheduler,
    Ticket,
    UnknownLease,
)

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def _lease(result: Lease | Ticket) -> Lease:
    assert isinstance(result, Lease), result
    return result


def test_one_bad_entry_never_fails_the_others(scheduler: Scheduler, clock: ManualClock) -> None:
    good = _lease(scheduler.acquire("good", "w", 0, 1, 10.0))
    marked = _lease(scheduler.acquire("marked", "w", 0, 1, 10.0))
    short = _lease(scheduler.acquire("short", "w", 0, 1, 1.0))
    gone = _lease(scheduler.acquire("gone", "w", 0, 1, 10.0))
    theirs = _lease(scheduler.acquire("theirs", "other", 0, 1, 10.0))
    scheduler.release(gone.lease_id)
    clock.advance(2.0)  # 'short' has lapsed
    results = scheduler.renew_many(
        [
            (good.lease_id, good.fencing_token, None),
            (marked.lease_id, marked.fencing_token, [CKPT]),
            (good.lease_id, good.fencing_token + 1, None),
            (short.lease_id, short.fencing_token, None),
            (gone.lease_id, gone.fencing_token, None),
            (theirs.lease_id, theirs.fencing_token, None),
            (2**128 - 1, 1, None),
            (-1, 1, None),
            (good.lease_id, "1", None),  # type: ignore[list-item]
        ],
        holder="w",
    )
    assert len(results) == 9
    first, second = results[0], results[1]
    assert isinstance(first, Renewal)
    assert first.lease.expires_at == 12.0
    assert isinstance(second, Renewal)
    assert scheduler.reasons(marked.lease_id) == {CKPT}
    assert isinstance(results[2], FencingTokenMismatch)
    assert isinstance(results[3], LeaseExpired)
    assert isinstance(results[4], LeaseNotActive)
    assert isinstance(results[5], NotLeaseHolder), "another holder's lease: that entry alone"
    assert isinstance(results[6], UnknownLease)
    assert isinstance(results[7], InvalidRequest)
    assert isinstance(results[8], InvalidRequest)
    # The other holder's lease was not touched.
    assert scheduler.get(theirs.lease_id).expires_at == 10.0


def test_the_admin_renews_anyone_s_leases(scheduler: Scheduler) -> None:
    a = _lease(scheduler.acquire("a", "w1", 0, 1, 10.0))
    b = _lease(scheduler.acquire("b", "w2", 0, 1, 10.0))
    results = scheduler.renew_many([(a.lease_id, 1, None), (b.lease_id, 1, None)])
    assert all(isinstance(r, Renewal) for r in results)


@pytest.mark.parametrize("count", [0, 1001])
def test_a_batch_takes_1_to_1000_entries(scheduler: Scheduler, count: int) -> None:
    lease = _lease(scheduler.acquire("a", "w", 0, 1, 10.0))
    with pytest.raises(InvalidRequest, match=f"1 to 1000 leases, not {count}"):
        scheduler.renew_many([(lease.lease_id, 1, None)] * count)


def test_a_thousand_renewals_in_one_call(scheduler: Scheduler) -> None:
    leases = [_lease(scheduler.acquire(f"j{i}", "w", 0, 1, 10.0)) for i in range(10)]
    results = scheduler.renew_many([(x.lease_id, x.fencing_token, None) for x in leases] * 100)
    assert len(results) == 1000
    assert all(isinstance(r, Renewal) for r in results)


def test_an_entry_may_carry_its_checkpoint_age(scheduler: Scheduler, clock: ManualClock) -> None:
    reported = _lease(scheduler.acquire("reported", "w", 0, 1, 60.0))
    silent = _lease(scheduler.acquire("silent", "w", 0, 1, 60.0))
    clock.advance(1.0)
    results = scheduler.renew_many(
        [
            (reported.lease_id, reported.fencing_token, None, 0.25),
            (silent.lease_id, silent.fencing_token, None),
            (silent.lease_id, silent.fencing_token, None, -1.0),
            (silent.lease_id, silent.fencing_token, None, 1.0, "extra"),  # type: ignore[list-item]
        ]
    )
    assert [type(r) for r in results] == [Renewal, Renewal, InvalidRequest, InvalidRequest]
    assert "checkpoint_age" in str(results[2])
    clock.advance(2.0)
    # Work lost counts from the reported checkpoint, else from the grant.
    assert scheduler.release(reported.lease_id).work_lost_seconds == pytest.approx(2.25)
    assert scheduler.release(silent.lease_id).work_lost_seconds == pytest.approx(3.0)
