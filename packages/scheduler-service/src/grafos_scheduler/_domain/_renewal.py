"""A renewal's answer: the lease and its pending preemption, read under one lock."""

from __future__ import annotations

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
