"""``WorkerAgent``: a remote worker's side of a lease.

The agent acquires a lease (waiting while its ticket is pending), renews it in the
background at a third of the TTL, and is the pipeline's ``CheckpointFlushObserver``:
the observer only counts flushes in memory and wakes the renewer, so the scheduler
hears of a flush within one round trip and defers a preemption while it runs.

Stopping is cooperative. :meth:`WorkerAgent.run` checks for a stop only between
records and between checkpoints, so a flush is never cut in half. When preemption is
requested it stops there, optionally takes a final checkpoint and releases the lease,
reporting the work done since its last checkpoint (0 after a final one). A platform
notice (SIGTERM, an EC2 or GCE preemption notice: ``_notices.py``) stops it the same
way. When the lease is lost (410, the watch says it ended, or no renewal got through
before the lease's expiry), it stops at once; the checkpoint store's fencing makes any
late commit harmless.

The agent hears of a preemption request through one long poll of ``GET /v1/watch``
(``_watch.py``) within a round trip, and through its renewals as before.

The agent keeps its own deadline for the lease: the time a renewal was *sent* plus the
TTL the server answered with, which is never later than the server's expiry. The run
loop checks it before every record and before every checkpoint (never inside a flush),
so a worker cut off from the server (a partition, a paused server) stops committing
when its lease runs out, without waiting for an HTTP call to fail; and each renewal's
HTTP timeout is capped at the time left on the lease.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import attrs

from grafos_pipeline import Checkpoint, Pipeline, StaleFencingToken

from .._domain._errors import SchedulerError
from .._domain._preemption import NonPreemptibleReason
from .._remote._client import (
    LeaseGone,
    NotFound,
    RequestRejected,
    SchedulerClient,
    ServiceError,
    ServiceUnavailable,
    TokenConflict,
)
from .._remote._notices import NoticeSource, PlatformNotice
from .._remote._watch import LeaseWatch
from .._wire._models import LeaseView, WatchEvent

__all__ = ["RunOutcome", "RunResult", "StopRequested", "WorkerAgent"]

logger = logging.getLogger("grafos_scheduler.agent")

CHECKPOINT_IN_PROGRESS = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS.value


class RunOutcome(enum.Enum):
    FINISHED = "finished"  # the input is done, the last checkpoint committed, lease released
    PREEMPTED = "preempted"  # stopped at a safe point on request, lease released
    LOST = "lost"  # the lease was lost (expired, fenced, preempted at once): stopped at once
    STOPPED = "stopped"  # a platform notice: stopped at a safe point, lease released


class StopRequested(SchedulerError):
    """A platform notice arrived while the agent waited for a lease; it withdrew the ticket."""


@attrs.frozen
class RunResult:
    outcome: RunOutcome
    lease_id: int
    fencing_token: int
    position: int  # records consumed when the run stopped
    checkpoints: int  # checkpoints committed during this run
    detail: str = ""  # why it stopped, for people
    # Work done since the last completed checkpoint, which a resume does again: records
    # and the seconds spent on them (both 0 after a final checkpoint).
    work_lost_records: int = 0
    work_lost_seconds: float = 0.0


class _Generation:
    """One lease's renewal state, owned by that lease's renew thread.

    Each lease gets a fresh one, so a renew thread left over from an earlier lease (one
    that did not stop in time) can only ever touch its own lease's flags.
    """

    def __init__(self, lease: LeaseView, deadline: float) -> None:
        self.lease = lease
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.lost = threading.Event()
        self.preemption_requested = threading.Event()
        self.lost_reason = ""
        self.last_error = ""  # the renewer's, for the reason a lease was lost
        self.deadline = deadline  # monotonic; see WorkerAgent.local_deadline


class WorkerAgent:
    """Holds one lease at a time for ``job`` and runs pipelines under it.

    ``renew_interval`` defaults to a third of the TTL; renewals are never closer together
    than ``min_gap`` seconds (a burst of flushes does not become a burst of requests).
    The agent is the observer for the pipelines it runs: ``on_flush_start`` and
    ``on_flush_complete`` never block and never raise (a counter under a lock, and an
    event set).

    ``client`` is a :class:`SchedulerClient`, or the replicas' base URLs (a list, or a
    comma-separated string) with ``token``, from which the agent makes one.

    ``lost`` and ``preemption_requested`` are the current lease's events (fresh ones for
    each lease): wait on them to learn that :meth:`run` is stopping. ``stop_requested``
    and ``notice`` are the agent's own: a platform notice (from ``notices``, started by
    the first :meth:`acquire`, or given to :meth:`request_stop`) stops the run at the
    next safe point and keeps the agent from acquiring again.

    ``grace`` asks the server for a grace window at acquire: a preemption then waits for
    the final checkpoint and release instead of ending the lease at once. ``watch``
    keeps one long poll of ``GET /v1/watch`` open while a lease is held, so a request
    to preempt arrives within a round trip rather than at the next renewal.

    A known window, inherent to reporting over the network: a flush starts locally, and
    until the renewal that reports it reaches the server (the renewer is woken at once to
    send it, to keep the window short), the server does not know of it. A preemption
    requested in that window is carried out at once: the lease ends (PREEMPTED), the
    flush still commits under the old fencing token, and the run then stops as LOST.
    This is safe: the next holder resumes with a higher token, which fences the old
    one's later commits out of the store.
    """

    #: How long stopping waits for a renew thread that is inside an HTTP call.
    stop_timeout = 10.0

    def __init__(
        self,
        client: SchedulerClient | str | Sequence[str],
        job: str,
        *,
        token: str | None = None,
        slots: int = 1,
        ttl: float = 10.0,
        priority: int = 0,
        poll_interval: float = 0.2,
        renew_interval: float | None = None,
        min_gap: float = 0.05,
        grace: float = 0.0,
        notices: Sequence[NoticeSource] = (),
        watch: bool = True,
        watch_timeout: float = 10.0,
    ) -> None:
        if not isinstance(client, SchedulerClient):
            # Base URLs (a list, or comma-separated): the replicas, found by failover.
            if token is None:
                raise SchedulerError("a WorkerAgent given base URLs needs token=")
            client = SchedulerClient(client, token)
        self.client = client
        self.job = job
        self.slots = slots
        self.ttl = ttl
        self.priority = priority
        self.poll_interval = poll_interval
        self.renew_interval = ttl / 3 if renew_interval is None else renew_interval
        self.min_gap = min(min_gap, self.renew_interval)
        self._flush_lock = threading.Lock()
        self._flushes = 0
        self._renewer: threading.Thread | None = None
        self._gen: _Generation | None = None
        self.lease: LeaseView | None = None
        self.preemption_requested = threading.Event()
        self.lost = threading.Event()
        self.renewals = 0
        self.grace = grace
        self.notice: PlatformNotice | None = None
        self.stop_requested = threading.Event()
        self._notices = list(notices)
        self._notices_started = False
        self.watch = LeaseWatch(client, self._on_watch_event, poll_timeout=watch_timeout)
        self.watch_enabled = watch
        # time.monotonic() when the current lease's preemption request reached the agent,
        # and by which path ("watch" or "renewal"); for logs, tests and benchmarks.
        self.preemption_heard_at: float | None = None
        self.preemption_heard_by = ""
        # The running pipeline's work since its last checkpoint; renewals report its age
        # so that the server counts a forced end's loss from it.
        self._work: _WorkSinceCheckpoint | None = None
        self._send_checkpoint_age = True

    # -- CheckpointFlushObserver --------------------------------------------------------

    def on_flush_start(self, lease_id: int) -> None:
        with self._flush_lock:
            self._flushes += 1
        gen = self._gen
        if gen is not None:
            gen.wake.set()  # report the flush now, not at the next periodic renewal

    def on_flush_complete(self, lease_id: int) -> None:
        with self._flush_lock:
            self._flushes = max(0, self._flushes - 1)
        gen = self._gen
        if gen is not None:
            gen.wake.set()  # a deferred preemption can go ahead as soon as we say so

    @property
    def flushes_in_flight(self) -> int:
        with self._flush_lock:
            return self._flushes

    def reasons(self) -> list[str]:
        """The in-flight non-preemptible reasons to report in the next renewal."""
        return [CHECKPOINT_IN_PROGRESS] if self.flushes_in_flight else []

    # -- the lease --------------------------------------------------------------------

    @property
    def lease_id(self) -> int:
        if self.lease is None:
            raise RuntimeError(f"the agent for job {self.job!r} holds no lease")
        return int(self.lease.lease_id, 16)

    @property
    def fencing_token(self) -> int:
        if self.lease is None:
            raise RuntimeError(f"the agent for job {self.job!r} holds no lease")
        return self.lease.fencing_token

    @property
    def lost_reason(self) -> str:
        gen = self._gen
        return "" if gen is None else gen.lost_reason

    @property
    def local_deadline(self) -> float:
        """Monotonic time by which the lease has surely expired if no renewal got through."""
        gen = self._gen
        return 0.0 if gen is None else gen.deadline

    @property
    def should_stop(self) -> bool:
        return (
            self.lost.is_set() or self.preemption_requested.is_set() or self.stop_requested.is_set()
        )

    # -- platform notices and the watch -----------------------------------------------

    def request_stop(self, notice: PlatformNotice) -> None:
        """Stop at the next safe point: final checkpoint, release, no new lease.

        Called by the notice sources (from their threads); never blocks. The first
        notice is the one kept.
        """
        if self.notice is None:
            self.notice = notice
            logger.warning(
                "platform notice: stopping at the next safe point",
                extra={
                    "event": "platform_notice",
                    "job": self.job,
                    "kind": notice.kind.value,
                    "detail": notice.detail,
                    "deadline_in": notice.deadline_in,
                },
            )
        self.stop_requested.set()

    def start_notices(self) -> None:
        """Start the notice sources (once; :meth:`acquire` calls it). Main thread for signals."""
        if self._notices_started:
            return
        self._notices_started = True
        for source in self._notices:
            source.start(self.request_stop)

    def close(self) -> None:
        """Stop the notice sources and the watch; release a lease still held."""
        for source in self._notices:
            source.stop()
        self._notices_started = False
        self.watch.close()
        if self.lease is not None:
            try:
                self.release()
            except ServiceError:
                self.abandon()

    def __enter__(self) -> WorkerAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_watch_event(self, event: WatchEvent) -> None:
        gen = self._gen
        if gen is None or gen.stop.is_set() or event.lease_id != gen.lease.lease_id:
            return  # another lease of ours, or one we have already let go of
        if event.kind == "preemption_requested":
            self._preemption_heard(gen, "watch", event.cause, event.deadline_in)
        elif event.kind == "lease_ended":
            how = _ENDED_HOW.get(event.outcome or "", event.outcome or event.state)
            self._mark_lost(gen, f"the lease ended on the server: {how}{gen.last_error}")

    def _preemption_heard(
        self, gen: _Generation, path: str, cause: str | None, deadline_in: float | None
    ) -> None:
        if gen.preemption_requested.is_set():
            return
        self.preemption_heard_at = time.monotonic()
        self.preemption_heard_by = path
        logger.info(
            "preemption requested",
            extra={
                "event": "preemption_requested",
                "lease_id": gen.lease.lease_id,
                "job": self.job,
                "cause": cause,
                "deadline_in": deadline_in,
                "heard_by": path,
            },
        )
        gen.preemption_requested.set()

    def _check_expiry(self) -> bool:
        """True (and the lease marked lost) once the local deadline has passed."""
        gen = self._gen
        if gen is None or gen.lost.is_set():
            return gen is not None
        if time.monotonic() >= gen.deadline:
            self._mark_lost(gen, "the lease expired: no renewal got through in time")
            return True
        return False

    def acquire(self, timeout: float | None = None) -> LeaseView:
        """Acquire a lease, polling while the ticket is pending, and start renewing it.

        Raises ``TimeoutError`` if no lease is granted within ``timeout`` seconds, and
        :class:`ServiceError` if refused. Whenever it gives up waiting (the timeout, an
        error, an interrupt) it cancels its ticket on the server, so nothing is left
        queued to become a lease that nobody renews; if the ticket was granted in the
        meantime, it releases that lease. A retry can then acquire again at once.
        """
        if self._renewer is not None:
            raise RuntimeError(f"the agent for job {self.job!r} already holds a lease")
        self.start_notices()
        if self.stop_requested.is_set():
            raise StopRequested(f"job {self.job!r}: {self._notice_text()}; not acquiring")
        give_up = None if timeout is None else time.monotonic() + timeout
        if self.watch_enabled:
            self.watch.prime()  # a cursor from before the grant: no event is missed
        sent = time.monotonic()
        result = self.client.acquire(
            self.job, slots=self.slots, ttl=self.ttl, priority=self.priority, grace=self.grace
        )
        if result.status == "pending":
            assert result.ticket is not None
            ticket_id = result.ticket.ticket_id
            try:
                while result.status == "pending":
                    if give_up is not None and time.monotonic() >= give_up:
                        raise TimeoutError(
                            f"job {self.job!r}: ticket {ticket_id} still pending after "
                            f"{timeout} s; the agent withdraws it"
                        )
                    if self.stop_requested.wait(self.poll_interval):
                        raise StopRequested(
                            f"job {self.job!r}: {self._notice_text()} while ticket "
                            f"{ticket_id} was pending; the agent withdraws it"
                        )
                    try:
                        sent = time.monotonic()
                        result = self.client.poll(ticket_id)
                    except ServiceUnavailable:
                        continue  # a blip: the ticket is still queued on the server
            except BaseException:
                self._withdraw(ticket_id)
                raise
        assert result.lease is not None
        self._start(result.lease, sent)
        return result.lease

    def _notice_text(self) -> str:
        return "a stop was requested" if self.notice is None else self.notice.describe()

    def _withdraw(self, ticket_id: str) -> None:
        """Cancel a ticket we stopped waiting for; release its lease if it was granted.

        Best effort, and it never raises: the caller is already failing. A ticket that
        cannot be cancelled (the server unreachable) is logged.
        """
        fields = {"ticket_id": ticket_id, "job": self.job}
        try:
            try:
                self.client.cancel_ticket(ticket_id)
            except TokenConflict as exc:
                if exc.code != "ticket_granted":
                    raise
                # Granted between our last poll and the cancel: give the lease back.
                polled = self.client.poll(ticket_id)
                if polled.lease is not None:
                    self.client.release(polled.lease.lease_id)
                logger.info(
                    "ticket granted while withdrawn; lease released",
                    extra={"event": "ticket_lease_released", **fields},
                )
                return
        except (NotFound, LeaseGone):
            return  # cancelled, or its lease ended, already
        except Exception as exc:
            logger.warning(
                "could not withdraw the ticket; it stays queued",
                extra={"event": "ticket_withdraw_failed", "error": repr(exc)[:200], **fields},
            )
            return
        logger.info("ticket withdrawn", extra={"event": "ticket_cancelled", **fields})

    def _start(self, lease: LeaseView, sent: float) -> None:
        # A granted lease is ACTIVE, so it has an expires_in; an ended one counts as lapsed.
        gen = _Generation(lease, sent + (lease.expires_in or 0.0))
        self.lease = lease
        self._gen = gen
        self.preemption_requested = gen.preemption_requested
        self.lost = gen.lost
        self.preemption_heard_at = None
        self.preemption_heard_by = ""
        logger.info(
            "lease acquired",
            extra={
                "event": "lease_acquired",
                "lease_id": lease.lease_id,
                "job": self.job,
                "fencing_token": lease.fencing_token,
            },
        )
        self._renewer = threading.Thread(
            target=self._renew_loop, args=(gen,), name=f"renew-{self.job}", daemon=True
        )
        self._renewer.start()
        if self.watch_enabled:
            self.watch.follow(lease.lease_id)

    def _renew_loop(self, gen: _Generation) -> None:
        lease = gen.lease
        next_due = time.monotonic() + self.renew_interval
        last_sent = -float("inf")
        gen.last_error = last_error = ""
        while not gen.stop.is_set():
            gen.wake.wait(timeout=max(0.0, next_due - time.monotonic()))
            if gen.stop.is_set():
                return
            # However often a flush wakes us, renewals stay min_gap apart.
            gap_left = last_sent + self.min_gap - time.monotonic()
            if gap_left > 0 and gen.stop.wait(gap_left):
                return
            gen.wake.clear()
            sent = last_sent = time.monotonic()
            remaining = gen.deadline - sent
            if remaining <= 0:
                self._mark_lost(gen, f"no renewal got through before the lease expired{last_error}")
                return
            # An answer after the lease ran out is no use: wait no longer than that.
            timeout = max(0.05, remaining - min(0.25, remaining / 4))
            work = self._work
            age = None if work is None or not self._send_checkpoint_age else work.age()
            try:
                # The renewals of every agent on this client share one request.
                answer = self.client.renew(
                    lease.lease_id,
                    lease.fencing_token,
                    self.reasons(),
                    timeout=timeout,
                    checkpoint_age=age,
                )
            except (LeaseGone, TokenConflict) as exc:
                self._mark_lost(gen, f"renewal refused: {exc.message}")
                return
            except RequestRejected as exc:
                if exc.field != "checkpoint_age" or not self._send_checkpoint_age:
                    raise
                # A server from before work-lost accounting: renew without the age.
                self._send_checkpoint_age = False
                next_due = time.monotonic()
                continue
            except Exception as exc:
                # Unreachable, a 5xx, or an answer we could not read: retry soon, within
                # the TTL we still hold; the lease is lost once its deadline passes.
                gen.last_error = last_error = f" (last error: {exc!r})"
                if time.monotonic() >= gen.deadline:
                    self._mark_lost(
                        gen, f"no renewal got through before the lease expired{last_error}"
                    )
                    return
                logger.warning(
                    "renewal failed",
                    extra={
                        "event": "renew_failed",
                        "lease_id": lease.lease_id,
                        "job": self.job,
                        "error": repr(exc)[:200],
                    },
                )
                next_due = min(time.monotonic() + min(self.renew_interval, 0.25), gen.deadline)
                continue
            if gen.stop.is_set():
                return
            self.renewals += 1
            gen.deadline = sent + answer.expires_in
            if answer.preemption_requested:
                self._preemption_heard(
                    gen, "renewal", answer.preemption_cause, answer.preemption_deadline_in
                )
            next_due = time.monotonic() + self.renew_interval
            # Woken by a flush meanwhile: come back after the gap, not an interval later.
            if gen.wake.is_set():
                next_due = sent + self.min_gap

    def _mark_lost(self, gen: _Generation, reason: str) -> None:
        if gen.lost.is_set():
            return
        gen.lost_reason = reason
        gen.lost.set()
        logger.warning(
            "lease %s of job %s lost: %s",
            gen.lease.lease_id,
            self.job,
            reason,
            extra={
                "event": "lease_lost",
                "lease_id": gen.lease.lease_id,
                "job": self.job,
                "reason": reason,
            },
        )

    def _stop_renewer(self) -> None:
        self.watch.unfollow()
        gen = self._gen
        if gen is not None:
            gen.stop.set()
            gen.wake.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=self.stop_timeout)
        self._renewer = None

    def release(
        self, *, work_lost_records: int | None = None, work_lost_seconds: float | None = None
    ) -> LeaseView | None:
        """Stop renewing and release the lease; None if it had already ended.

        ``work_lost_*`` report the work done since the last completed checkpoint (the
        release body); without them the release has no body.
        """
        self._stop_renewer()
        lease, self.lease = self.lease, None
        if lease is None:
            return None
        reported = work_lost_records is not None or work_lost_seconds is not None
        try:
            try:
                released = self.client.release(
                    lease.lease_id,
                    work_lost_records=work_lost_records,
                    work_lost_seconds=work_lost_seconds,
                )
            except RequestRejected:
                if not reported:
                    raise
                # A server from before work-lost reports takes no release body.
                released = self.client.release(lease.lease_id)
        except LeaseGone:
            return None
        logger.info(
            "lease released",
            extra={
                "event": "lease_released",
                "lease_id": lease.lease_id,
                "job": self.job,
                "work_lost_records": work_lost_records,
                "work_lost_seconds": work_lost_seconds,
            },
        )
        return released

    def abandon(self) -> None:
        """Stop renewing without telling the server (the lease is lost, or will expire)."""
        self._stop_renewer()
        self.lease = None

    # -- running a pipeline -----------------------------------------------------------

    def run(
        self,
        pipeline: Pipeline,
        records: Iterable[Any],
        *,
        checkpoint_every: int,
        final_checkpoint: bool = True,
        on_progress: Callable[[int], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> RunResult:
        """Run ``pipeline`` over ``records`` under the held lease, and end the lease.

        ``records`` is the whole input from its start (a sequence, or any iterable);
        the run skips to the resumed position. The pipeline is wired to this agent
        (observer, lease id, fencing token) and resumed from its newest checkpoint
        (which fences older holders out) before the first record. It checkpoints every
        ``checkpoint_every`` records and at the end. Use a fresh pipeline object per
        lease: a lost run leaves in-memory state that is ahead of its last checkpoint.
        """
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every {checkpoint_every!r} must be at least 1")
        try:
            return self._run(
                pipeline, records, checkpoint_every, final_checkpoint, on_progress, on_checkpoint
            )
        except BaseException:
            # A stage or the store failed (or we were interrupted): give the lease back
            # rather than keep renewing a lease nobody works under.
            try:
                self.release()
            except ServiceError:
                self.abandon()
            raise
        finally:
            self._work = None

    def _run(
        self,
        pipeline: Pipeline,
        records: Iterable[Any],
        checkpoint_every: int,
        final_checkpoint: bool,
        on_progress: Callable[[int], None] | None,
        on_checkpoint: Callable[[Checkpoint], None] | None,
    ) -> RunResult:
        lease_id, token = self.lease_id, self.fencing_token
        pipeline.observer = self
        pipeline.lease_id = lease_id
        pipeline.fencing_token = token
        committed = 0
        work = self._work = _WorkSinceCheckpoint(pipeline.position)

        def result(outcome: RunOutcome, detail: str) -> RunResult:
            lost, seconds = work.lost(pipeline.position)
            return RunResult(
                outcome, lease_id, token, pipeline.position, committed, detail, lost, seconds
            )

        def lost_run() -> RunResult:
            self.abandon()  # stop at once: nothing more is committed under a lost lease
            return result(RunOutcome.LOST, self.lost_reason)

        try:
            restored = pipeline.resume()
        except StaleFencingToken as exc:
            self.abandon()
            return result(RunOutcome.LOST, f"a newer holder fenced the store: {exc}")
        saved_at = -1 if restored is None else restored.position
        work.saved(pipeline.position)
        todo = _from_position(records, pipeline.position)
        while (record := next(todo, _END)) is not _END:
            if self._check_expiry():
                return lost_run()
            if self.preemption_requested.is_set() or self.stop_requested.is_set():
                wanted = final_checkpoint and pipeline.position > saved_at
                if wanted:
                    if self._checkpoint(pipeline, on_checkpoint) is None:
                        return lost_run()
                    committed += 1
                    work.saved(pipeline.position)
                if self._check_expiry():
                    return lost_run()
                lost, seconds = work.lost(pipeline.position)
                self.release(work_lost_records=lost, work_lost_seconds=seconds)
                if self.stop_requested.is_set():
                    return result(RunOutcome.STOPPED, self._notice_text())
                return result(RunOutcome.PREEMPTED, "preemption requested")
            pipeline.process([record])
            work.progressed()
            if on_progress is not None:
                on_progress(pipeline.position)
            if pipeline.position % checkpoint_every == 0:
                checkpoint = self._checkpoint(pipeline, on_checkpoint)
                if checkpoint is None:
                    return lost_run()
                committed += 1
                saved_at = checkpoint.position
                work.saved(saved_at)
        if pipeline.position > saved_at:  # the tail, or an empty input never checkpointed
            if self._checkpoint(pipeline, on_checkpoint) is None:
                return lost_run()
            committed += 1
            work.saved(pipeline.position)
        self.release(work_lost_records=0, work_lost_seconds=0.0)
        return result(RunOutcome.FINISHED, "input done")

    def _checkpoint(
        self, pipeline: Pipeline, on_checkpoint: Callable[[Checkpoint], None] | None
    ) -> Checkpoint | None:
        """Commit one checkpoint; None (and the lease marked lost) if refused or expired.

        The local deadline is checked here, before the flush starts, never during it.
        """
        if self._check_expiry():
            return None
        try:
            checkpoint = pipeline.checkpoint()
        except StaleFencingToken as exc:
            if self._gen is not None:
                self._mark_lost(self._gen, f"checkpoint refused by fencing: {exc}")
            return None
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)
        return checkpoint


_END = object()

# A watch's lease_ended outcome (the audit kind of the end), in words for the reason.
_ENDED_HOW = {
    "expire": "it expired",
    "fence": "an operator fenced it",
    "release": "it was released",
    "preemption_executed": "it was preempted",
    "preemption_forced": "its preemption was forced",
    "preemption_cooperative": "it was preempted after its release",
}


def _from_position(records: Iterable[Any], position: int) -> Iterator[Any]:
    """The input from ``position`` on: by index for a sequence, else by skipping."""
    if isinstance(records, Sequence):
        return (records[i] for i in range(position, len(records)))
    return islice(records, position, None)


class _WorkSinceCheckpoint:
    """Records processed since the last completed checkpoint, and the seconds they took.

    The seconds run from the checkpoint (or the resume) to the end of the last record
    processed: waiting at a safe point to stop is not work that a resume repeats.
    """

    def __init__(self, position: int) -> None:
        self.position = position
        self.saved_at = self.last_done = time.monotonic()

    def saved(self, position: int) -> None:
        self.position = position
        self.saved_at = self.last_done = time.monotonic()

    def progressed(self) -> None:
        self.last_done = time.monotonic()

    def age(self) -> float:
        """Seconds since the last completed checkpoint (or the resume)."""
        return max(0.0, time.monotonic() - self.saved_at)

    def lost(self, position: int) -> tuple[int, float]:
        records = max(0, position - self.position)
        return records, (self.last_done - self.saved_at) if records else 0.0
