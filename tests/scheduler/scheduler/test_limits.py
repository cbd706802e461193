"""The same value is refused in-process and by the wire: one set of limits."""

from __future__ import annotations

import json

import pytest

from grafos_scheduler import InvalidRequest, Lease, Scheduler
from support.internals import AcquireRequest, FieldError, PreemptRequest, parse_body

_OK = {"job": "j", "slots": 1, "ttl": 5.0, "priority": 0}

REFUSED = [
    ("job", "a b"),
    ("job", "x" * 129),
    ("job", "-x"),
    ("job", "job\n"),
    ("slots", 0),
    ("slots", 1_000_001),
    ("ttl", 0),
    ("ttl", 86_400.5),
    ("priority", 2**31),
    ("priority", -(2**31) - 1),
]
ACCEPTED = [
    ("job", "x" * 128),
    ("job", "a.b_c:d@e-f"),
    ("ttl", 86_400.0),
    ("priority", 2**31 - 1),
    ("priority", -(2**31)),
]


def _acquire(scheduler: Scheduler, body: dict[str, object]) -> object:
    return scheduler.acquire(
        body["job"],  # type: ignore[arg-type]
        "w",
        body["priority"],  # type: ignore[arg-type]
        body["slots"],  # type: ignore[arg-type]
        body["ttl"],  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("field", "value"), REFUSED, ids=repr)
def test_refused_in_process_and_on_the_wire(
    scheduler: Scheduler, field: str, value: object
) -> None:
    body = {**_OK, field: value}
    with pytest.raises(FieldError) as wire:
        parse_body(AcquireRequest, json.dumps(body).encode())
    assert wire.value.field == field
    with pytest.raises(InvalidRequest, match=field.rstrip("s")):
        _acquire(scheduler, body)


@pytest.mark.parametrize(("field", "value"), ACCEPTED, ids=repr)
def test_accepted_in_process_and_on_the_wire(
    scheduler: Scheduler, field: str, value: object
) -> None:
    body = {**_OK, field: value}
    parse_body(AcquireRequest, json.dumps(body).encode())
    assert isinstance(_acquire(scheduler, body), Lease)


@pytest.mark.parametrize("cause", ["", "   ", "x" * 501])
def test_a_cause_is_refused_in_process_and_on_the_wire(scheduler: Scheduler, cause: str) -> None:
    lease = scheduler.acquire("j", "w", 0, 1, 5.0)
    assert isinstance(lease, Lease)
    with pytest.raises(FieldError):
        parse_body(PreemptRequest, json.dumps({"cause": cause}).encode())
    with pytest.raises(InvalidRequest, match="cause"):
        scheduler.request_preemption(lease.lease_id, cause)
    parse_body(PreemptRequest, json.dumps({"cause": "x" * 500}).encode())
    scheduler.request_preemption(lease.lease_id, "x" * 500)
