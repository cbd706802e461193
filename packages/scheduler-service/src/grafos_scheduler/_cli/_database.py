"""The read commands' other source: a scheduler's SQLite file, opened read-only."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from grafos_scheduler import SchedulerError, SqliteStore

from ._arguments import UsageError
from ._connection import add_url_arguments, service_url

__all__ = ["DEFAULT_DB", "add_source_arguments", "iso", "open_store", "use_database"]

DEFAULT_DB = "grafos-scheduler.db"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db FILE`` or ``--url URL`` (with ``--tokens``): where a read command reads."""
    parser.add_argument(
        "--db",
        help=f"SQLite file of a scheduler, read directly (default: {DEFAULT_DB}, as serve)",
    )
    add_url_arguments(parser)


def use_database(args: argparse.Namespace) -> str | None:
    """The file to read, or None to ask the service: --db, then --url/GRAFOS_URL, then the
    file ``serve`` uses by default, in this directory."""
    if args.db is not None and args.url is not None:
        raise UsageError("--db and --url are two sources: pass one of them")
    if args.db is not None:
        return str(args.db)
    if service_url(args) is not None:
        return None
    return DEFAULT_DB


def open_store(path: str, *, must_exist: bool, read_only: bool = False) -> SqliteStore:
    if must_exist and not Path(path).is_file():
        raise UsageError(f"no scheduler database at {path!r}")
    try:
        return SqliteStore(path, read_only=read_only)
    except (SchedulerError, OSError) as exc:
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None
    except Exception as exc:  # sqlite3.DatabaseError: not a database, locked, ...
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None


def iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="seconds")
