"""``serve --store postgresql://...``: one of several scheduler replicas on PostgreSQL.

``--store`` picks the store: ``postgresql://`` (or ``postgres://``) for a shared
PostgreSQL database, ``sqlite:///PATH`` for the embedded default (as ``--db PATH``).
A PostgreSQL replica competes for leadership (``--leader-ttl``), serves the API while
it leads and sends callers to the leader (``--advertise-url``) while it stands by.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import urllib.parse
from typing import Any

from .._domain._errors import SchedulerError
from ._gc import settle_garbage_collector

__all__ = [
    "add_replica_arguments",
    "postgres_url",
    "serve_replica",
    "use_sqlite_store_url",
]

DEFAULT_LEADER_TTL = 5.0


def _leader_ttl(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 0.05 to 3600 seconds")
    return value


def _store_url(text: str) -> str:
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme not in ("postgresql", "postgres", "sqlite"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a store URL: use postgresql://USER@HOST/DB or sqlite:///PATH"
        )
    if scheme == "sqlite" and not text.startswith("sqlite:///"):
        raise argparse.ArgumentTypeError(f"{text!r}: a SQLite store URL is sqlite:///PATH")
    return text


def _advertise_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def add_replica_arguments(serve: argparse.ArgumentParser) -> None:
    """``--store``, ``--advertise-url`` and ``--leader-ttl`` on the serve command."""
    serve.add_argument(
        "--store",
        type=_store_url,
        help=(
            "store URL: postgresql://USER@HOST:PORT/DB for several replicas on one "
            "PostgreSQL database, or sqlite:///PATH (the default store, as --db PATH)"
        ),
    )
    serve.add_argument(
        "--advertise-url",
        type=_advertise_url,
        help=(
            "the URL other replicas send callers to while this one leads "
            "(default: http://HOST:PORT as bound)"
        ),
    )
    serve.add_argument(
        "--leader-ttl",
        type=_leader_ttl,
        default=DEFAULT_LEADER_TTL,
        help=(
            "seconds a leadership lasts without renewal; the leader renews every third "
            "(default: %(default)s)"
        ),
    )


def postgres_url(args: argparse.Namespace) -> str | None:
    """The PostgreSQL URL of ``--store``, or None for SQLite."""
    store: str | None = getattr(args, "store", None)
    if store is None or store.startswith("sqlite:"):
        return None
    return store


def use_sqlite_store_url(args: argparse.Namespace) -> None:
    """``--store sqlite:///PATH`` means ``--db PATH``."""
    store: str | None = getattr(args, "store", None)
    if store is not None and store.startswith("sqlite:///"):
        args.db = urllib.parse.unquote(store[len("sqlite:///") :])


def serve_replica(
    url: str,
    *,
    tokens: Any,
    sock: socket.socket,
    capacity: int,
    max_defer: float,
    max_grace: float | None,
    advertise_url: str | None,
    leader_ttl: float,
) -> int:
    """Run one replica on ``sock`` until uvicorn stops; the leader resigns on the way out.

    The socket answers at once, as a standby with no known leader (503 ``not_leader``),
    while the API's code loads; only then does the replica compete. A replica that
    listened without answering would hold each caller until its timeout.
    """
    import uvicorn

    from .._scheduler._replica import Replica
    from .._service._http_protocol import HttpProtocol
    from .._service._standby import StandbyRedirect
    from .._store._postgres import PostgresStore

    host, port = sock.getsockname()[:2]
    if advertise_url is None:
        if host in ("0.0.0.0", "::"):  # noqa: S104 - a check, not a bind
            raise SchedulerError(
                f"serve binds to {host}: give --advertise-url, the URL callers can reach"
            )
        advertise_url = f"http://{host}:{port}"
    # Bound every server-side wait well inside the TTL, so a frozen leader's
    # transaction is cut off before its successor needs the rows it holds.
    store = PostgresStore(
        url,
        lock_timeout=max(0.05, leader_ttl / 4),
        statement_timeout=max(0.1, leader_ttl / 2),
        idle_in_transaction_timeout=max(0.05, leader_ttl / 4),
        connect_timeout=max(1.0, leader_ttl),
    )
    factories: dict[str, Any] = {}

    def make_scheduler(fenced: Any) -> Any:
        # A change of leader: the holders could not renew while nobody led.
        return factories["scheduler"](
            capacity, fenced, max_defer=max_defer, max_grace=max_grace, leader_change=True
        )

    def make_app(scheduler: Any) -> Any:
        return factories["app"](scheduler, tokens)

    replica = Replica(store, make_scheduler, advertise_url=advertise_url, leader_ttl=leader_ttl)
    front = StandbyRedirect(replica, make_app, tokens)

    def warm_up_then_compete() -> None:
        # The first API app a process builds costs seconds (imports, the OpenAPI
        # schema): pay it before competing, not in the middle of a takeover.
        from .._scheduler._scheduler import Scheduler
        from .._service._app import create_app
        from .._store._sqlite import SqliteStore

        with Scheduler(1, SqliteStore(":memory:"), autostart=False) as warm:
            create_app(warm, tokens)
        factories["scheduler"], factories["app"] = Scheduler, create_app
        replica.start()

    logging.getLogger("grafos_scheduler.http").info(
        "serving",
        extra={
            "event": "serving",
            "host": host,
            "port": port,
            "store": store.url,
            "advertise_url": advertise_url,
            "leader_ttl": leader_ttl,
            "owner": replica.owner,
            "capacity": capacity,
            "max_defer": max_defer,
        },
    )
    warm_up = threading.Thread(target=warm_up_then_compete, name="grafos-warm-up", daemon=True)
    warm_up.start()
    try:
        config = uvicorn.Config(
            front, http=HttpProtocol, log_config=None, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        settle_garbage_collector()
        server.run(sockets=[sock])
    finally:
        warm_up.join()
        replica.close()
    return 0 if server.started else 2
