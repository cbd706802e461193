"""``AuditLogger``: a thread that follows the audit log and logs every new record."""

from __future__ import annotations

import contextlib
import threading

from .._domain._errors import SchedulerError
from .._scheduler._scheduler import Scheduler
from .._wire._models import format_id
from ._events import event, logger

__all__ = ["AuditLogger"]

_BATCH = 1000


class AuditLogger:
    """One structured log event per audit record: every decision, wherever it was made.

    Grants from the queue, deferred, executed and forced preemptions, expiries and
    fencing are decided in the scheduler's executor thread, not in a request. Rather
    than log at each of those places, this follows the audit log (the one record of
    every decision) from its head at start, and logs each new record at INFO: ``event``
    is the audit kind, with ``lease_id`` (hex), ``job``, ``audit_seq`` and ``data``.
    Records are logged once they are durable, within ``interval`` seconds.
    """

    def __init__(self, scheduler: Scheduler, interval: float = 0.1) -> None:
        self._scheduler = scheduler
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seq = 0

    def start(self) -> None:
        self._seq = self._scheduler.audit.head()[0]
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="audit-log", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(SchedulerError):  # the scheduler closed first
            self.drain()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.drain()
            except Exception:  # keep following the log
                logger.warning(
                    "audit tail failed", exc_info=True, extra={"event": "audit_tail_failed"}
                )

    def drain(self) -> None:
        """Log every record appended since the last call."""
        with self._lock:
            while True:
                batch = self._scheduler.audit.records(after_seq=self._seq, limit=_BATCH)
                for record in batch:
                    event(
                        record.kind,
                        lease_id=None if record.lease_id is None else format_id(record.lease_id),
                        job=record.job,
                        audit_seq=record.seq,
                        data=dict(record.data),
                    )
                    self._seq = record.seq
                if len(batch) < _BATCH:
                    return
