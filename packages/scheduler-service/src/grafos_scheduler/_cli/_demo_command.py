"""``grafos-scheduler demo``: its arguments, and running it from the command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._arguments import EXIT_FAILED, UsageError, positive_int, seconds

__all__ = ["add_demo_command", "run_demo_command"]


def add_demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the end-to-end demo (under a minute)",
        description=(
            "Start the service on an embedded SQLite store in a directory, run low-priority "
            "worker processes that checkpoint their pipelines, submit a high-priority job "
            "that preempts them (one preemption is forced at max_defer), let them resume, "
            "and verify every output and the audit chain. Exits 1 if any check fails. "
            "The directory must be new, empty, or one an earlier demo run made."
        ),
    )
    demo.add_argument(
        "--size",
        choices=["small", "default", "large"],
        default="default",
        help="how much input each job has (small: a few seconds; default: < 1 min)",
    )
    demo.add_argument(
        "--dir",
        default=None,
        help="directory for the store, checkpoints and logs (default: a new temporary one)",
    )
    demo.add_argument(
        "--workers", type=positive_int, default=None, help="low-priority jobs (default: 4)"
    )
    demo.add_argument(
        "--max-defer",
        type=seconds,
        default=None,
        help="longest a flush may defer a preemption, seconds (default: 2)",
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="no live progress display, only events"
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the service and its dashboard (/ui) up after the verification, until Ctrl+C",
    )


def run_demo_command(args: argparse.Namespace) -> int:
    # The demo starts the server half (litestar, uvicorn): load it only for this command.
    from ._demo._config import DemoConfig
    from ._demo._directory import DemoDirectoryRefused, claim_directory
    from ._demo._orchestration import run_demo

    if args.dir is not None:
        try:
            claim_directory(args.dir)
        except DemoDirectoryRefused as exc:
            raise UsageError(str(exc)) from None
    config = DemoConfig.for_size(args.size).with_overrides(
        directory=args.dir,
        workers=args.workers,
        max_defer=args.max_defer,
        progress=not args.no_progress and sys.stdout.isatty(),
        keep=args.keep,
    )
    return 0 if run_demo(config) else EXIT_FAILED
