"""``grafos-scheduler serve``: the HTTP API on uvicorn, and its token reload on SIGHUP."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

from grafos_scheduler import (
    Principal,
    Scheduler,
    SchedulerError,
    TokenConfig,
    TokenConfigError,
)

from ._arguments import EXIT_USAGE, UsageError
from ._config import ServeConfig, add_serve_settings, resolve
from ._connection import load_tokens
from ._database import open_store
from ._gc import settle_garbage_collector
from ._logging import configure_logging
from ._replicas import add_replica_arguments, postgres_url, serve_replica, use_sqlite_store_url

__all__ = ["ReloadableTokens", "add_serve_command", "run_serve"]

logger = logging.getLogger("grafos_scheduler.http")


class ReloadableTokens:
    """The token file a running server authenticates with, read again on :meth:`reload`.

    A reload that fails (a missing file, a short token) keeps the tokens in use: a typo
    in the file must not lock every worker out.
    """

    def __init__(self, path: str, tokens: TokenConfig) -> None:
        self.path = path
        # Swapped whole, in one assignment: a request thread sees the old config or the
        # new one. No lock: reload runs in the main thread's signal handler, where a
        # second SIGHUP arriving mid-reload would deadlock on one.
        self._tokens = tokens

    @property
    def current(self) -> TokenConfig:
        return self._tokens

    def authenticate(self, authorization: str | None) -> Principal | None:
        return self._tokens.authenticate(authorization)

    def reload(self) -> str | None:
        """Read the file again: None once its tokens are in use, else why not (the
        previous tokens stay). The error names the file, never a token."""
        try:
            tokens = TokenConfig.load(self.path)
        except TokenConfigError as exc:
            return str(exc)
        self._tokens = tokens
        return None


def reload_and_audit(tokens: ReloadableTokens, scheduler: Scheduler, lock: threading.Lock) -> None:
    """Reload the token file and append the audit record that says so.

    The audit tail logs that record (``tokens_reloaded`` or ``tokens_reload_failed``):
    one line per reload, like every decision. Should the audit itself fail, the reload
    still stands and the failure is logged here.
    """
    with lock:  # two SIGHUPs close together: reloads in order, each audited
        error = tokens.reload()
        try:
            if error is None:
                scheduler.record_tokens_reloaded(
                    source=str(tokens.path), admin=True, workers=tokens.current.workers
                )
            else:
                scheduler.record_tokens_reloaded(source=str(tokens.path), error=error)
        except SchedulerError as exc:
            logger.error(
                "the token reload could not be audited",
                extra={
                    "event": "tokens_reload_unaudited",
                    "path": tokens.path,
                    "reloaded": error is None,
                    "error": str(exc),
                },
            )


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description=(
            "Run the v1 HTTP API on uvicorn over an embedded SQLite store. Every route "
            "except /healthz needs a bearer token from the token file; OpenAPI is at "
            "/schema and /schema/openapi.json, Prometheus metrics at /metrics. Each setting "
            "comes from its flag, else its GRAFOS_* variable, else the --config file, else "
            "its default (see `config show`). SIGHUP reloads the token file."
        ),
    )
    add_serve_settings(serve)
    add_replica_arguments(serve)


def run_serve(args: argparse.Namespace) -> int:
    use_sqlite_store_url(args)
    config = resolve(args)
    if config.tokens is None:
        # Like a missing required flag: argparse's status, one line.
        print(
            "grafos-scheduler: error: serve needs a token file: --tokens, GRAFOS_TOKENS "
            "or tokens in the --config file",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    tokens = ReloadableTokens(config.tokens, load_tokens(config.tokens))
    configure_logging(config.log_level)
    sock = _bind(config.host, config.port)
    try:
        shared = postgres_url(args)
        if shared is not None:  # one of several replicas (_replicas.py)
            try:
                return serve_replica(
                    shared,
                    tokens=tokens,
                    sock=sock,
                    capacity=config.capacity,
                    max_defer=config.max_defer,
                    max_grace=config.max_grace,
                    advertise_url=args.advertise_url,
                    leader_ttl=args.leader_ttl,
                )
            except SchedulerError as exc:
                raise UsageError(str(exc)) from None
        return _serve_on(config, tokens, sock)
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


def _serve_on(config: ServeConfig, tokens: ReloadableTokens, sock: socket.socket) -> int:
    # The server half (litestar, uvicorn) loads only for serve, not for every command.
    import uvicorn

    from grafos_scheduler import create_app

    from .._service._http_protocol import HttpProtocol

    host, bound_port = sock.getsockname()[:2]
    store = open_store(config.db, must_exist=False)
    try:
        scheduler = Scheduler(
            config.capacity, store, max_defer=config.max_defer, max_grace=config.max_grace
        )
    except SchedulerError as exc:
        store.close()
        raise UsageError(str(exc)) from None

    reloading = threading.Lock()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        # Off the handler: the audit record commits under the scheduler's lock, which
        # the interrupted main thread may hold.
        threading.Thread(
            target=reload_and_audit,
            args=(tokens, scheduler, reloading),
            name="token-reload",
            daemon=True,
        ).start()

    previous = signal.signal(signal.SIGHUP, on_hangup)
    try:
        with scheduler:
            scheduler.start()
            stop: list[uvicorn.Server] = []  # the server, once it exists

            def stop_serving() -> None:
                for server in stop:
                    server.should_exit = True  # a failed fsync: the scheduler refuses all

            app = create_app(scheduler, tokens, on_store_failed=stop_serving)
            logger.info(
                "serving",
                extra={
                    "event": "serving",
                    "host": host,
                    "port": bound_port,
                    "db": os.path.abspath(config.db),
                    "capacity": config.capacity,
                    "max_defer": config.max_defer,
                    "max_grace": scheduler.max_grace,
                    "workers": tokens.current.workers,
                    "sources": dict(config.sources),
                },
            )
            # loop and http "auto": uvloop and httptools, which the package depends on
            # (docs/benchmarks.md has the measurement that chose them). A watch may wait
            # up to 60 s: a stop must not wait for every one to time out.
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    http=HttpProtocol,
                    log_config=None,
                    access_log=False,
                    timeout_graceful_shutdown=5,
                )
            )
            stop.append(server)
            settle_garbage_collector()
            server.run(sockets=[sock])
            if scheduler.failed is not None:
                print(f"grafos-scheduler: the service stopped: {scheduler.failed}", file=sys.stderr)
                return 1
            if not server.started:
                raise UsageError(f"cannot serve on {host}:{bound_port} (see the log above)")
    finally:
        signal.signal(signal.SIGHUP, previous)
    return 0
