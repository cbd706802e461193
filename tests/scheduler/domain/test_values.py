"""Value objects, validators, clocks and error messages."""

from __future__ import annotations

import math

import attrs
import pytest

from grafos_scheduler import (
    CapacityExceeded,
    InvalidRequest,
    Lease,
    LeaseState,
    ManualClock,
    SystemClock,
    Ticket,
    UnknownLease,
)


def _lease(**changes: object) -> Lease:
    fields: dict[str, object] = {
        "lease_id": 7,
        "job": "job",
        "holder": "worker",
        "priority": 0,
        "slots": 1,
        "ttl": 5.0,
        "fencing_token": 1,
        "state": LeaseState.ACTIVE,
        "granted_at": 0.0,
        "expires_at": 5.0,
    }
    fields.update(changes)
    return Lease(**fields)  # type: ignore[arg-type]


def test_lease_is_frozen_and_slotted() -> None:
    lease = _lease()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lease.slots = 2  # type: ignore[misc]
    assert not hasattr(lease, "__dict__")
    assert lease.active
    assert lease.expired_at(5.0)
    assert not lease.expired_at(4.999)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("lease_id", -3, "lease id -3 is not an unsigned 128-bit integer"),
        ("lease_id", 2**128, "is not an unsigned 128-bit integer"),
        ("lease_id", True, "lease id True"),
        ("slots", 0, "slots 0 must be an integer of at least 1"),
        ("slots", 1.5, "slots 1.5"),
        ("ttl", 0, "ttl 0"),
        ("ttl", math.inf, "ttl inf"),
        ("ttl", math.nan, "ttl nan"),
        ("job", "", "job ''"),
        ("job", "   ", "job '   '"),
        ("holder", 3, "holder 3"),
        ("priority", "high", "priority 'high'"),
        ("fencing_token", 0, "fencing token 0"),
        ("state", "active", "state 'active'"),
        ("granted_at", math.nan, "granted_at nan"),
    ],
)
def test_lease_validators_name_the_value(field: str, value: object, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=None) as info:
        _lease(**{field: value})
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_ticket_validates() -> None:
    Ticket(1, "job", "w", 0, 1, 1.0, 0.0)
    with pytest.raises(InvalidRequest, match="ticket id"):
        Ticket(-1, "job", "w", 0, 1, 1.0, 0.0)


def test_manual_clock_moves_both_readings() -> None:
    clock = ManualClock(5.0)
    wall = clock.wall()
    assert clock.advance(2.5) == 7.5
    assert clock.monotonic() == 7.5
    assert clock.wall() == wall + 2.5
    with pytest.raises(ValueError, match="-1"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="nan"):
        clock.advance(math.nan)


def test_system_clock() -> None:
    clock = SystemClock()
    a = clock.monotonic()
    assert clock.monotonic() >= a
    assert clock.wall() > 1_600_000_000


def test_errors_name_the_value() -> None:
    assert "00000000000000000000000000000010" in str(UnknownLease(16))
    assert "'nope'" in str(UnknownLease("nope"))
    message = str(CapacityExceeded(11, 10))
    assert "11" in message
    assert "10" in message
