"""``WorkerAgent``: a remote worker's side of a lease.

The agent acquires a lease (waiting while its ticket is pending), renews it in the
background at a third of the TTL, and is the pipeline's ``CheckpointFlushObserver``:
the observer only counts flushes in memory and wakes the renewer, so the scheduler
hears of a flush within one round trip and defers a preemption while it runs.

Stopping is cooperative. :meth:`WorkerAgent.run` checks for a stop only between
records and between checkpoints, so a flush is never cut in half. When preemption is
requested it stops there, optionally takes a final checkpoint and releases the lease.
When the lease is lost (410, or no renewal got through before the lease's expiry), it
stops at once; the checkpoint store's fencing makes any late commit harmless.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from grafos_pipeline import Checkpoint, Pipeline, StaleFencingToken

from ._client import LeaseGone, SchedulerClient, ServiceError, ServiceUnavailable, TokenConflict
from ._models import LeaseView

__all__ = ["RunOutcome", "RunResult", "WorkerAgent"]

logger = logging.getLogger("grafos_scheduler.agent")

CHECKPOINT_IN_PROGRESS = "checkpoint_in_progress"


class RunOutcome(enum.Enum):
    FINISHED = "finished"  # the input is done, the last checkpoint committed, lease released
    PREEMPTED = "preempted"  # stopped at a safe point on request, lease released
    LOST = "lost"  # the lease was lost (expired, fenced, preempted at once): stopped at once


@attrs.frozen
class RunResult:
    outcome: RunOutcome
    lease_id: int
    fencing_token: int
    position: int  # records consumed when the run stopped
    checkpoints: int  # checkpoints committed during this run
    detail: str = ""  # why it stopped, for people


class WorkerAgent:
    """Holds one lease at a time for ``job`` and runs pipelines under it.

    ``renew_interval`` defaults to a third of the TTL. The agent is the observer for the
    pipelines it runs: ``on_flush_start``/``on_flush_complete`` never block and never
    raise (a counter under a lock, and an event set).
    """

    def __init__(
        self,
        client: SchedulerClient,
        job: str,
        *,
        slots: int = 1,
        ttl: float = 10.0,
        priority: int = 0,
        poll_interval: float = 0.2,
        renew_interval: float | None = None,
    ) -> None:
        self.client = client
        self.job = job
        self.slots = slots
        self.ttl = ttl
        self.priority = priority
        self.poll_interval = poll_interval
        self.renew_interval = ttl / 3 if renew_interval is None else renew_interval
        self._flush_lock = threading.Lock()
        self._flushes = 0
        self._wake = threading.Event()
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lease: LeaseView | None = None
        self.preemption_requested = threading.Event()
        self.lost = threading.Event()
        self.lost_reason = ""
        self.renewals = 0
        # Monotonic time by which the lease has surely expired if no renewal got through.
        self._local_deadline = 0.0

    # -- CheckpointFlushObserver --------------------------------------------------------

    def on_flush_start(self, lease_id: int) -> None:
        with self._flush_lock:
            self._flushes += 1
        self._wake.set()  # report the flush now, not at the next periodic renewal

    def on_flush_complete(self, lease_id: int) -> None:
        with self._flush_lock:
            self._flushes = max(0, self._flushes - 1)
        self._wake.set()  # a deferred preemption can go ahead as soon as we say so

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
    def should_stop(self) -> bool:
        return self.lost.is_set() or self.preemption_requested.is_set()

    def acquire(self, timeout: float | None = None) -> LeaseView:
        """Acquire a lease, polling while the ticket is pending, and start renewing it.

        Raises ``TimeoutError`` if no lease is granted within ``timeout`` seconds
        (the ticket stays queued on the server), and :class:`ServiceError` if refused.
        """
        if self._renewer is not None:
            raise RuntimeError(f"the agent for job {self.job!r} already holds a lease")
        give_up = None if timeout is None else time.monotonic() + timeout
        result = self.client.acquire(
            self.job, slots=self.slots, ttl=self.ttl, priority=self.priority
        )
        while result.status == "pending":
            assert result.ticket is not None
            if give_up is not None and time.monotonic() >= give_up:
                raise TimeoutError(
                    f"job {self.job!r}: ticket {result.ticket.ticket_id} still pending "
                    f"after {timeout} s"
                )
            time.sleep(self.poll_interval)
            try:
                result = self.client.poll(result.ticket.ticket_id)
            except ServiceUnavailable:
                continue  # a blip: the ticket is still queued on the server
        assert result.lease is not None
        self._start(result.lease)
        return result.lease

    def _start(self, lease: LeaseView) -> None:
        self.lease = lease
        self.preemption_requested.clear()
        self.lost.clear()
        self.lost_reason = ""
        self._stop_renewing.clear()
        self._local_deadline = time.monotonic() + lease.expires_in
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
            target=self._renew_loop, name=f"renew-{self.job}", daemon=True
        )
        self._renewer.start()

    def _renew_loop(self) -> None:
        lease = self.lease
        assert lease is not None
        next_due = time.monotonic() + self.renew_interval
        min_gap = min(0.05, self.renew_interval)
        while not self._stop_renewing.is_set():
            self._wake.wait(timeout=max(0.0, next_due - time.monotonic()))
            if self._stop_renewing.is_set():
                return
            self._wake.clear()
            sent = time.monotonic()
            try:
                answer = self.client.renew(lease.lease_id, lease.fencing_token, self.reasons())
            except (LeaseGone, TokenConflict) as exc:
                self._mark_lost(f"renewal refused: {exc.message}")
                return
            except ServiceError as exc:
                if time.monotonic() >= self._local_deadline:
                    self._mark_lost(f"no renewal got through before expiry: {exc}")
                    return
                # Retry soon, but within the TTL we still hold.
                next_due = time.monotonic() + min(self.renew_interval, 0.25)
                continue
            self.renewals += 1
            self._local_deadline = sent + answer.expires_in
            if answer.preemption_requested and not self.preemption_requested.is_set():
                logger.info(
                    "preemption requested",
                    extra={
                        "event": "preemption_requested",
                        "lease_id": lease.lease_id,
                        "job": self.job,
                        "cause": answer.preemption_cause,
                        "deadline_in": answer.preemption_deadline_in,
                    },
                )
                self.preemption_requested.set()
            next_due = max(sent + min_gap, time.monotonic() + self.renew_interval)
            # Woken by a flush: come back after the gap, not a whole interval later.
            if self._wake.is_set():
                next_due = sent + min_gap

    def _mark_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        lease = self.lease
        logger.warning(
            "lease lost",
            extra={
                "event": "lease_lost",
                "lease_id": None if lease is None else lease.lease_id,
                "job": self.job,
                "reason": reason,
            },
        )

    def _stop_renewer(self) -> None:
        self._stop_renewing.set()
        self._wake.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=10)
        self._renewer = None

    def release(self) -> LeaseView | None:
        """Stop renewing and release the lease; None if it had already ended."""
        self._stop_renewer()
        lease, self.lease = self.lease, None
        if lease is None:
            return None
        try:
            released = self.client.release(lease.lease_id)
        except LeaseGone:
            return None
        logger.info(
            "lease released",
            extra={"event": "lease_released", "lease_id": lease.lease_id, "job": self.job},
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
        records: Sequence[Any],
        *,
        checkpoint_every: int,
        final_checkpoint: bool = True,
        on_progress: Callable[[int], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
    ) -> RunResult:
        """Run ``pipeline`` over ``records`` under the held lease, and end the lease.

        The pipeline is wired to this agent (observer, lease id, fencing token) and
        resumed from its newest checkpoint (which fences older holders out) before the
        first record. It checkpoints every ``checkpoint_every`` records and at the end.
        Use a fresh pipeline object per lease: a lost run leaves in-memory state that
        is ahead of its last checkpoint.
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

    def _run(
        self,
        pipeline: Pipeline,
        records: Sequence[Any],
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

        def result(outcome: RunOutcome, detail: str) -> RunResult:
            return RunResult(outcome, lease_id, token, pipeline.position, committed, detail)

        try:
            restored = pipeline.resume()
        except StaleFencingToken as exc:
            self.abandon()
            return result(RunOutcome.LOST, f"a newer holder fenced the store: {exc}")
        saved_at = -1 if restored is None else restored.position
        while pipeline.position < len(records):
            if self.lost.is_set():
                # Stop at once: nothing more is committed under a lease we no longer hold.
                self.abandon()
                return result(RunOutcome.LOST, self.lost_reason)
            if self.preemption_requested.is_set():
                wanted = final_checkpoint and pipeline.position > saved_at
                if wanted and self._checkpoint(pipeline, on_checkpoint) is not None:
                    committed += 1
                if self.lost.is_set():
                    self.abandon()
                    return result(RunOutcome.LOST, self.lost_reason)
                self.release()
                return result(RunOutcome.PREEMPTED, "preemption requested")
            pipeline.process([records[pipeline.position]])
            if on_progress is not None:
                on_progress(pipeline.position)
            if pipeline.position % checkpoint_every == 0 or pipeline.position == len(records):
                checkpoint = self._checkpoint(pipeline, on_checkpoint)
                if checkpoint is None:
                    self.abandon()
                    return result(RunOutcome.LOST, self.lost_reason)
                committed += 1
                saved_at = checkpoint.position
        if pipeline.position > saved_at:  # empty input, or resumed at the end
            if self._checkpoint(pipeline, on_checkpoint) is None:
                self.abandon()
                return result(RunOutcome.LOST, self.lost_reason)
            committed += 1
        self.release()
        return result(RunOutcome.FINISHED, "input done")

    def _checkpoint(
        self, pipeline: Pipeline, on_checkpoint: Callable[[Checkpoint], None] | None
    ) -> Checkpoint | None:
        """Commit one checkpoint; None (and the lease marked lost) if refused."""
        try:
            checkpoint = pipeline.checkpoint()
        except StaleFencingToken as exc:
            self._mark_lost(f"checkpoint refused by fencing: {exc}")
            return None
        if on_checkpoint is not None:
            on_checkpoint(checkpoint)
        return checkpoint
