"""The ``grafos-scheduler`` command: serve, demo, audit verify, leases list.

Errors in the arguments or the configuration print one line and exit with status 2;
a failed check (an audit chain that does not verify, a demo that does not pass its
verification) exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .._domain._errors import SchedulerError

__all__ = ["JsonLogFormatter", "main"]

DEFAULT_PORT = 8470
DEFAULT_DB = "grafos-scheduler.db"
EXIT_FAILED = 1
EXIT_USAGE = 2

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class UsageError(Exception):
    """Bad arguments or configuration: one line on stderr, exit status 2."""


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key != "event":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_logging(level: str, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds >= 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="grafos-scheduler",
        description=(
            "Leases on shared capacity for grafos pipelines, with fencing tokens, "
            "bounded cooperative preemption and a hash-chained audit log."
        ),
        epilog="Start with `grafos-scheduler demo`: it runs the whole story in under a minute.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description=(
            "Run the v1 HTTP API on uvicorn over an embedded SQLite store. Every route "
            "except /healthz needs a bearer token from the --tokens file; OpenAPI is at "
            "/schema and Prometheus metrics at /metrics."
        ),
    )
    serve.add_argument("--db", default=DEFAULT_DB, help="SQLite file (default: %(default)s)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, local only)"
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (default: %(default)s)"
    )
    serve.add_argument(
        "--tokens",
        required=True,
        help='TOML token file: admin = "..." and a [workers] table of name = "token"',
    )
    serve.add_argument(
        "--capacity", type=_positive_int, default=4, help="slots to lease (default: %(default)s)"
    )
    serve.add_argument(
        "--max-defer",
        type=_seconds,
        default=30.0,
        help="longest a flush may defer a preemption, seconds (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level of the JSON logs on stderr (default: %(default)s)",
    )

    demo = commands.add_parser(
        "demo",
        help="run the end-to-end demo (under a minute)",
        description=(
            "Start the service on an embedded SQLite store in a directory, run low-priority "
            "worker processes that checkpoint their pipelines, submit a high-priority job "
            "that preempts them, let them resume, and verify every output and the audit "
            "chain. Exits 1 if any check fails."
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
        "--workers", type=_positive_int, default=None, help="low-priority jobs (default: 3)"
    )
    demo.add_argument(
        "--max-defer",
        type=_seconds,
        default=None,
        help="longest a flush may defer a preemption, seconds (default: 2)",
    )
    demo.add_argument(
        "--no-progress", action="store_true", help="no live progress bars, only events"
    )

    audit = commands.add_parser(
        "audit", help="audit chain commands", description="Audit chain commands."
    )
    audit_commands = audit.add_subparsers(
        dest="audit_command", metavar="COMMAND", parser_class=_Parser
    )
    audit_commands.required = True
    verify = audit_commands.add_parser(
        "verify",
        help="walk the audit chain and report the first bad record",
        description=(
            "Walk the audit chain and report the first bad record. Reads the SQLite file "
            "(--db) directly, or asks a running service (--url, with the admin token from "
            "--tokens). Exits 0 when the chain verifies and 1 when it does not."
        ),
    )
    _add_source(verify)

    leases = commands.add_parser("leases", help="lease commands", description="Lease commands.")
    lease_commands = leases.add_subparsers(
        dest="leases_command", metavar="COMMAND", parser_class=_Parser
    )
    lease_commands.required = True
    listing = lease_commands.add_parser(
        "list",
        help="list leases",
        description=(
            "List leases from the SQLite file (--db) or a running service (--url with --tokens)."
        ),
    )
    _add_source(listing)
    listing.add_argument(
        "--state",
        choices=["active", "released", "expired", "fenced", "preempted"],
        help="only leases in this state",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per lease")
    return parser


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--db",
        help=f"SQLite file of a scheduler, read directly (default: {DEFAULT_DB}, as serve)",
    )
    source.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8470")
    parser.add_argument("--tokens", help="token file with the admin token (with --url)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``grafos-scheduler``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from .._cli._demo._run import DemoConfig, run_demo

            if args.dir is not None:
                _check_demo_dir(args.dir)
            config = DemoConfig.for_size(args.size)
            config = config.with_overrides(
                directory=args.dir,
                workers=args.workers,
                max_defer=args.max_defer,
                progress=not args.no_progress and sys.stdout.isatty(),
            )
            return 0 if run_demo(config) else EXIT_FAILED
        if args.command == "audit":
            return _audit_verify(args)
        return _leases_list(args)
    except UsageError as exc:
        print(f"grafos-scheduler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SchedulerError as exc:
        # A store that is not ours, or that fails while read: one line, not a traceback.
        print(f"grafos-scheduler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("grafos-scheduler: interrupted", file=sys.stderr)
        return 130


def _load_tokens(path: str) -> Any:
    from .._service._auth import TokenConfig, TokenConfigError

    try:
        return TokenConfig.load(path)
    except TokenConfigError as exc:
        raise UsageError(str(exc)) from None


def _check_demo_dir(path: str) -> None:
    """Refuse a ``--dir`` that is a file, or that cannot be created or written."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {path!r} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {path!r} cannot be created: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--dir {path!r} is not writable")


def _open_store(path: str, *, must_exist: bool, read_only: bool = False) -> Any:
    from .._store._sqlite import SqliteStore

    if must_exist and not Path(path).is_file():
        raise UsageError(f"no scheduler database at {path!r}")
    try:
        return SqliteStore(path, read_only=read_only)
    except (SchedulerError, OSError) as exc:
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError: not a database, locked, ...
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    tokens = _load_tokens(args.tokens)
    _configure_logging(args.log_level)
    sock = _bind(args.host, args.port)
    try:
        return _serve_on(args, tokens, sock)
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or a one-line :class:`UsageError`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Small answers must not wait for Nagle; accepted sockets inherit the option.
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _serve_on(args: argparse.Namespace, tokens: Any, sock: socket.socket) -> int:
    import uvicorn

    from .._scheduler._scheduler import Scheduler
    from .._service._app import create_app

    host, port = sock.getsockname()[:2]
    store = _open_store(args.db, must_exist=False)
    try:
        scheduler = Scheduler(args.capacity, store, max_defer=args.max_defer)
    except SchedulerError as exc:
        store.close()
        raise UsageError(str(exc)) from None
    with scheduler:
        scheduler.start()
        stop: list[uvicorn.Server] = []  # the server, once it exists

        def stop_serving() -> None:
            for server in stop:
                server.should_exit = True  # a failed fsync: the scheduler refuses all

        app = create_app(scheduler, tokens, on_store_failed=stop_serving)
        logging.getLogger("grafos_scheduler.http").info(
            "serving",
            extra={
                "event": "serving",
                "host": host,
                "port": port,
                "db": os.path.abspath(args.db),
                "capacity": args.capacity,
                "max_defer": args.max_defer,
                "workers": tokens.workers,
            },
        )
        # loop and http "auto": uvloop and httptools, which the package depends on
        # (docs/benchmarks.md has the measurement that chose them).
        config = uvicorn.Config(app, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        stop.append(server)
        server.run(sockets=[sock])
        if scheduler.failed is not None:
            print(f"grafos-scheduler: the service stopped: {scheduler.failed}", file=sys.stderr)
            return 1
        if not server.started:
            raise UsageError(f"cannot serve on {host}:{port} (see the log above)")
    return 0


def _client(args: argparse.Namespace) -> Any:
    from .._remote._client import SchedulerClient

    if args.tokens is None:
        raise UsageError("--url needs --tokens, the token file with the admin token")
    tokens = _load_tokens(args.tokens)
    return SchedulerClient(args.url, tokens.admin_token)


def _default_source(args: argparse.Namespace) -> None:
    # Neither --db nor --url: the file `serve` uses by default, in this directory.
    if args.db is None and args.url is None:
        args.db = DEFAULT_DB


def _audit_verify(args: argparse.Namespace) -> int:
    from .._remote._client import ServiceError

    _default_source(args)

    if args.db is not None:
        from .._domain._audit import AuditLog

        with _open_store(args.db, must_exist=True, read_only=True) as store:
            result = AuditLog(store).verify()
            ok, bad, reason, count = (
                result.ok,
                result.first_bad_seq,
                result.reason,
                result.records_checked,
            )
            head_seq, head_hash = result.head
    else:
        with _client(args) as client:
            try:
                answer = client.audit_verify()
            except ServiceError as exc:
                raise UsageError(str(exc)) from None
            ok, bad, reason, count = answer.ok, answer.first_bad_seq, answer.reason, answer.records
            head_seq, head_hash = answer.head.seq, answer.head.hash
    if ok:
        print(f"audit chain verifies: {count} records, head seq {head_seq} hash {head_hash}")
        return 0
    print(f"audit chain does NOT verify: first bad seq {bad}: {reason}")
    return EXIT_FAILED


def _leases_list(args: argparse.Namespace) -> int:
    from .._remote._client import ServiceError

    _default_source(args)
    rows: list[dict[str, Any]] = []
    if args.db is not None:
        from .._domain._lease import LeaseState

        with _open_store(args.db, must_exist=True, read_only=True) as store:
            state = None if args.state is None else LeaseState(args.state)
            for row in store.list_leases(state):
                rows.append(
                    {
                        "lease_id": f"{row.lease_id:032x}",
                        "job": row.job,
                        "holder": row.holder,
                        "priority": row.priority,
                        "slots": row.slots,
                        "fencing_token": row.fencing_token,
                        "state": row.state.value,
                        "granted_at": _iso(row.granted_wall),
                        "expires_at": _iso(row.expires_wall),
                        "pending_preemption": row.preempt_cause,
                    }
                )
    else:
        with _client(args) as client:
            try:
                leases = client.leases(args.state)
            except ServiceError as exc:
                raise UsageError(str(exc)) from None
            for lease in leases:
                pending = lease.pending_preemption
                rows.append(
                    {
                        "lease_id": lease.lease_id,
                        "job": lease.job,
                        "holder": lease.holder,
                        "priority": lease.priority,
                        "slots": lease.slots,
                        "fencing_token": lease.fencing_token,
                        "state": lease.state,
                        "granted_at": lease.granted_at,
                        "expires_at": lease.expires_at,
                        "pending_preemption": None if pending is None else pending.cause,
                    }
                )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    columns = [
        "lease_id",
        "job",
        "holder",
        "priority",
        "slots",
        "fencing_token",
        "state",
        "expires_at",
    ]
    table = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if not rows:
        print("(no leases)")
    return 0


def _iso(wall: float | None) -> str:
    if wall is None:
        return "-"
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="seconds")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
