"""Leases and tickets: frozen value objects whose validators state the domain."""

from __future__ import annotations

import enum
import math
import secrets
import unicodedata
from typing import Any

import attrs

from .._domain._errors import InvalidRequest

ID_BITS = 128
ID_LIMIT = 2**ID_BITS
MAX_NAME_LENGTH = 256
#: Priorities are signed 64-bit integers, as every store keeps them.
MIN_PRIORITY = -(2**63)
MAX_PRIORITY = 2**63 - 1


class LeaseState(enum.Enum):
    """Where a lease is in its life: ACTIVE, then exactly one end state, for good."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    FENCED = "fenced"
    PREEMPTED = "preempted"


def is_id(value: object) -> bool:
    """True for an unsigned 128-bit integer (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < ID_LIMIT


def check_id(value: object, what: str = "lease id") -> int:
    """Return ``value`` if it is an unsigned 128-bit integer, else raise InvalidRequest."""
    if not is_id(value):
        raise InvalidRequest(f"{what} {value!r} is not an unsigned 128-bit integer")
    assert isinstance(value, int)
    return value


def new_id() -> int:
    """A fresh random 128-bit id. The store checks that it was never used."""
    return secrets.randbits(ID_BITS)


def id_hex(value: int) -> str:
    """The 32-character lowercase hex form that ids take in JSON and in the store."""
    return f"{value:032x}"


def id_from_hex(text: str) -> int:
    """Parse the 32-character hex form back into an id."""
    if len(text) != 32:
        raise InvalidRequest(f"id {text!r} is not 32 hex characters")
    try:
        return int(text, 16)
    except ValueError:
        raise InvalidRequest(f"id {text!r} is not 32 hex characters") from None


def check_name(value: object, what: str) -> str:
    """Return a non-empty name of at most 256 characters, else raise InvalidRequest."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise InvalidRequest(
            f"{what} {value!r} must be a non-empty string of at most {MAX_NAME_LENGTH} characters"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{what} {value!r} is not valid Unicode text (it holds a lone surrogate)"
        ) from None
    # A line break or other control character would forge lines in logs and listings
    # ("job\n" was accepted); names are printable text.
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidRequest(f"{what} {value!r} must not contain control characters")
    return value


def check_count(value: object, what: str, low: int, high: int | None = None) -> int:
    """Return an int in [low, high], else raise InvalidRequest naming ``what``."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"of at least {low}" if high is None else f"from {low} to {high}"
        raise InvalidRequest(f"{what} {value!r} must be an integer {bound}")
    return value


def check_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    """Return a finite number of seconds above 0 (or >= 0), else raise InvalidRequest."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        limit = ">= 0" if allow_zero else "above 0"
        raise InvalidRequest(f"{what} {value!r} must be a finite number of seconds {limit}")
    return float(value)


def check_priority(value: object) -> int:
    """Return a signed 64-bit int priority (higher wins), else raise InvalidRequest."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"priority {value!r} is not an integer")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidRequest(
            f"priority {value!r} is out of range: it must be from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return value


def check_slots(value: object) -> int:
    """Return an int of at least 1, else raise InvalidRequest."""
    return check_count(value, "slots", 1)


def check_ttl(value: object) -> float:
    """Return a finite, positive number of seconds, else raise InvalidRequest."""
    return check_seconds(value, "ttl")


# attrs validators: each delegates to the checker above so the message is the same
# whether the value came through the Scheduler or straight into the constructor.
def _v_id(what: str) -> Any:
    def validate(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
        check_id(value, what)

    return validate


def _v_name(what: str) -> Any:
    def validate(_inst: object, _attr: attrs.Attribute[str], value: str) -> None:
        check_name(value, what)

    return validate


def _v_priority(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    check_priority(value)


def _v_slots(_inst: object, _attr: attrs.Attribute[int], value: int) -> None:
    check_slots(value)


def _v_ttl(_inst: object, _attr: attrs.Attribute[float], value: float) -> None:
    check_ttl(value)


def _v_token(_inst: object, _attr: attrs.Attribute[int], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"fencing token {value!r} must be an integer of at least 1")


def _v_time(_inst: object, attr: attrs.Attribute[float], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidRequest(f"{attr.name} {value!r} is not a finite time")


def _v_state(_inst: object, _attr: attrs.Attribute[LeaseState], value: LeaseState) -> None:
    if not isinstance(value, LeaseState):
        raise InvalidRequest(f"state {value!r} is not a LeaseState")


@attrs.frozen
class Lease:
    """A grant of ``slots`` of the capacity to ``holder`` for ``job``, until ``expires_at``.

    Times are on the scheduler's monotonic clock. ``fencing_token`` is per job and
    strictly increasing across every grant of that job; pass it to the checkpoint store
    so that an older holder can never overwrite a newer one's work.
    """

    lease_id: int = attrs.field(validator=_v_id("lease id"))
    job: str = attrs.field(validator=_v_name("job"))
    holder: str = attrs.field(validator=_v_name("holder"))
    priority: int = attrs.field(validator=_v_priority)
    slots: int = attrs.field(validator=_v_slots)
    ttl: float = attrs.field(validator=_v_ttl)
    fencing_token: int = attrs.field(validator=_v_token)
    state: LeaseState = attrs.field(validator=_v_state)
    granted_at: float = attrs.field(validator=_v_time)
    expires_at: float = attrs.field(validator=_v_time)

    @property
    def active(self) -> bool:
        """True while the lease is ACTIVE (it may still be past ``expires_at``)."""
        return self.state is LeaseState.ACTIVE

    def expired_at(self, now: float) -> bool:
        """True when the TTL has run out at monotonic time ``now``."""
        return now >= self.expires_at


@attrs.frozen
class Ticket:
    """A pending acquire: it becomes a lease when room frees.

    Tickets are granted in priority order (higher first), first come first served
    within one priority. Poll it with :meth:`Scheduler.poll`.
    """

    ticket_id: int = attrs.field(validator=_v_id("ticket id"))
    job: str = attrs.field(validator=_v_name("job"))
    holder: str = attrs.field(validator=_v_name("holder"))
    priority: int = attrs.field(validator=_v_priority)
    slots: int = attrs.field(validator=_v_slots)
    ttl: float = attrs.field(validator=_v_ttl)
    requested_at: float = attrs.field(validator=_v_time)
