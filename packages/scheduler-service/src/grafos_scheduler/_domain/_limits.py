"""The limits on what a caller may ask for: names, cause, priority, ttl, slots, tokens.

The one definition of each rule. The domain's checks, the wire models and the
published OpenAPI schema all read the constants here, so the in-process Scheduler and
the HTTP API refuse the same values.
"""

from __future__ import annotations

import math
import re

from .._domain._errors import InvalidRequest

#: Job and holder names: 1 to 128 characters of ``[A-Za-z0-9._:@-]``, starting with a
#: letter or digit. No spaces or control characters, so a name never forges a log line.
MAX_NAME_LENGTH = 128
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

#: A preemption's cause: 1 to 500 characters, not only spaces.
MAX_CAUSE_LENGTH = 500
CAUSE_PATTERN = r"\S"

#: Priorities are signed 32-bit integers (higher wins).
MIN_PRIORITY = -(2**31)
MAX_PRIORITY = 2**31 - 1

#: One day: a longer lease is an operator mistake, not a lease.
MAX_TTL = 86_400.0
MAX_SLOTS = 1_000_000
#: Fencing tokens are stored as signed 64-bit integers.
MAX_FENCING_TOKEN = 2**63 - 1
#: Work lost, as a holder reports it on release: records fit a signed 64-bit column,
#: and seconds are bounded so a typo (milliseconds) is refused, not summed.
MAX_WORK_LOST_RECORDS = MAX_FENCING_TOKEN
MAX_WORK_LOST_SECONDS = 1e9

# One batch renewal (POST /v1/renewals) renews at most this many leases.
MAX_BATCH_RENEWALS = 1000

# An operator hold: a reason like a cause, and an optional lifetime of at most a week.
MAX_HOLD_SECONDS = 7 * 86_400.0


def check_name(value: object, what: str) -> str:
    """Return a job or holder name that meets :data:`NAME_PATTERN`, else InvalidRequest."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequest(
            f"{what} {value!r} must be 1 to {MAX_NAME_LENGTH} characters of "
            "[A-Za-z0-9._:@-], starting with a letter or a digit"
        )
    return value


def check_cause(value: object) -> str:
    """Return a cause of 1 to :data:`MAX_CAUSE_LENGTH` characters, not only spaces."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CAUSE_LENGTH:
        raise InvalidRequest(
            f"cause {value!r} must be a non-empty string of at most {MAX_CAUSE_LENGTH} characters"
        )
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


def check_seconds(
    value: object, what: str, *, allow_zero: bool = False, most: float | None = None
) -> float:
    """Return a finite number of seconds above 0 (or >= 0, at most ``most``)."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
        or (most is not None and value > most)
    ):
        limit = ">= 0" if allow_zero else "above 0"
        if most is not None:
            limit += f" and at most {most:g}"
        raise InvalidRequest(f"{what} {value!r} must be a finite number of seconds {limit}")
    return float(value)


def check_priority(value: object) -> int:
    """Return a signed 32-bit int priority (higher wins), else raise InvalidRequest."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"priority {value!r} is not an integer")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidRequest(
            f"priority {value!r} is out of range: it must be from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return value


def check_slots(value: object) -> int:
    """Return an int from 1 to :data:`MAX_SLOTS`, else raise InvalidRequest."""
    slots = check_count(value, "slots", 1)
    if slots > MAX_SLOTS:
        raise InvalidRequest(f"slots {slots!r} must be at most {MAX_SLOTS}")
    return slots


def check_ttl(value: object) -> float:
    """Return a finite number of seconds above 0 and at most :data:`MAX_TTL`."""
    return check_seconds(value, "ttl", most=MAX_TTL)


def check_token(value: object) -> int:
    """Return an int fencing token (any int: a wrong one is a mismatch, not bad input)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"fencing token {value!r} is not an integer")
    return value


def check_hold_reason(value: object) -> str:
    """Return a hold reason of 1 to :data:`MAX_CAUSE_LENGTH` characters, not only spaces."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CAUSE_LENGTH:
        raise InvalidRequest(
            f"hold reason {value!r} must be a non-empty string of at most "
            f"{MAX_CAUSE_LENGTH} characters"
        )
    return value


def check_hold_seconds(value: object) -> float | None:
    """Return a hold's lifetime (None: until cleared), above 0 and at most a week."""
    if value is None:
        return None
    return check_seconds(value, "expires_in", most=MAX_HOLD_SECONDS)


def check_grace(value: object, *, max_grace: float, max_defer: float) -> float:
    """Return a grace window in seconds: >= 0, at most ``max_grace`` and ``max_defer``.

    The message names both bounds, so a caller refused by either knows which.
    """
    grace = check_seconds(value, "grace", allow_zero=True)
    if grace > max_grace or grace > max_defer:
        raise InvalidRequest(
            f"grace {grace:g} is above the bound: the server's max_grace is {max_grace:g} s "
            f"and its max_defer is {max_defer:g} s"
        )
    return grace


def check_work_lost(records: object, seconds: object) -> tuple[int | None, float | None]:
    """Return a holder's report of the work lost (each part optional)."""
    if records is not None:
        records = check_count(records, "work_lost_records", 0, MAX_WORK_LOST_RECORDS)
    if seconds is not None:
        seconds = check_seconds(
            seconds, "work_lost_seconds", allow_zero=True, most=MAX_WORK_LOST_SECONDS
        )
    return records, seconds
