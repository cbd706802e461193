"""PreemptionFlushObserver: the scheduler's side of the core's flush observer protocol."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from .._domain._ids import id_hex, is_id
from .._domain._preemption import NonPreemptibleReason, PreemptionManager

_log = logging.getLogger("grafos_scheduler")
_CHECKPOINT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
# How many lease ids the observer remembers having warned about.
_WARNED_MAX = 4096


class PreemptionFlushObserver:
    """Implements ``grafos_pipeline.CheckpointFlushObserver`` on a PreemptionManager.

    ``on_flush_start`` marks the lease CHECKPOINT_IN_PROGRESS; ``on_flush_complete``
    clears it. For a lease the manager does not track (released, expired, fenced or
    preempted concurrently, or never granted) it logs a WARNING naming the lease id,
    counts the miss in :attr:`misses`, and returns. Every miss is counted, but only the
    first for a lease id logs a WARNING (later ones log at DEBUG), so a zombie worker
    flushing in a loop cannot flood the logs. It never raises and never blocks
    on I/O: a failed notification is a sideband condition, the checkpoint is the
    source of truth.
    """

    __slots__ = ("_count_lock", "_manager", "_misses", "_warned")

    def __init__(self, manager: PreemptionManager) -> None:
        self._manager = manager
        self._count_lock = threading.Lock()
        self._misses = 0
        self._warned: OrderedDict[object, None] = OrderedDict()

    @property
    def manager(self) -> PreemptionManager:
        """The manager this observer marks."""
        return self._manager

    @property
    def misses(self) -> int:
        """Notifications for leases the manager did not track, since construction."""
        with self._count_lock:
            return self._misses

    def on_flush_start(self, lease_id: int) -> None:
        """Mark the lease non-preemptible for the duration of the flush."""
        try:
            tracked = self._manager.mark_non_preemptible(lease_id, _CHECKPOINT)
        except Exception:  # observers must never raise into the flush
            _log.warning("on_flush_start failed for lease %r", lease_id, exc_info=True)
            tracked = False
        if not tracked:
            self._miss(lease_id, "on_flush_start")

    def on_flush_complete(self, lease_id: int) -> None:
        """Clear the flush marker; a due preemption is left to the executor."""
        try:
            tracked = self._manager.clear_non_preemptible(lease_id, _CHECKPOINT)
        except Exception:  # observers must never raise into the flush
            _log.warning("on_flush_complete failed for lease %r", lease_id, exc_info=True)
            tracked = False
        if not tracked:
            self._miss(lease_id, "on_flush_complete")

    def _miss(self, lease_id: int, method: str) -> None:
        shown = id_hex(lease_id) if is_id(lease_id) else repr(lease_id)
        with self._count_lock:
            self._misses += 1
            try:
                first = lease_id not in self._warned
                if first:
                    self._warned[lease_id] = None
                    if len(self._warned) > _WARNED_MAX:
                        self._warned.popitem(last=False)
            except TypeError:  # unhashable garbage: warn each time, it is a caller's bug
                first = True
        level = logging.WARNING if first else logging.DEBUG
        _log.log(level, "%s: lease %s is not tracked by the scheduler", method, shown)

    def __repr__(self) -> str:
        return f"PreemptionFlushObserver(misses={self.misses})"
