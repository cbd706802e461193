"""``grafos-scheduler demo``: the whole story, end to end, checked at the end.

1. The service starts on an embedded SQLite store in a directory that the demo claims
   (see ``_directory``).
2. Low-priority worker *processes* run pipelines over a finite input, checkpointing every
   K records to a ``DirectoryCheckpointStore``. Their flushes take different times:
   "fast" (fsync only), "steady" (a short flush) and "slow-disk" (a flush longer than
   ``max_defer``); "graceful" asked for a grace window at acquire.
3. As soon as a slow-disk flush is in flight (and the service knows it), a high-priority
   job asks for every slot. The scheduler preempts the low-priority leases: at once when
   no flush is in flight, deferred while one is, forced at ``max_defer`` for the
   slow-disk flush, which outlasts it, and cooperatively for the graceful one, whose
   worker hears of it through its watch, checkpoints and releases, losing nothing.
4. The preempted jobs wait for a lease, then resume from their checkpoints with new
   leases and higher fencing tokens.
5. Verification (``_verification``) and the summary (``_summary``) follow; the exit
   status says whether it all held.

The parent runs the service in a thread; the workers are spawned processes
(``_worker``). Only public names of grafos_scheduler and grafos_pipeline are used.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from grafos_pipeline import DirectoryCheckpointStore, DirectorySink
from grafos_scheduler import (
    BackgroundServer,
    NonPreemptibleReason,
    Scheduler,
    SchedulerError,
    SqliteStore,
    TokenConfig,
    create_app,
)

from .._logging import JsonLogFormatter
from ._config import ROLES, URGENT, DemoConfig, WorkerSpec
from ._directory import claim_directory
from ._display import Display, JobView, make_console
from ._summary import summary_lines
from ._verification import verify
from ._worker import worker_main

__all__ = ["run_demo"]


def run_demo(config: DemoConfig) -> bool:
    """Run the demo; True when every check passed.

    Raises ``DemoDirectoryRefused`` before anything is written if ``config.directory``
    is not the demo's to use.
    """
    out = config.out or sys.stdout
    if config.directory is None:
        directory = claim_directory(tempfile.mkdtemp(prefix="grafos-demo-"))
    else:
        directory = claim_directory(config.directory)
    console = make_console(out)
    checkpoint_dir = directory / "checkpoints"

    low_jobs = [f"ingest-{i + 1}" for i in range(config.workers)]
    roles = {job: ROLES[i % len(ROLES)] for i, job in enumerate(low_jobs)}
    roles[URGENT] = "urgent"
    tokens = TokenConfig.generate([*low_jobs, URGENT])
    tokens.dump(directory / "tokens.toml")

    log_handler = logging.FileHandler(directory / "service.log", encoding="utf-8")
    log_handler.setFormatter(JsonLogFormatter())
    # The service logs to its file only, for this run; the caller's setup comes back after.
    service_logger = logging.getLogger("grafos_scheduler")
    saved_level, saved_propagate = service_logger.level, service_logger.propagate
    service_logger.addHandler(log_handler)
    service_logger.setLevel(logging.INFO)
    service_logger.propagate = False

    console.print(f"grafos demo in {directory}", soft_wrap=True)
    console.print(
        f"  {config.workers} low-priority jobs x {config.records} records, checkpoint every "
        f"{config.checkpoint_every} (slow-disk: {config.slow_checkpoint_every}, its flush "
        f"{config.slow_flush:g}s); then '{URGENT}' (priority 10) needs all "
        f"{config.capacity} slots; ttl {config.ttl}s, max_defer {config.max_defer}s",
        soft_wrap=True,
    )
    store = SqliteStore(directory / "scheduler.db")
    try:
        scheduler = Scheduler(config.capacity, store, max_defer=config.max_defer)
    except SchedulerError:
        store.close()
        raise
    ctx = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    try:
        scheduler.start()
        server = BackgroundServer(create_app(scheduler, tokens)).start()
        try:
            console.print(
                f"  service {server.url}  store {directory / 'scheduler.db'}  "
                f"log {directory / 'service.log'}",
                soft_wrap=True,
            )
            console.print(
                f"  dashboard {server.url}/ui  admin token {tokens.admin_token}\n",
                soft_wrap=True,
            )
            run = _Run(config, scheduler, server.url, tokens, roles, low_jobs, directory, ctx)
            with Display(console, list(run.views.values()), live=config.progress) as display:
                run.display = display
                ok_run = run.orchestrate(processes, checkpoint_dir)
        except BaseException:
            server.stop()
            raise
        if not config.keep:
            server.stop()
        verdicts = verify(
            config,
            scheduler,
            run.views,
            low_jobs,
            DirectoryCheckpointStore(checkpoint_dir),
            DirectorySink(directory / "output"),
        )
        summary = summary_lines(scheduler, run.views, display.started_wall)
        if config.keep:
            passed = _report(console, summary, verdicts, ok_run, directory)
            console.print(
                f"\n--keep: the service stays up; dashboard {server.url}/ui "
                f"(admin token {tokens.admin_token}). Ctrl+C stops it.",
                soft_wrap=True,
            )
            console.file.flush()  # on a pipe, the reader must see this before the wait
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            server.stop()
            return passed
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        scheduler.close()
        service_logger.removeHandler(log_handler)
        service_logger.setLevel(saved_level)
        service_logger.propagate = saved_propagate
        log_handler.close()

    return _report(console, summary, verdicts, ok_run, directory)


def _report(
    console: Any,
    summary: list[str],
    verdicts: list[tuple[bool, str]],
    ok_run: bool,
    directory: Path,
) -> bool:
    """Print the summary and the verdicts; True when every check passed."""
    console.print("")
    for line in summary:
        console.print(line, soft_wrap=True)
    console.print("verification:")
    passed = ok_run
    for ok, text in verdicts:
        passed = passed and ok
        console.print(f"  [{'ok' if ok else 'FAIL'}] {text}", soft_wrap=True)
    console.print(
        f"\n{'PASS' if passed else 'FAIL'}: demo directory {directory} "
        f"(try: grafos-scheduler audit verify --db {directory / 'scheduler.db'})",
        soft_wrap=True,
    )
    return passed


class _Run:
    """One run's worker processes and the loop that follows their events."""

    def __init__(
        self,
        config: DemoConfig,
        scheduler: Scheduler,
        url: str,
        tokens: TokenConfig,
        roles: dict[str, str],
        low_jobs: list[str],
        directory: Path,
        ctx: Any,
    ) -> None:
        self.config = config
        self.scheduler = scheduler
        self.url = url
        self.tokens = tokens
        self.roles = roles
        self.low_jobs = low_jobs
        self.directory = directory
        self.ctx = ctx
        self.views = {
            job: JobView(
                job, roles[job], config.urgent_records if job == URGENT else config.records
            )
            for job in [*low_jobs, URGENT]
        }
        self.lease_of: dict[str, str] = {}  # job -> its current lease id (hex)
        self.flush_started: dict[str, float] = {}  # job -> when its current flush began
        self.display: Display | None = None
        self.go_low: Any = None  # the low-priority jobs' start signal

    def spec(self, job: str, checkpoint_dir: Path) -> WorkerSpec:
        config = self.config
        role = self.roles[job]
        urgent = job == URGENT
        return WorkerSpec(
            job=job,
            role=role,
            url=self.url,
            token=self.tokens.worker_tokens[job],
            priority=10 if urgent else 1,
            slots=config.capacity if urgent else 1,
            records=config.urgent_records if urgent else config.records,
            checkpoint_every=config.slow_checkpoint_every
            if role == "slow-disk"
            else config.checkpoint_every,
            record_delay=config.record_delay,
            flush_delay={"steady": config.steady_flush, "slow-disk": config.slow_flush}.get(
                role, 0.0
            ),
            ttl=config.ttl,
            checkpoint_dir=str(checkpoint_dir),
            output_dir=str(checkpoint_dir.parent / "output"),
            log_dir=str(self.directory),
            grace=config.grace if role == "graceful" else 0.0,
        )

    def orchestrate(self, processes: list[Any], checkpoint_dir: Path) -> bool:
        """Start the workers, submit the urgent job at the right moment, follow every
        event to the end; False on a timeout or a worker's error."""
        assert self.display is not None
        display = self.display
        config = self.config
        events = self.ctx.Queue()
        go_urgent = self.ctx.Event()
        # The low-priority jobs start together, once every process is up (spawning
        # takes seconds on a loaded machine), so all four kinds are still running when
        # the urgent job arrives.
        go_low = self.go_low = self.ctx.Event()
        jobs = [*self.low_jobs, URGENT]
        for job in jobs:
            process = self.ctx.Process(
                target=worker_main,
                args=(
                    self.spec(job, checkpoint_dir),
                    events,
                    go_urgent if job == URGENT else go_low,
                ),
                name=f"grafos-demo-{job}",
                daemon=True,
            )
            process.start()
            processes.append(process)
        self.views[URGENT].status = "not submitted"

        deadline = time.monotonic() + config.timeout
        urgent_sent = False
        ok = True
        while not all(v.done or v.error for v in self.views.values()):
            if time.monotonic() > deadline:
                display.event(f"timed out after {config.timeout} s", milestone=True)
                self.report_stuck(display)
                ok = False
                break
            for job, process in zip(jobs, processes, strict=True):
                # Its last words may still be in the queue: judge only once that is empty.
                gone = not process.is_alive() and events.empty()
                view = self.views[job]
                if gone and not view.done and view.error is None:
                    view.error = f"worker process exited with {process.exitcode}"
                    display.event(f"{job}: {view.error}", milestone=True)
            try:
                message = events.get(timeout=0.1)
            except queue.Empty:
                message = None
            if message is not None:
                self.apply(message)
            if not urgent_sent and self.urgent_is_due():
                go_urgent.set()
                urgent_sent = True
                self.views[URGENT].status = "submitted"
                display.event(
                    f"{URGENT}: submitted (priority 10, {config.capacity} slots)", milestone=True
                )
            display.draw()
        # Drain what is left, so the last checkpoints and stops are counted.
        while True:
            try:
                self.apply(events.get(timeout=0.2))
            except queue.Empty:
                break
        display.draw(force=True)
        return ok and all(v.error is None for v in self.views.values())

    def urgent_is_due(self) -> bool:
        """Whether to submit the urgent job now.

        With a slow-disk worker: while its flush is in flight, the service holds its
        checkpoint marker, and more than max_defer of the flush is left, so that its
        preemption is deferred and then forced, every time. Without one: once
        ``start_urgent_at`` of the input is done.
        """
        config = self.config
        slow = [j for j in self.low_jobs if self.roles[j] == "slow-disk"]
        if not slow:
            done = sum(self.views[j].position for j in self.low_jobs)
            return done >= config.start_urgent_at * config.records * len(self.low_jobs)
        now = time.monotonic()
        for job in slow:
            started = self.flush_started.get(job)
            lease = self.lease_of.get(job)
            if started is None or lease is None or now - started > config.submit_window:
                continue
            try:
                reasons = self.scheduler.reasons(int(lease, 16))
            except SchedulerError:
                continue
            if NonPreemptibleReason.CHECKPOINT_IN_PROGRESS in reasons:
                return True
        # A slow-disk job that finished has no flush left to catch: go on without it.
        return all(self.views[j].done or self.views[j].error for j in slow)

    def report_stuck(self, display: Display) -> None:
        """Say where each unfinished job stands, so a timed-out run can be diagnosed."""
        for job, view in self.views.items():
            if view.done:
                continue
            display.event(
                f"{job}: still {view.status!r} at record {view.position}/{view.total}"
                + (f", error: {view.error}" if view.error else ""),
                milestone=True,
            )
            log = self.directory / f"worker-{job}.log"
            try:
                tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            except OSError:
                tail = ["(no log file)"]
            if not tail:
                tail = ["(the log is empty)"]
            for line in tail:
                display.event(f"    {job} log: {line}", milestone=True)

    def apply(self, message: tuple[Any, ...]) -> None:
        assert self.display is not None
        display = self.display
        kind, job = message[0], message[1]
        view = self.views[job]
        if kind == "progress":
            view.position = message[2]
            if view.status.startswith("lease") or view.status in ("resumed", "flushing"):
                view.status = "running"
        elif kind == "ready":
            if job == URGENT:
                return
            view.status = "ready"
            if self.go_low is not None and all(
                self.views[j].status == "ready" for j in self.low_jobs
            ):
                self.go_low.set()
        elif kind == "waiting":
            view.status = "waiting for a lease"
        elif kind == "lease":
            view.leases += 1
            view.tokens.append(message[3])
            view.status = "running"
            self.lease_of[job] = message[2]
            self.flush_started.pop(job, None)
            what = "granted" if view.leases == 1 else "resumed with a new lease"
            display.event(
                f"{job}: lease {message[2][:8]}.. {what}, fencing token {message[3]}",
                milestone=True,
            )
        elif kind == "checkpoint":
            view.checkpoints += 1
            self.flush_started.pop(job, None)
            if view.status == "flushing":
                view.status = "running"
        elif kind == "flush":
            view.status = "flushing"
            self.flush_started[job] = time.monotonic()
        elif kind == "stopped":
            outcome, position, detail = message[2], message[3], message[4]
            view.position = position
            view.stops.append(outcome)
            view.status = outcome
            self.flush_started.pop(job, None)
            if outcome != "finished":
                display.event(
                    f"{job}: stopped at record {position}: {outcome} ({detail})", milestone=True
                )
        elif kind == "done":
            view.done = True
            view.status = "done"
            view.position = view.total
            display.event(f"{job}: done", milestone=True)
        elif kind == "error":
            view.error = message[2]
            view.status = "ERROR"
            display.event(f"{job}: ERROR {message[2]}\n{message[3]}", milestone=True)
