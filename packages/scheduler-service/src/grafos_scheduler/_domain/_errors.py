"""Every error the scheduler raises; each message names the offending value."""

from __future__ import annotations


def _hex(lease_id: object) -> str:
    # Lease and ticket ids cross JSON as 32-character hex; errors use the same form.
    if type(lease_id) is int and 0 <= lease_id < 2**128:
        return f"{lease_id:032x}"
    return repr(lease_id)


class SchedulerError(Exception):
    """Base class of every error raised by :mod:`grafos_scheduler`."""


class StoreError(SchedulerError):
    """The store failed (I/O, lock, corruption, a concurrent writer); names the store.

    The change that was being made did not happen: its transaction rolled back.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class StoreClosed(StoreError):
    """The store was closed."""


class StoreSuperseded(StoreError):
    """A newer store on the same database file in this process took ownership over.

    The older store (and the scheduler on it) may no longer write: its view of the
    leases is stale, and two writers would break capacity and end states.
    """


class StoreFailed(StoreError):
    """Making commits durable failed (an fsync): the store, and the scheduler on it,
    stop for good.

    An fsync is never retried: after a failure the kernel may already have dropped the
    dirty pages, so a second fsync could succeed without the data being on disk. Every
    commit that was waiting for it, and every later call, raises this error; what was
    acknowledged before stays durable. Restart the process to recover from the file.
    """


class StoreConflict(StoreError):
    """The store holds another writer's change: the audit head or a fencing token
    counter is not the one the change was computed from. Nothing was written."""


class InvalidRequest(SchedulerError, ValueError):
    """A bad argument: slots, ttl, priority, a name, an id. Nothing was changed."""


class UnknownLease(SchedulerError):
    """No lease with this id was ever granted by this scheduler."""

    def __init__(self, lease_id: object) -> None:
        self.lease_id = lease_id
        super().__init__(f"unknown lease {_hex(lease_id)}")


class UnknownTicket(SchedulerError):
    """No pending or granted ticket has this id."""

    def __init__(self, ticket_id: object) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"unknown ticket {_hex(ticket_id)}")


class LeaseExpired(SchedulerError):
    """The lease's TTL ran out: acquire again, and get a new fencing token."""

    def __init__(self, lease_id: int, expires_at: float) -> None:
        self.lease_id = lease_id
        self.expires_at = expires_at
        super().__init__(
            f"lease {_hex(lease_id)} expired at {expires_at:.6f} (scheduler monotonic clock); "
            "acquire a new lease"
        )


class LeaseNotActive(SchedulerError):
    """The lease was released, fenced or preempted; it never becomes ACTIVE again."""

    def __init__(self, lease_id: int, state: str) -> None:
        self.lease_id = lease_id
        self.state = state
        super().__init__(f"lease {_hex(lease_id)} is {state}, not active")


class FencingTokenMismatch(SchedulerError):
    """The caller's fencing token is not the lease's token."""

    def __init__(self, lease_id: int, expected: int, got: object) -> None:
        self.lease_id = lease_id
        self.expected = expected
        self.got = got
        super().__init__(
            f"fencing token {got!r} does not match lease {_hex(lease_id)} (token {expected})"
        )


class CapacityExceeded(SchedulerError):
    """The request can never fit: it asks for more slots than the whole capacity."""

    def __init__(self, slots: int, capacity: int) -> None:
        self.slots = slots
        self.capacity = capacity
        super().__init__(
            f"a request for {slots} slots can never fit in a capacity of {capacity} slots"
        )


class JobAlreadyLeased(SchedulerError):
    """The job already holds an ACTIVE lease, or waits on a pending ticket.

    At most one lease per job is ACTIVE; a second acquire is refused rather than queued,
    so two workers never run one job. Release the lease (or let it end) first.
    """

    def __init__(self, job: str, lease_id: int, *, pending: bool = False) -> None:
        self.job = job
        self.lease_id = lease_id
        self.pending = pending
        what = "pending ticket" if pending else "active lease"
        super().__init__(f"job {job!r} already has {what} {_hex(lease_id)}")


class TicketGranted(SchedulerError):
    """The ticket cannot be cancelled: it was granted already, as ``lease_id``.

    Release the lease instead. (HTTP 409, code ``ticket_granted``.)
    """

    def __init__(self, ticket_id: int, lease_id: int) -> None:
        self.ticket_id = ticket_id
        self.lease_id = lease_id
        super().__init__(
            f"ticket {_hex(ticket_id)} was already granted as lease {_hex(lease_id)}; "
            "release the lease instead"
        )


class NotLeaseHolder(SchedulerError):
    """The caller named a holder that does not hold this lease or ticket.

    The message names the id, never the real holder. (HTTP 403.)
    """

    def __init__(self, lease_id: int, what: str = "lease") -> None:
        self.lease_id = lease_id
        self.what = what
        super().__init__(f"{what} {_hex(lease_id)} is not held by the caller")


class NoHold(SchedulerError):
    """The lease has no operator hold to clear. (HTTP 404, code ``no_hold``.)"""

    def __init__(self, lease_id: int) -> None:
        self.lease_id = lease_id
        super().__init__(f"lease {_hex(lease_id)} has no operator hold")
