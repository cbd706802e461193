"""Replica: one of several schedulers on a shared PostgreSQL store, leader or standby.

Leadership is a row (epoch, owner, advertised URL, expiry) that replicas compete for;
see :class:`PostgresStore`. The leader renews it every ``leader_ttl / 3``. Election is
not fencing: the leader's scheduler writes through a store view bound to its epoch,
and the database refuses any write of an epoch that ended. The leader also keeps its
own deadline on its monotonic clock, a fifth of the TTL short of the row's expiry, and
stops acting at it whether or not it could reach the database.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .._domain._errors import InvalidRequest, SchedulerError
from .._scheduler._scheduler import Scheduler
from .._store._protocol import SchedulerStore

if TYPE_CHECKING:  # psycopg stays out of the import graph of SQLite users
    from .._store._postgres import PostgresStore

__all__ = ["Replica", "ReplicaRole", "ReplicaStatus"]

_log = logging.getLogger("grafos_scheduler.replica")

#: The share of the TTL a leader gives up at the end of each renewal, so that it has
#: stopped acting before the row lapses even if its clock runs a little slow.
STEP_DOWN_MARGIN = 0.2


class ReplicaRole(enum.Enum):
    """What a replica is doing now."""

    LEADER = "leader"
    STANDBY = "standby"


@attrs.frozen
class ReplicaStatus:
    """One consistent reading of a replica's role.

    ``epoch`` is the epoch this replica leads, or the latest one it has seen;
    ``leader_url`` is the leader's advertised URL, None when no leader is known;
    ``scheduler`` is this replica's scheduler while it leads, else None.
    """

    role: ReplicaRole
    epoch: int
    leader_url: str | None
    scheduler: Scheduler | None = None

    @property
    def is_leader(self) -> bool:
        return self.role is ReplicaRole.LEADER


@attrs.define
class _Leading:
    epoch: int
    scheduler: Scheduler | None
    deadline: float
    lost: bool = False
    #: Why memory may no longer match the database, if it may not: resign at once.
    stale: str | None = None


class Replica:
    """Competes for leadership of ``store``; while leading, runs a Scheduler on it.

    ``make_scheduler`` builds the leader's scheduler on the fenced store view: it
    restores the leases, tokens, tickets, deferred preemptions and the audit chain
    from the database, as a restart does. On losing leadership (a refused write, a
    refused or late renewal) the replica closes that scheduler, which stops its
    executor, and serves as a standby. A commit whose outcome it cannot know (the
    connection failed during the COMMIT) leaves memory possibly behind the database:
    the replica then steps down and resigns, so that the next leader restores afresh.
    :meth:`status` is what the HTTP layer asks before and after each request.
    """

    def __init__(
        self,
        store: PostgresStore,
        make_scheduler: Callable[[SchedulerStore], Scheduler],
        *,
        advertise_url: str | None,
        leader_ttl: float = 5.0,
        owner: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        ttl: object = leader_ttl
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0.05 <= ttl <= 3600:
            raise InvalidRequest(
                f"leader ttl {leader_ttl!r} must be a number of seconds from 0.05 to 3600"
            )
        self._store = store
        self._make_scheduler = make_scheduler
        self.advertise_url = advertise_url
        self.leader_ttl = float(leader_ttl)
        self.owner = owner or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._leading: _Leading | None = None
        self._known_epoch = 0
        self._known_url: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        #: Writes the database refused because this replica's epoch had ended.
        self.refused_writes = 0
        #: Leaderships this replica has won and lost.
        self.elections_won = 0
        self.step_downs = 0

    # -- what the HTTP layer asks ----------------------------------------------------

    def status(self) -> ReplicaStatus:
        """The role now: a leader past its own deadline, or fenced, is a standby."""
        with self._lock:
            leading = self._leading
            if leading is not None and leading.scheduler is not None and self._acting(leading):
                return ReplicaStatus(
                    ReplicaRole.LEADER, leading.epoch, self.advertise_url, leading.scheduler
                )
            url = self._known_url
            if url is not None and url == self.advertise_url:
                url = None  # it is us, and we are not acting: nobody to send callers to
            return ReplicaStatus(ReplicaRole.STANDBY, self._known_epoch, url)

    def _acting(self, leading: _Leading) -> bool:
        return not leading.lost and self._monotonic() < leading.deadline

    def _still_leader(self, epoch: int) -> bool:
        with self._lock:
            leading = self._leading
            return leading is not None and leading.epoch == epoch and self._acting(leading)

    def wait_for_role(self, role: ReplicaRole, timeout: float) -> ReplicaStatus:
        """Wait until :meth:`status` says ``role``; SchedulerError after ``timeout``."""
        give_up = time.monotonic() + timeout
        while True:
            status = self.status()
            if status.role is role:
                return status
            if time.monotonic() > give_up:
                raise SchedulerError(f"replica {self.owner!r} did not become {role.value}")
            with self._changed:
                self._changed.wait(0.05)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Replica:
        """Start competing (a thread) and the deadline watchdog (another)."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._run, name=f"grafos-replica-{self.owner}", daemon=True
            )
            self._watchdog = threading.Thread(
                target=self._watch, name=f"grafos-replica-watchdog-{self.owner}", daemon=True
            )
        self._thread.start()
        self._watchdog.start()
        return self

    def close(self) -> None:
        """Stop competing; a leader closes its scheduler and resigns, so a standby
        takes over at once instead of waiting for the row to lapse."""
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._watchdog):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=self.leader_ttl + 5)
        with self._lock:
            leading, self._leading = self._leading, None
        if leading is not None:
            self._close_scheduler(leading)
            if not leading.lost or leading.stale is not None:
                try:
                    self._store.resign_leadership(leading.epoch, self.owner)
                except SchedulerError:
                    _log.warning("could not resign leadership epoch %d", leading.epoch)
        self._store.close()

    def __enter__(self) -> Replica:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the competition -------------------------------------------------------------

    def _run(self) -> None:
        interval = self.leader_ttl / 3
        while not self._stop.is_set():
            with self._lock:
                leading = self._leading
            try:
                pause = self._compete() if leading is None else self._renew(leading, interval)
            except Exception:
                _log.exception("replica %s: leadership round failed", self.owner)
                pause = min(interval, 0.25)
            self._wake.wait(pause)
            self._wake.clear()

    def _compete(self) -> float:
        """One standby round; returns how long to wait before the next."""
        poll = self.leader_ttl / 3
        try:
            row = self._store.leader()
        except SchedulerError as exc:
            _log.warning("replica %s cannot read the leadership: %s", self.owner, exc)
            return min(poll, 0.25)
        with self._changed:
            self._known_epoch = row.epoch
            self._known_url = row.url if row.live else None
            self._changed.notify_all()
        if row.live:
            # Wake just after it lapses: a dead leader's successor should not dawdle.
            return max(0.01, min(poll, row.expires_in + 0.01))
        started = self._monotonic()
        epoch = self._store.take_leadership(
            self.owner, self.advertise_url, self.leader_ttl, wall=self._wall()
        )
        if epoch is None:
            return 0.01  # another replica won; read who it is
        self._lead(epoch, started)
        return 0.0

    def _lead(self, epoch: int, started: float) -> None:
        leading = _Leading(epoch, None, started + self.leader_ttl * (1 - STEP_DOWN_MARGIN))
        with self._changed:
            self._leading = leading
            self._known_epoch = epoch
            self._known_url = self.advertise_url
        # Restoring may take longer than a renewal interval: it runs on its own thread
        # while this one keeps renewing. The replica acts as leader once it is done.
        threading.Thread(
            target=self._restore, args=(leading,), name=f"grafos-restore-{epoch}", daemon=True
        ).start()

    def _restore(self, leading: _Leading) -> None:
        epoch = leading.epoch
        fenced = self._store.fenced(
            epoch,
            self.owner,
            on_lost=self._on_lost,
            alive=lambda: self._still_leader(epoch),
            on_stale=self._on_stale,
        )
        try:
            scheduler = self._make_scheduler(fenced)
        except Exception:
            _log.exception("replica %s won epoch %d but could not restore", self.owner, epoch)
            with self._changed:
                if self._leading is leading:
                    self._leading = None
                    leading.lost = True
                self._changed.notify_all()
            self._resign_quietly(epoch)
            self._wake.set()
            return
        with self._changed:
            current = self._leading is leading and not leading.lost
            if current:
                leading.scheduler = scheduler
                self.elections_won += 1
            self._changed.notify_all()
        if not current:
            scheduler.close()
            return
        _log.info(
            "replica %s leads epoch %d at %s",
            self.owner,
            epoch,
            self.advertise_url,
            extra={"event": "leader_elected", "epoch": epoch},
        )

    def _renew(self, leading: _Leading, interval: float) -> float:
        if not self._still_leader(leading.epoch):
            self._step_down(leading, "its leadership ended (fenced or past its own deadline)")
            return 0.0
        started = self._monotonic()
        try:
            renewed = self._store.renew_leadership(leading.epoch, self.owner, self.leader_ttl)
        except SchedulerError as exc:
            _log.warning("replica %s could not renew epoch %d: %s", self.owner, leading.epoch, exc)
            return min(interval / 3, 0.1)  # try again soon; the deadline still stands
        if not renewed:
            self._step_down(leading, "the database refused its renewal")
            return 0.0
        with self._lock:
            current = self._leading is leading and not leading.lost
            if current:
                leading.deadline = max(
                    leading.deadline, started + self.leader_ttl * (1 - STEP_DOWN_MARGIN)
                )
        if not current:
            # Stepped down while the renewal was in flight: let a standby have it now.
            self._resign_quietly(leading.epoch)
        return max(0.0, started + interval - self._monotonic())

    def _on_lost(self, epoch: int) -> None:
        # Called inside a refused write, from any thread: flag it, never block here.
        self._stop_acting(epoch, refused=True)

    def _on_stale(self, epoch: int, why: str) -> None:
        # A COMMIT with no answer, or a store ahead of memory: every later write of
        # this scheduler would be computed from state the database no longer holds.
        # Stop acting now; the next leader (maybe this replica) restores afresh.
        self._stop_acting(epoch, stale=why)

    def _stop_acting(self, epoch: int, *, refused: bool = False, stale: str | None = None) -> None:
        """Flag the leadership of ``epoch`` lost (and why memory is stale, if it is);
        the competing thread or the watchdog steps down. Never blocks."""
        with self._changed:
            if refused:
                self.refused_writes += 1
            leading = self._leading
            if leading is not None and leading.epoch == epoch:
                leading.lost = True
                if leading.stale is None:
                    leading.stale = stale
            self._changed.notify_all()
        self._wake.set()

    def _watch(self) -> None:
        """Step down at the deadline even while the competing thread is stuck on a
        database that does not answer."""
        while not self._stop.wait(min(0.05, self.leader_ttl / 20)):
            with self._lock:
                leading = self._leading
                overdue = leading is not None and not self._acting(leading)
            if overdue and leading is not None:
                threading.Thread(
                    target=self._step_down,
                    args=(leading, "its own deadline passed before a renewal got through"),
                    daemon=True,
                ).start()

    def _step_down(self, leading: _Leading, why: str) -> None:
        with self._changed:
            if self._leading is not leading:
                return  # someone stepped down already
            self._leading = None
            leading.lost = True
            self.step_downs += 1
            self._known_url = None
            self._changed.notify_all()
        _log.warning(
            "replica %s steps down from epoch %d: %s",
            self.owner,
            leading.epoch,
            leading.stale or why,  # a stale memory is the reason, whoever noticed
            extra={"event": "leader_stepped_down", "epoch": leading.epoch},
        )
        self._close_scheduler(leading)
        if leading.stale is not None:
            # Its epoch is still live in the database: give it up rather than make
            # every replica wait for it to lapse.
            self._resign_quietly(leading.epoch)
        self._wake.set()

    @staticmethod
    def _close_scheduler(leading: _Leading) -> None:
        scheduler = leading.scheduler
        if scheduler is not None:
            try:
                scheduler.close()
            except Exception:
                _log.exception("closing the scheduler of epoch %d failed", leading.epoch)

    def _resign_quietly(self, epoch: int) -> None:
        with contextlib.suppress(SchedulerError):
            self._store.resign_leadership(epoch, self.owner)

    def __repr__(self) -> str:
        status = self.status()
        return f"Replica({self.owner!r}, {status.role.value}, epoch={status.epoch})"
