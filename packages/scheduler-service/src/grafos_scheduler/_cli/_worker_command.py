"""``grafos-scheduler worker``: run a pipeline from the command line, under leases.

The worker acquires a lease for the job (waiting while it is pending), builds the
pipeline from ``--pipeline package.module:build``, resumes it from the checkpoint
directory and runs it under a ``WorkerAgent``, checkpointing every ``--checkpoint-every``
records. A preemption is not a failure: after one (or a lost lease) it acquires again,
with backoff, until the input is done. A platform notice (``--notices``) stops it at
the next safe point with a final checkpoint and a release.

Exit statuses: 0 done; 75 stopped by a platform notice after a clean final checkpoint
and release (EX_TEMPFAIL: a requeue system should run it again); 1 failure; 2 bad
arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from grafos_pipeline import DirectoryCheckpointStore, DirectorySink, Pipeline

from .._domain._errors import InvalidRequest
from .._domain._limits import check_name, check_priority, check_seconds, check_slots, check_ttl
from .._remote._agent import RunOutcome, RunResult, StopRequested, WorkerAgent
from .._remote._client import (
    AuthenticationFailed,
    PermissionDenied,
    RequestRejected,
    SchedulerClient,
    ServiceError,
    ServiceUnavailable,
    TokenConflict,
)
from .._remote._notices import (
    DEFAULT_EC2_METADATA_URL,
    DEFAULT_GCE_METADATA_URL,
    Ec2SpotNotices,
    GcePreemptionNotice,
    NoticeSource,
    SignalNotices,
)
from ._logging import configure_logging

__all__ = ["EXIT_NOTICE", "add_worker_command", "run_worker"]

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTICE = 75  # EX_TEMPFAIL (sysexits.h): stopped cleanly, run me again

NOTICE_NAMES = ("sigterm", "ec2", "gce")

logger = logging.getLogger("grafos_scheduler.worker")


class _BadArguments(Exception):
    """One line on stderr, exit status 2."""


def _typed(check: Callable[[Any], Any], parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: parse the text, then the domain's own check (its message)."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except (ValueError, InvalidRequest) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"{text!r} is not valid") from None

    return convert


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _at_least_one(value: int) -> int:
    if value < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return value


def _notice_names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if names == ("none",):
        return ()
    for name in names:
        if name not in NOTICE_NAMES:
            raise argparse.ArgumentTypeError(
                f"notice {name!r} is not one of {', '.join(NOTICE_NAMES)} (or none)"
            )
    return tuple(dict.fromkeys(names))


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) < len("http://x"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def add_worker_command(commands: Any) -> None:
    """Register ``worker`` on the top-level subparsers."""
    seconds = _typed(lambda v: check_seconds(v, "seconds", allow_zero=True), _number)
    worker = commands.add_parser(
        "worker",
        help="run a pipeline under leases",
        description=(
            "Run a pipeline under leases from a scheduler service: acquire (waiting while "
            "pending), resume from the checkpoint directory, process and checkpoint, stop "
            "at a safe point on preemption and acquire again until the input is done. "
            "A platform notice (--notices) stops it with a final checkpoint and a "
            "release. Exit status: 0 done, 75 stopped by a notice (run it again), "
            "1 failure, 2 bad arguments."
        ),
    )
    worker.add_argument(
        "--url",
        default=os.environ.get("GRAFOS_URL"),
        type=_url,
        help="base URL of the service (default: $GRAFOS_URL)",
    )
    worker.add_argument(
        "--token-file", help="file holding this worker's bearer token alone (or $GRAFOS_TOKEN)"
    )
    worker.add_argument(
        "--job", required=True, type=_typed(lambda v: check_name(v, "job"), str), help="job name"
    )
    worker.add_argument(
        "--pipeline",
        required=True,
        metavar="MODULE:FUNCTION",
        help="package.module:build; build() returns (stages, records over the whole input)",
    )
    worker.add_argument("--checkpoint-dir", required=True, help="DirectoryCheckpointStore path")
    worker.add_argument(
        "--output-dir",
        help="write the last stage's output, exactly once, through a DirectorySink here",
    )
    worker.add_argument(
        "--checkpoint-every",
        type=_typed(_at_least_one, _integer),
        default=100,
        metavar="N",
        help="checkpoint every N records (default: %(default)s)",
    )
    worker.add_argument(
        "--grace",
        type=seconds,
        default=None,
        metavar="S",
        help="ask for a grace window: a preemption waits up to S s for the final checkpoint",
    )
    worker.add_argument(
        "--priority", type=_typed(check_priority, _integer), default=0, help="(default: 0)"
    )
    worker.add_argument(
        "--slots", type=_typed(check_slots, _integer), default=1, help="(default: 1)"
    )
    worker.add_argument(
        "--ttl", type=_typed(check_ttl, _number), default=30.0, help="lease TTL, s (default: 30)"
    )
    worker.add_argument(
        "--notices",
        type=_notice_names,
        default=("sigterm",),
        metavar="LIST",
        help="platform notices to stop on: sigterm,ec2,gce or none (default: sigterm)",
    )
    worker.add_argument(
        "--signal-deadline",
        type=_typed(lambda v: check_seconds(v, "--signal-deadline"), _number),
        default=30.0,
        metavar="S",
        help="time to stop after SIGTERM/SIGINT (default: 30, Kubernetes' grace period)",
    )
    worker.add_argument(
        "--ec2-metadata-url",
        type=_url,
        default=DEFAULT_EC2_METADATA_URL,
        help="EC2 instance metadata (IMDSv2) base URL (default: %(default)s)",
    )
    worker.add_argument(
        "--ec2-poll-interval",
        type=_typed(lambda v: check_seconds(v, "--ec2-poll-interval"), _number),
        default=5.0,
        metavar="S",
        help="seconds between EC2 notice polls (default: 5, as AWS advises)",
    )
    worker.add_argument(
        "--gce-metadata-url",
        type=_url,
        default=DEFAULT_GCE_METADATA_URL,
        help="GCE metadata server base URL (default: %(default)s)",
    )
    worker.add_argument(
        "--gce-deadline",
        type=_typed(lambda v: check_seconds(v, "--gce-deadline"), _number),
        default=30.0,
        metavar="S",
        help="time to stop after the GCE preemption notice (default: 30)",
    )
    worker.add_argument(
        "--give-up-after",
        type=_typed(lambda v: check_seconds(v, "--give-up-after"), _number),
        default=60.0,
        metavar="S",
        help="fail once the service has been unreachable this long (default: 60)",
    )
    worker.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="JSON log lines on stderr at this level (default: %(default)s)",
    )


@attrs.define
class _Tally:
    """What the worker did, for the summary line."""

    leases: int = 0
    preemptions: int = 0  # stopped at a safe point on request, released
    lost: int = 0  # the lease ended under us (immediate or forced preemption, expiry)
    checkpoints: int = 0
    position: int = 0
    work_lost_records: int = 0
    work_lost_seconds: float = 0.0

    def add(self, result: RunResult) -> None:
        self.leases += 1
        self.checkpoints += result.checkpoints
        self.position = result.position
        self.work_lost_records += result.work_lost_records
        self.work_lost_seconds += result.work_lost_seconds
        if result.outcome is RunOutcome.PREEMPTED:
            self.preemptions += 1
        elif result.outcome is RunOutcome.LOST:
            self.lost += 1

    def line(self, job: str, how: str) -> str:
        return (
            f"grafos-scheduler worker: job {job!r} {how} at position {self.position}: "
            f"{_count(self.leases, 'lease')}, {_count(self.preemptions, 'preemption')}, "
            f"{_count(self.lost, 'lost lease')}, {_count(self.checkpoints, 'checkpoint')}, "
            f"work lost {_count(self.work_lost_records, 'record')} "
            f"{self.work_lost_seconds:.3f} s"
        )


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _read_token(path: str | None) -> str:
    if path is None:
        token = os.environ.get("GRAFOS_TOKEN", "").strip()
        if not token:
            raise _BadArguments("give the worker's token with --token-file FILE or GRAFOS_TOKEN")
        return token
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _BadArguments(f"--token-file {path!r} cannot be read: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise _BadArguments(f"--token-file {path!r} must hold the token alone, on one line")
    return token


def _load_build(spec: str) -> Callable[[], Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _BadArguments(f"--pipeline {spec!r} is not package.module:function")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: modules beside the caller
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise _BadArguments(
            f"--pipeline {spec!r}: cannot import {module_name!r}: {exc!r}"
        ) from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise _BadArguments(f"--pipeline {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _BadArguments(f"--pipeline {spec!r}: {attr!r} is not callable")
    return target  # type: ignore[no-any-return]


def _build(build: Callable[[], Any], spec: str) -> tuple[Sequence[Any], Iterable[Any]]:
    built = build()
    if not isinstance(built, tuple) or len(built) != 2:
        raise _BadArguments(
            f"--pipeline {spec!r} returned {type(built).__name__}, not (stages, records)"
        )
    stages, records = built
    if not isinstance(stages, Sequence) or isinstance(stages, str):
        raise _BadArguments(
            f"--pipeline {spec!r}: the stages are {type(stages).__name__}, not a list"
        )
    if not isinstance(records, Iterable):
        raise _BadArguments(f"--pipeline {spec!r}: the records are not iterable")
    return stages, records


def _notice_sources(args: argparse.Namespace) -> list[NoticeSource]:
    sources: list[NoticeSource] = []
    for name in args.notices:
        if name == "sigterm":
            sources.append(SignalNotices(deadline=args.signal_deadline))
        elif name == "ec2":
            sources.append(Ec2SpotNotices(args.ec2_metadata_url, interval=args.ec2_poll_interval))
        else:
            sources.append(GcePreemptionNotice(args.gce_metadata_url, deadline=args.gce_deadline))
    return sources


def run_worker(args: argparse.Namespace) -> int:
    """Run the ``worker`` command; returns the exit status."""
    try:
        if args.url is None:
            raise _BadArguments("give the service's URL with --url or GRAFOS_URL")
        token = _read_token(args.token_file)
        build = _load_build(args.pipeline)
        first = _build(build, args.pipeline)  # the contract is checked before connecting
        sources = _notice_sources(args)
    except _BadArguments as exc:
        print(f"grafos-scheduler: error: worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # build() itself failed: the pipeline's bug, not ours
        print(f"grafos-scheduler: error: worker: {args.pipeline} failed: {exc!r}", file=sys.stderr)
        return EXIT_FAILED
    configure_logging(args.log_level)
    with SchedulerClient(args.url, token) as client:
        agent = WorkerAgent(
            client,
            args.job,
            slots=args.slots,
            ttl=args.ttl,
            priority=args.priority,
            grace=args.grace,
            notices=sources,
        )
        try:
            agent.start_notices()  # before anything else: a SIGTERM from now on is a notice
            return _Worker(args, agent, build, first).run()
        except _BadArguments as exc:
            print(f"grafos-scheduler: error: worker: {exc}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            agent.close()


class _Worker:
    """The acquire / run / back off loop of one ``worker`` process."""

    first_backoff = 0.2
    max_backoff = 5.0

    def __init__(
        self,
        args: argparse.Namespace,
        agent: WorkerAgent,
        build: Callable[[], Any],
        first: tuple[Sequence[Any], Iterable[Any]],
    ) -> None:
        self.args = args
        self.agent = agent
        self.build = build
        self.built: tuple[Sequence[Any], Iterable[Any]] | None = first
        self.tally = _Tally()
        self.backoff = self.first_backoff
        self.unreachable_since: float | None = None

    def _finish(self, how: str, status: int) -> int:
        print(self.tally.line(self.args.job, how), flush=True)
        return status

    def _fail(self, message: str) -> int:
        print(f"grafos-scheduler: error: worker: {message}", file=sys.stderr, flush=True)
        return self._finish("failed", EXIT_FAILED)

    def _stopped(self) -> int:
        notice = self.agent.notice
        what = "a stop request" if notice is None else notice.describe()
        return self._finish(f"stopped by {what}", EXIT_NOTICE)

    def _pause(self) -> bool:
        """Back off (jittered, doubling); False if a notice arrived meanwhile."""
        delay = self.backoff * random.uniform(0.5, 1.0)
        self.backoff = min(self.max_backoff, self.backoff * 2)
        return not self.agent.stop_requested.wait(delay)

    def run(self) -> int:
        args, agent = self.args, self.agent
        store = DirectoryCheckpointStore(args.checkpoint_dir)
        while True:
            if agent.stop_requested.is_set():
                return self._stopped()
            attempt_started = time.monotonic()
            try:
                agent.acquire()
            except StopRequested:
                return self._stopped()
            except TokenConflict as exc:
                if exc.code != "job_already_leased":
                    return self._fail(str(exc))
                # Another holder works on the job: wait for it to let go, then resume.
                logger.info("job busy; waiting", extra={"event": "job_busy", "job": args.job})
                if not self._pause():
                    return self._stopped()
                continue
            except ServiceUnavailable as exc:
                if self._gave_up(attempt_started):
                    return self._fail(f"the service is unreachable: {exc}")
                if not self._pause():
                    return self._stopped()
                continue
            except (AuthenticationFailed, PermissionDenied, RequestRejected) as exc:
                return self._fail(str(exc))
            self.unreachable_since = None
            try:
                # Fresh stages for every lease: a lost run's are ahead of its checkpoint.
                built, self.built = self.built, None
                stages, records = built or _build(self.build, args.pipeline)
                sink = None if args.output_dir is None else DirectorySink(args.output_dir)
                pipeline = Pipeline(args.job, stages, store, sink=sink)
                result = agent.run(pipeline, records, checkpoint_every=args.checkpoint_every)
            except _BadArguments:
                raise
            except ServiceError as exc:
                return self._fail(str(exc))
            except Exception as exc:  # a stage, the store, build()
                logger.error(
                    "pipeline failed",
                    exc_info=True,
                    extra={"event": "pipeline_failed", "job": args.job},
                )
                return self._fail(f"the pipeline failed: {exc!r}")
            self.tally.add(result)
            if result.outcome is RunOutcome.FINISHED:
                return self._finish("done", EXIT_DONE)
            if result.outcome is RunOutcome.STOPPED:
                return self._stopped()
            if agent.stop_requested.is_set():
                # Lost under a notice: no final checkpoint under a lease of ours.
                return self._fail(f"stopped by a notice after the lease was lost: {result.detail}")
            if result.outcome is RunOutcome.PREEMPTED:
                self.backoff = self.first_backoff  # a preemption is the scheduler's choice
            if not self._pause():
                return self._stopped()

    def _gave_up(self, attempt_started: float) -> bool:
        # Counted from the start of the first call that failed: one call alone may take
        # the client's whole timeout trying every replica.
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = attempt_started
        give_up: float = self.args.give_up_after
        return now - self.unreachable_since >= give_up
