"""``grafos-scheduler demo``: the whole story, end to end, checked at the end.

1. The service starts on an embedded SQLite store in a directory that the demo names.
2. Low-priority worker *processes* run pipelines over a finite input, checkpointing every
   K records to a ``DirectoryCheckpointStore``. Their flushes take different times:
   "fast" (fsync only), "steady" (a short flush) and "slow-disk" (a flush longer than
   ``max_defer``).
3. Partway, a high-priority job asks for every slot. The scheduler preempts the
   low-priority leases: at once when no flush is in flight, deferred while one is, and
   forced when the flush outlasts ``max_defer``.
4. The preempted jobs wait for a lease, then resume from their checkpoints with new
   leases and higher fencing tokens.
5. Verification: every job's durable output equals an uninterrupted run's, record for
   record; fencing tokens only grew; no deferral outlived ``max_defer``; the audit chain
   verifies. A summary table follows, and the exit status says whether it all held.

Worker processes only import the light half (``_agent``, ``_client``); the parent runs
the service in a thread.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["DemoConfig", "run_demo"]

ROLES = ("steady", "slow-disk", "fast")
URGENT = "urgent"
# A deferral is carried out or forced by the executor thread, which wakes at the
# deadline; allow it this much lateness (lock waits, a loaded machine).
EXECUTOR_SLACK = 0.5


@attrs.frozen
class DemoConfig:
    """Every knob of the demo; :meth:`for_size` gives the presets."""

    directory: str | None = None
    workers: int = 3
    records: int = 400
    urgent_records: int = 200
    checkpoint_every: int = 40
    slow_checkpoint_every: int = 100
    record_delay: float = 0.01
    steady_flush: float = 0.25
    ttl: float = 2.0
    max_defer: float = 2.0
    start_urgent_at: float = 0.35  # fraction of the low-priority input done
    timeout: float = 150.0
    progress: bool = False
    out: IO[str] | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def for_size(cls, size: str) -> DemoConfig:
        if size == "small":
            return cls(
                workers=2,
                records=120,
                urgent_records=40,
                checkpoint_every=15,
                slow_checkpoint_every=40,
                record_delay=0.005,
                steady_flush=0.1,
                ttl=1.5,
                max_defer=1.0,
                timeout=90.0,
            )
        if size == "large":
            return cls(workers=4, records=1500, urgent_records=600, timeout=600.0)
        return cls()

    def with_overrides(self, **changes: Any) -> DemoConfig:
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def slow_flush(self) -> float:
        return self.max_defer * 1.5  # outlasts max_defer: its preemption is forced

    @property
    def capacity(self) -> int:
        return self.workers


@attrs.frozen
class WorkerSpec:
    """What one worker process runs (picklable: it crosses to a spawned process)."""

    job: str
    role: str
    url: str
    token: str = attrs.field(repr=False)  # a bearer token: never in a repr or a log
    priority: int
    slots: int
    records: int
    checkpoint_every: int
    record_delay: float
    flush_delay: float
    ttl: float
    checkpoint_dir: str
    log_dir: str


# ----------------------------------------------------------------------------- the pipeline


class Mix:
    """Stateless: a record number becomes a pseudo-random value."""

    name = "mix"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def process(self, record: Any) -> Iterable[Any]:
        if self.delay:
            time.sleep(self.delay)  # the "work" of the demo
        return [(record, (record * 2654435761) % 1_000_003)]

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


class RunningSum:
    """Stateful: emits each value with the running sum, which a resume must restore."""

    name = "running-sum"

    def __init__(self) -> None:
        self.total = 0

    def process(self, record: Any) -> Iterable[Any]:
        index, value = record
        self.total += value
        return [[index, value, self.total]]

    def snapshot(self) -> bytes:
        return str(self.total).encode()

    def restore(self, state: bytes) -> None:
        self.total = int(state.decode())


class Sink:
    """Collects the output; its state is the output. A slow snapshot is a slow flush."""

    name = "sink"

    def __init__(self, flush_delay: float = 0.0, on_flush: Any = None) -> None:
        self.rows: list[Any] = []
        self.flush_delay = flush_delay
        self.on_flush = on_flush

    def process(self, record: Any) -> Iterable[Any]:
        self.rows.append(record)
        return [record]

    def snapshot(self) -> bytes:
        if self.on_flush is not None:
            self.on_flush()
        if self.flush_delay:
            time.sleep(self.flush_delay)
        return json.dumps(self.rows, separators=(",", ":")).encode()

    def restore(self, state: bytes) -> None:
        self.rows = json.loads(state)


def build_pipeline(
    job: str,
    store: Any,
    *,
    record_delay: float = 0.0,
    flush_delay: float = 0.0,
    on_flush: Any = None,
) -> Any:
    from grafos_pipeline import Pipeline

    return Pipeline(job, [Mix(record_delay), RunningSum(), Sink(flush_delay, on_flush)], store)


def expected_output(job: str, records: int) -> list[Any]:
    """The output of an uninterrupted run, in memory, with no delays."""
    from grafos_pipeline import MemoryCheckpointStore

    pipeline = build_pipeline(job, MemoryCheckpointStore())
    pipeline.process(range(records))
    sink = pipeline.stages[-1]
    assert isinstance(sink, Sink)
    return sink.rows


# ----------------------------------------------------------------------------- worker process


def worker_main(spec: WorkerSpec, events: Any, go: Any) -> None:
    """Entry point of a worker process: run the job to the end, across preemptions."""
    try:
        _worker(spec, events, go)
    except BaseException as exc:  # report, so the parent fails the demo with a reason
        events.put(("error", spec.job, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise SystemExit(1) from None


def _worker(spec: WorkerSpec, events: Any, go: Any) -> None:
    from grafos_pipeline import DirectoryCheckpointStore

    from ..._remote._agent import RunOutcome, WorkerAgent
    from ..._remote._client import SchedulerClient, TokenConflict

    # The terminal belongs to the parent's progress bars: log to a file of our own.
    logging.basicConfig(
        level=logging.INFO,
        filename=os.path.join(spec.log_dir, f"worker-{spec.job}.log"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # One line per HTTP request would bury the agent's own decisions.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if go is not None:
        go.wait()
    client = SchedulerClient(spec.url, spec.token, timeout=10.0)
    agent = WorkerAgent(
        client,
        spec.job,
        slots=spec.slots,
        ttl=spec.ttl,
        priority=spec.priority,
        poll_interval=0.05,
    )
    store = DirectoryCheckpointStore(spec.checkpoint_dir)
    records = range(spec.records)
    last_sent = 0.0

    def on_progress(position: int) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= 0.05 or position == spec.records:
            last_sent = now
            events.put(("progress", spec.job, position))

    while True:
        events.put(("waiting", spec.job))
        try:
            lease = agent.acquire()
        except TokenConflict:
            # The previous lease is not over on the server yet (it is being preempted).
            time.sleep(0.1)
            continue
        events.put(("lease", spec.job, lease.lease_id, lease.fencing_token))
        pipeline = build_pipeline(
            spec.job,
            store,
            record_delay=spec.record_delay,
            flush_delay=spec.flush_delay,
            on_flush=lambda: events.put(("flush", spec.job)),
        )
        result = agent.run(
            pipeline,
            records,
            checkpoint_every=spec.checkpoint_every,
            on_progress=on_progress,
            on_checkpoint=lambda c: events.put(("checkpoint", spec.job, c.sequence, c.position)),
        )
        events.put(("stopped", spec.job, result.outcome.value, result.position, result.detail))
        if result.outcome is RunOutcome.FINISHED:
            break
    client.close()
    events.put(("done", spec.job))


# ----------------------------------------------------------------------------- display


@attrs.define
class JobView:
    job: str
    role: str
    total: int
    position: int = 0
    status: str = "starting"
    leases: int = 0
    tokens: list[int] = attrs.field(factory=list)
    checkpoints: int = 0
    stops: list[str] = attrs.field(factory=list)
    done: bool = False
    error: str | None = None


class Display:
    """Progress bars redrawn in place on a terminal; plain event lines otherwise."""

    def __init__(self, out: IO[str], jobs: list[JobView], live: bool) -> None:
        self.out = out
        self.jobs = jobs
        self.live = live
        self.events: list[str] = []
        self._drawn = 0
        self._last = 0.0
        self.started = time.monotonic()

    def event(self, text: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.2f}s"
        line = f"{stamp}  {text}"
        if self.live:
            self.events = ([*self.events, line])[-8:]
            self.draw(force=True)
        else:
            print(line, file=self.out, flush=True)

    def draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        lines = [self._bar(j) for j in self.jobs] + [""] + self.events
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")
        for line in lines:
            self.out.write(f"\x1b[2K{line}\n")
        self.out.flush()
        self._drawn = len(lines)

    @staticmethod
    def _bar(j: JobView, width: int = 30) -> str:
        done = int(width * j.position / j.total) if j.total else width
        bar = "#" * done + "." * (width - done)
        pct = 100 * j.position // j.total if j.total else 100
        token = j.tokens[-1] if j.tokens else "-"
        return (
            f"{j.job:<12} {j.role:<9} [{bar}] {pct:3d}% {j.position:>5}/{j.total:<5} "
            f"token {token!s:>2}  {j.status}"
        )


# ----------------------------------------------------------------------------- the run


def run_demo(config: DemoConfig) -> bool:
    """Run the demo; True when every check passed."""
    from grafos_pipeline import DirectoryCheckpointStore

    from ..._scheduler._scheduler import Scheduler
    from ..._service._app import create_app
    from ..._service._auth import TokenConfig
    from ..._service._server import BackgroundServer
    from ..._store._sqlite import SqliteStore

    out = config.out or sys.stdout
    directory = Path(config.directory or tempfile.mkdtemp(prefix="grafos-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in ("scheduler.db", "scheduler.db-wal", "scheduler.db-shm"):
        (directory / stale).unlink(missing_ok=True)
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    checkpoint_dir = directory / "checkpoints"

    low_jobs = [f"ingest-{i + 1}" for i in range(config.workers)]
    roles = {job: ROLES[i % len(ROLES)] for i, job in enumerate(low_jobs)}
    roles[URGENT] = "urgent"
    tokens = TokenConfig.generate([*low_jobs, URGENT])
    tokens.dump(directory / "tokens.toml")

    log_handler = logging.FileHandler(directory / "service.log", encoding="utf-8")
    from ..._cli._main import JsonLogFormatter

    log_handler.setFormatter(JsonLogFormatter())
    service_logger = logging.getLogger("grafos_scheduler")
    service_logger.addHandler(log_handler)
    service_logger.setLevel(logging.INFO)
    service_logger.propagate = False

    print(f"grafos demo in {directory}", file=out)
    print(
        f"  {config.workers} low-priority jobs x {config.records} records, checkpoint every "
        f"{config.checkpoint_every} (slow-disk: {config.slow_checkpoint_every}); then "
        f"'{URGENT}' (priority 10) needs all {config.capacity} slots; ttl {config.ttl}s, "
        f"max_defer {config.max_defer}s",
        file=out,
    )
    store = SqliteStore(directory / "scheduler.db")
    scheduler = Scheduler(config.capacity, store, max_defer=config.max_defer)
    ctx = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    try:
        scheduler.start()
        server = BackgroundServer(create_app(scheduler, tokens)).start()
        try:
            print(
                f"  service {server.url}  store {directory / 'scheduler.db'}  "
                f"log {directory / 'service.log'}\n",
                file=out,
            )
            views, ok_run = _orchestrate(
                config,
                server.url,
                tokens,
                roles,
                low_jobs,
                checkpoint_dir,
                directory,
                ctx,
                processes,
                out,
            )
        finally:
            server.stop()
        verdicts = _verify(
            config, scheduler, views, low_jobs, DirectoryCheckpointStore(checkpoint_dir)
        )
        summary = _summary(scheduler, views)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        scheduler.close()
        service_logger.removeHandler(log_handler)
        log_handler.close()

    print("", file=out)
    print(summary, file=out)
    print("verification:", file=out)
    passed = ok_run
    for ok, text in verdicts:
        passed = passed and ok
        print(f"  [{'ok' if ok else 'FAIL'}] {text}", file=out)
    print(
        f"\n{'PASS' if passed else 'FAIL'}: demo directory {directory} "
        f"(try: grafos-scheduler audit verify --db {directory / 'scheduler.db'})",
        file=out,
    )
    return passed


def _orchestrate(
    config: DemoConfig,
    url: str,
    tokens: Any,
    roles: dict[str, str],
    low_jobs: list[str],
    checkpoint_dir: Path,
    directory: Path,
    ctx: Any,
    processes: list[Any],
    out: IO[str],
) -> tuple[dict[str, JobView], bool]:
    events = ctx.Queue()
    go_urgent = ctx.Event()

    def spec(job: str) -> WorkerSpec:
        role = roles[job]
        urgent = job == URGENT
        return WorkerSpec(
            job=job,
            role=role,
            url=url,
            token=tokens.worker_tokens[job],
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
            log_dir=str(directory),
        )

    views = {
        job: JobView(job, roles[job], config.urgent_records if job == URGENT else config.records)
        for job in [*low_jobs, URGENT]
    }
    display = Display(out, list(views.values()), live=config.progress)
    for job in [*low_jobs, URGENT]:
        process = ctx.Process(
            target=worker_main,
            args=(spec(job), events, go_urgent if job == URGENT else None),
            name=f"grafos-demo-{job}",
            daemon=True,
        )
        process.start()
        processes.append(process)
    views[URGENT].status = "not submitted"

    deadline = time.monotonic() + config.timeout
    low_total = config.records * len(low_jobs)
    urgent_sent = False
    slow_flushing_since: float | None = None
    ok = True
    while not all(v.done or v.error for v in views.values()):
        if time.monotonic() > deadline:
            display.event(f"timed out after {config.timeout} s")
            _report_stuck(views, directory, display)
            ok = False
            break
        for job, process in zip([*low_jobs, URGENT], processes, strict=True):
            # Its last words may still be in the queue: judge only once that is empty.
            gone = not process.is_alive() and events.empty()
            if gone and not views[job].done and views[job].error is None:
                views[job].error = f"worker process exited with {process.exitcode}"
                display.event(f"{job}: {views[job].error}")
        try:
            message = events.get(timeout=0.1)
        except queue.Empty:
            display.draw()
            message = None
        if message is not None:
            _apply(message, views, display)
            if message[0] == "flush" and roles.get(message[1]) == "slow-disk":
                slow_flushing_since = time.monotonic()
        if not urgent_sent:
            done = sum(views[j].position for j in low_jobs)
            # Submit while a slow-disk flush is in flight, so that the demo shows a
            # deferral being forced; give up waiting for one after a while.
            slow_busy = slow_flushing_since is not None and (
                time.monotonic() - slow_flushing_since < config.slow_flush * 0.5
            )
            has_slow = "slow-disk" in {roles[j] for j in low_jobs}
            enough = done >= config.start_urgent_at * low_total
            if enough and (slow_busy or not has_slow or done >= 0.6 * low_total):
                go_urgent.set()
                urgent_sent = True
                views[URGENT].status = "submitted"
                display.event(f"{URGENT}: submitted (priority 10, {config.capacity} slots)")
        display.draw()
    # Drain what is left, so the last checkpoints and stops are counted.
    while True:
        try:
            _apply(events.get(timeout=0.2), views, display)
        except queue.Empty:
            break
    display.draw(force=True)
    return views, ok and all(v.error is None for v in views.values())


def _report_stuck(views: dict[str, JobView], directory: Path, display: Display) -> None:
    """Say where each unfinished job stands, so a timed-out run can be diagnosed."""
    for job, view in views.items():
        if view.done:
            continue
        display.event(
            f"{job}: still {view.status!r} at record {view.position}/{view.total}"
            + (f", error: {view.error}" if view.error else "")
        )
        log = directory / f"worker-{job}.log"
        try:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        except OSError:
            tail = ["(no log file)"]
        if not tail:
            tail = ["(the log is empty)"]
        for line in tail:
            display.event(f"    {job} log: {line}")


def _apply(message: tuple[Any, ...], views: dict[str, JobView], display: Display) -> None:
    kind, job = message[0], message[1]
    view = views[job]
    if kind == "progress":
        view.position = message[2]
        if view.status.startswith("lease") or view.status == "resumed":
            view.status = "running"
    elif kind == "waiting":
        view.status = "waiting for a lease"
    elif kind == "lease":
        view.leases += 1
        view.tokens.append(message[3])
        view.status = "running"
        what = "granted" if view.leases == 1 else "resumed with a new lease"
        display.event(f"{job}: lease {message[2][:8]}.. {what}, fencing token {message[3]}")
    elif kind == "checkpoint":
        view.checkpoints += 1
    elif kind == "flush":
        view.status = "flushing"
    elif kind == "stopped":
        outcome, position, detail = message[2], message[3], message[4]
        view.position = position
        view.stops.append(outcome)
        view.status = outcome
        if outcome != "finished":
            display.event(f"{job}: stopped at record {position}: {outcome} ({detail})")
    elif kind == "done":
        view.done = True
        view.status = "done"
        view.position = view.total
        display.event(f"{job}: done")
    elif kind == "error":
        view.error = message[2]
        view.status = "ERROR"
        display.event(f"{job}: ERROR {message[2]}\n{message[3]}")


# ----------------------------------------------------------------------------- checks


def _audit_by_lease(scheduler: Any) -> tuple[list[Any], dict[int, list[Any]]]:
    records: list[Any] = []
    after = 0
    while batch := scheduler.audit.records(after_seq=after, limit=1000):
        records.extend(batch)
        after = batch[-1].seq
    by_lease: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        if record.lease_id is not None:
            by_lease[record.lease_id].append(record)
    return records, by_lease


def _verify(
    config: DemoConfig,
    scheduler: Any,
    views: dict[str, JobView],
    low_jobs: list[str],
    store: Any,
) -> list[tuple[bool, str]]:
    verdicts: list[tuple[bool, str]] = []
    for job, view in views.items():
        checkpoint = store.latest(job)
        expected = expected_output(job, view.total)
        if checkpoint is None:
            verdicts.append((False, f"{job}: no checkpoint at all"))
            continue
        rows = json.loads(checkpoint.stage_states["sink"])
        same = rows == expected and checkpoint.position == view.total
        lost = view.total - len({r[0] for r in rows})
        dup = len(rows) - len({r[0] for r in rows})
        verdicts.append(
            (
                same,
                f"{job}: output of {len(rows)} records "
                + ("equals the uninterrupted run" if same else f"DIFFERS ({lost} lost, {dup} dup)")
                + f" (checkpoint {checkpoint.sequence}, token {checkpoint.fencing_token})",
            )
        )
    records, by_lease = _audit_by_lease(scheduler)
    grants: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.kind == "grant":
            grants[record.job].append(record.data["fencing_token"])
    rising = all(all(a < b for a, b in itertools.pairwise(t)) for t in grants.values())
    verdicts.append(
        (
            rising,
            "fencing tokens rose with every new lease of each job: "
            + ", ".join(f"{j} {t}" for j, t in sorted(grants.items())),
        )
    )
    resumed = [j for j in low_jobs if len(grants.get(j, [])) > 1]
    preempted_any = any(r.kind in ("preemption_executed", "preemption_forced") for r in records)
    verdicts.append(
        (
            preempted_any and bool(resumed),
            f"preemptions happened and {len(resumed)} job(s) resumed from checkpoints "
            "with new leases",
        )
    )
    # Each deferral against its own recorded deadline (request time + max_defer, in
    # the same wall clock as the records): the lease must end by then, and a forced
    # preemption must not come before it.
    deferrals = late = early_forced = forced = 0
    longest = 0.0
    for lease_records in by_lease.values():
        deferred = next((r for r in lease_records if r.kind == "preemption_deferred"), None)
        if deferred is None:
            continue
        deferrals += 1
        deadline = float(deferred.data["deadline_wall"])
        ended = next((r for r in lease_records if r.kind in _ENDS), None)
        if ended is None:
            late += 1  # still ACTIVE at the end of the run: never carried out
            continue
        longest = max(longest, ended.time - deferred.time)
        if ended.time > deadline + EXECUTOR_SLACK:
            late += 1
        if ended.kind == "preemption_forced":
            forced += 1
            if ended.time < deadline - EXECUTOR_SLACK:
                early_forced += 1
    verdicts.append(
        (
            late == 0 and early_forced == 0,
            f"{deferrals} deferred preemption(s), {forced} forced at max_defer "
            f"{config.max_defer}s: every one ended by its deadline (longest wait "
            f"{longest:.2f}s, executor slack {EXECUTOR_SLACK}s)"
            if late == 0 and early_forced == 0
            else f"{late} deferral(s) outlived their deadline, {early_forced} forced early",
        )
    )
    result = scheduler.audit.verify()
    verdicts.append(
        (
            result.ok,
            f"audit chain verifies ({result.records_checked} records, head seq {result.head[0]})"
            if result.ok
            else f"audit chain broken: {result.reason}",
        )
    )
    return verdicts


_ENDS = ("preemption_executed", "preemption_forced", "release", "expire", "fence")


def _summary(scheduler: Any, views: dict[str, JobView]) -> str:
    _, by_lease = _audit_by_lease(scheduler)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for lease_records in by_lease.values():
        job = lease_records[0].job
        kinds = [r.kind for r in lease_records]
        if "preemption_forced" in kinds:
            stats[job]["forced"] += 1
        elif "preemption_deferred" in kinds:
            stats[job]["deferred"] += 1
        elif "preemption_executed" in kinds:
            stats[job]["immediate"] += 1
    head = ["job", "role", "leases", "tokens", "immediate", "deferred", "forced", "checkpoints"]
    rows = []
    for job, view in views.items():
        s = stats[job]
        rows.append(
            [
                job,
                view.role,
                str(view.leases),
                ",".join(map(str, view.tokens)) or "-",
                str(s["immediate"]),
                str(s["deferred"]),
                str(s["forced"]),
                str(view.checkpoints),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(
        "(preemptions: immediate = no flush in flight; deferred = waited for a flush; "
        "forced = the flush outlasted max_defer)"
    )
    return "\n".join(lines)
