"""The checkpoint flush observer protocol and the guard that keeps its contract."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from ._errors import InvalidLeaseId

_LEASE_ID_LIMIT = 1 << 128

logger = logging.getLogger("grafos_pipeline")


@runtime_checkable
class CheckpointFlushObserver(Protocol):
    """Told when a pipeline's checkpoint flush starts and when it ends.

    A scheduler implements this to keep a lease non-preemptible while its checkpoint
    is being written, so that preemption never lands in the middle of a flush.

    The pipeline keeps this contract:

    1. It notifies only when both an observer and a lease id are wired at the moment
       ``checkpoint()`` begins. With either missing, neither method is called.
    2. ``on_flush_start(lease_id)`` is called exactly once per flush, before any stage
       state is captured.
    3. ``on_flush_complete(lease_id)`` is called exactly once per flush, after the
       store's commit returned or failed, whatever failed (a stage's snapshot, the
       store, a stale fencing token, a ``KeyboardInterrupt``). It goes to the same
       observer with the same lease id that got the start, even if the pipeline is
       re-wired while the flush runs.
    4. One guard pairs the two calls.
    5. If a method raises anyway, the pipeline logs it once (logger
       ``grafos_pipeline``, WARNING, naming the lease id and the method) and nothing
       else changes: the flush result or exception, and the call of
       ``on_flush_complete``, are exactly as they would be with a silent observer.

    Implementations are observational: they must not block and must not raise.
    Overlapping flushes of one lease are possible (two pipelines under one lease),
    so an implementation should count starts and completes rather than toggle a flag.
    """

    def on_flush_start(self, lease_id: int) -> None:
        """A flush under ``lease_id`` begins: mark the lease transiently non-preemptible.

        Called exactly once per flush, before any stage state is captured. Must not
        block and must not raise.
        """

    def on_flush_complete(self, lease_id: int) -> None:
        """The flush under ``lease_id`` has ended, committed or failed: clear the marker.

        Called exactly once per flush that called ``on_flush_start``, on success and on
        every failure path. Must not block and must not raise.
        """


def validate_lease_id(value: object) -> int:
    """Return ``value`` if it is an unsigned 128-bit ``int``; raise ``InvalidLeaseId``."""
    # bool is an int subclass, but True is never a meaningful lease id.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidLeaseId(value)
    if not 0 <= value < _LEASE_ID_LIMIT:
        raise InvalidLeaseId(value)
    return value


def log_observer_failure(lease_id: int, method: str) -> None:
    logger.warning(
        "checkpoint flush observer raised in %s for lease id %d; ignored",
        method,
        lease_id,
        exc_info=True,
    )
