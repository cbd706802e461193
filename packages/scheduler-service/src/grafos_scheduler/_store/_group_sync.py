"""Group commit: one fsync makes every commit written before it durable.

A store commits changes without waiting for the disk (SQLite's
``synchronous=NORMAL`` in WAL mode: the commit's pages are written, not synced; the
changes written between two waits share one transaction), and counts each commit with
:meth:`GroupSync.wrote`. Whoever must answer calls :meth:`GroupSync.wait` outside
every lock. The first waiter fsyncs; the commits
written while that fsync runs wait for the next one, which one of them makes, so
one fsync serves every commit that was waiting for it.

A failed fsync is final. The kernel may have dropped the dirty pages already, so a
retry could report success for data that is not on disk: every waiter, and every
later write, gets :class:`StoreFailed`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._domain._errors import StoreFailed

__all__ = ["GroupSync"]


class GroupSync:
    """Counts written commits and makes them durable in groups, with ``fsync``."""

    __slots__ = ("_cond", "_durable", "_failed", "_fsync", "_path", "_syncing", "_written")

    def __init__(self, fsync: Callable[[], None], path: str) -> None:
        self._fsync = fsync
        self._path = path
        self._cond = threading.Condition(threading.Lock())
        self._written = 0  # commits written, numbered 1, 2, ...
        self._durable = 0  # every commit up to this number is durable
        self._syncing = False
        self._failed: StoreFailed | None = None

    @property
    def durable(self) -> bool:
        """True when no written commit is waiting for its fsync (a lock-free read)."""
        return self._durable >= self._written and self._failed is None

    @property
    def failed(self) -> StoreFailed | None:
        return self._failed

    def check(self) -> None:
        """Raise the failure, if an fsync failed; a store calls it before writing."""
        if self._failed is not None:
            raise self._failed

    def fail(self, failure: StoreFailed) -> None:
        """Stop for good without an fsync: commits counted as written were lost."""
        with self._cond:
            if self._failed is None:
                self._failed = failure
            self._cond.notify_all()

    def wrote(self) -> None:
        """Count one commit, after its transaction committed (not yet durable)."""
        with self._cond:
            self._written += 1

    def wait(self) -> None:
        """Return once every commit counted before this call is durable.

        Raises :class:`StoreFailed` if the fsync that would have covered them failed.
        """
        if self._durable >= self._written:  # the common case: nothing waits
            self.check()
            return
        cond = self._cond
        with cond:
            target = self._written
            while True:
                if self._failed is not None:
                    raise self._failed
                if self._durable >= target:
                    return
                if not self._syncing:
                    break
                cond.wait()
            self._syncing = True
            upto = self._written  # everything counted so far is in the page cache
        try:
            self._fsync()
        except BaseException as exc:
            failure = StoreFailed(
                f"store {self._path!r}: making commits durable failed "
                f"({type(exc).__name__}: {exc}); the store stops, an fsync is never retried",
                self._path,
            )
            failure.__cause__ = exc
            with cond:
                self._failed = failure
                self._syncing = False
                cond.notify_all()
            raise failure from exc
        with cond:
            self._durable = max(self._durable, upto)
            self._syncing = False
            cond.notify_all()
