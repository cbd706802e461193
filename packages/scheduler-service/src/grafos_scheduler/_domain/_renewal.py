"""A renewal's answer: the lease and its pending preemption, read under one lock."""

from __future__ import annotations

from typing import NamedTuple

import attrs

from .._domain._lease import Lease
from .._domain._preemption import PendingPreemption


@attrs.frozen
class Renewal:
    """What :meth:`Scheduler.renew_lease` returns.

    ``pending`` is the lease's deferred preemption at the moment of the renewal, or
    None: the holder should stop at its next safe point and release when it is set.
    """

    lease: Lease
    pending: PendingPreemption | None


class Renewed(NamedTuple):
    """A renewal's outcome with no :class:`Lease` built for it: what a batch renewal
    answers with, a thousand at a time (:meth:`Scheduler.renew_expiries`)."""

    lease_id: int
    fencing_token: int
    expires_at: float  # on the scheduler's monotonic clock
    pending: PendingPreemption | None
