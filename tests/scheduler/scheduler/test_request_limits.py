"""The limits on an acquire's values, checked by the scheduler itself, not only over HTTP."""

from __future__ import annotations

import pytest

from grafos_scheduler import InvalidRequest, Scheduler
from support.internals import check_name
from support.scheduling import as_lease


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**70])
def test_priority_beyond_32_bits_is_refused(scheduler: Scheduler, priority: int) -> None:
    with pytest.raises(InvalidRequest, match=f"priority {priority}"):
        scheduler.acquire("j", "w", priority, 1, 1.0)


@pytest.mark.parametrize("priority", [2**31 - 1, -(2**31)])
def test_priority_at_the_32_bit_bounds_works(scheduler: Scheduler, priority: int) -> None:
    lease = as_lease(scheduler.acquire("j", "w", priority, 1, 1.0))
    assert scheduler.get(lease.lease_id).priority == priority


@pytest.mark.parametrize("field", ["job", "holder"])
def test_a_lone_surrogate_in_a_name_is_refused(scheduler: Scheduler, field: str) -> None:
    names = {"job": "j", "holder": "w", field: "x\ud800"}
    with pytest.raises(InvalidRequest, match=field):
        scheduler.acquire(names["job"], names["holder"], 0, 1, 1.0)


@pytest.mark.parametrize("name", ["job\n", "job\r\n", "jo\tb", "a\x00"])
def test_core_check_name_refuses_control_characters(name: str, scheduler: Scheduler) -> None:
    with pytest.raises(InvalidRequest):
        check_name(name, "job")
    with pytest.raises(InvalidRequest):
        scheduler.acquire(name, "alice", 0, 1, 5.0)
    # The one name rule (128 characters of [A-Za-z0-9._:@-]) refuses spaces too.
    with pytest.raises(InvalidRequest):
        check_name("job with space", "job")
    assert check_name("job-1.a:b@c_d", "job") == "job-1.a:b@c_d"
