"""The ``grafos-scheduler`` command: one parser, one module per command group.

Errors in the arguments or the configuration print one line and exit with status 2;
a failed check (an audit chain that does not verify, a demo that does not pass its
verification) or an operation the service refused exits with status 1.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from grafos_scheduler import SchedulerError

from ._arguments import EXIT_FAILED, EXIT_USAGE, Parser, Refused, UsageError
from ._audit import add_audit_commands, run_audit
from ._config import add_config_commands, run_config
from ._demo_command import add_demo_command, run_demo_command
from ._leases import add_leases_commands, run_leases
from ._serve import add_serve_command, run_serve
from ._tickets import add_tickets_commands, run_tickets
from ._tokens import add_tokens_commands, run_tokens
from ._worker_command import add_worker_command, run_worker

__all__ = ["build_parser", "main"]

_RUN: dict[str, Callable[..., int]] = {
    "serve": run_serve,
    "demo": run_demo_command,
    "leases": run_leases,
    "tickets": run_tickets,
    "audit": run_audit,
    "tokens": run_tokens,
    "config": run_config,
    "worker": run_worker,
}


def _version() -> str:
    try:
        return importlib.metadata.version("grafos-scheduler")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def build_parser() -> Parser:
    parser = Parser(
        prog="grafos-scheduler",
        description=(
            "Leases on shared capacity for grafos pipelines, with fencing tokens, "
            "bounded cooperative preemption and a hash-chained audit log. The admin "
            "commands talk to a service at --url (or GRAFOS_URL) with the admin token "
            "from --tokens (or GRAFOS_TOKEN)."
        ),
        epilog="Start with `grafos-scheduler demo`: it runs the whole story in under a minute.",
    )
    parser.add_argument("--version", action="version", version=f"grafos-scheduler {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    add_serve_command(commands)
    add_demo_command(commands)
    add_worker_command(commands)
    add_leases_commands(commands, Parser)
    add_tickets_commands(commands, Parser)
    add_audit_commands(commands, Parser)
    add_tokens_commands(commands, Parser)
    add_config_commands(commands, Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``grafos-scheduler``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _RUN[args.command](args)
    except UsageError as exc:
        print(f"grafos-scheduler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Refused as exc:
        print(f"grafos-scheduler: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SchedulerError as exc:
        # A store that is not ours, or that fails while read: one line, not a traceback.
        print(f"grafos-scheduler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("grafos-scheduler: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
