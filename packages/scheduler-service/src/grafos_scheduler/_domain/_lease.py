"""Leases and tickets: frozen value objects whose validators state the domain."""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from .._domain._errors import InvalidRequest
from .._domain._ids import check_id
from .._domain._limits import check_name, check_priority, check_slots, check_ttl


class LeaseState(enum.Enum):
    """Where a lease is in its life: ACTIVE, then exactly one end state, for good."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    FENCED = "fenced"
    PREEMPTED = "preempted"


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
class Hold:
    """An operator hold on a lease: it defers preemption, never beyond ``max_defer``
    from the request, and never stops expiry. Times are monotonic; ``expires_at`` is
    None for a hold that lasts until it is cleared."""

    reason: str
    set_at: float
    expires_at: float | None = None


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
    #: When and why the lease ended (monotonic; None while ACTIVE).
    ended_at: float | None = None
    end_cause: str | None = None
    #: The operator hold while ACTIVE, else None.
    hold: Hold | None = None
    #: Seconds the holder is given to checkpoint and release when preempted (0: none).
    grace: float = 0.0
    #: Set once the lease ended: the work done since its last completed checkpoint
    #: (records None when nobody reported them).
    work_lost_records: int | None = None
    work_lost_seconds: float | None = None

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
    grace: float = 0.0
