"""Every private piece of grafos_scheduler that a test reaches for, and why.

Tests use the public names (``from grafos_scheduler import ...``). The few that test a
private piece directly import it from here, so that the list stays short and visible and a
rename inside the package is one edit here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import pytest

from grafos_scheduler import Scheduler, SqliteStore

# The CLI's configuration resolution and usage error, tested without a serve process.
from grafos_scheduler._cli._arguments import UsageError
from grafos_scheduler._cli._config import resolve as resolve_serve_config

# The demo under test: its configuration presets, the worker spec that crosses to a
# process (its repr must hold no token), and the run that must fail on a timeout.
from grafos_scheduler._cli._demo._config import DemoConfig, WorkerSpec

# The demo's directory rule (the marker), tested without a whole run.
from grafos_scheduler._cli._demo._directory import MARKER, DemoDirectoryRefused, claim_directory

# The demo's display, rendered into a rich Console of a given width.
from grafos_scheduler._cli._demo._display import LIVE_EVENTS, Display, JobView
from grafos_scheduler._cli._demo._orchestration import run_demo

# The JSON log lines of serve and the demo, formatted in-process.
from grafos_scheduler._cli._logging import QUIET_LOGGERS, JsonLogFormatter, configure_logging

# The CLI's entry point, called in-process: the help and argument tests read its exit
# status and output through capsys without a subprocess per case.
from grafos_scheduler._cli._main import build_parser as cli_parser
from grafos_scheduler._cli._main import main as cli_main

# The commit point's domain pieces (core7): the lease book that returns Changes, the
# audit chain rule and its payload builders, the id and limit rules the wire shares.
from grafos_scheduler._domain import _audit_entries as audit_entries
from grafos_scheduler._domain import _limits as limits
from grafos_scheduler._domain._audit import GENESIS_HASH, AuditEntry, chain, verify_records
from grafos_scheduler._domain._ids import ID_PATTERN, check_id, id_from_hex, id_hex, new_id
from grafos_scheduler._domain._lease_book import LeaseBook

# The domain's name rule, checked on its own as well as through Scheduler.acquire.
from grafos_scheduler._domain._limits import check_name

# The service's pieces (service7): the routes (none takes a data parameter), the body a
# route declares, the request schema the OpenAPI document publishes, the policy.
from grafos_scheduler._service import _policy as policy
from grafos_scheduler._service._body import body_model

# The event loop's wait for group commit, driven by tasks of one loop turn.
from grafos_scheduler._service._durability import DurabilityWaiter

# The uvicorn protocol that writes each answer in one piece, driven without a socket.
from grafos_scheduler._service._http_protocol import HttpProtocol
from grafos_scheduler._service._openapi import request_schema
from grafos_scheduler._service._routes import ROUTES
from grafos_scheduler._wire import _models as wire_models

# The wire layer's strict body parser and its models: the parser is tested on every model,
# beyond the bodies that the HTTP routes happen to send it.
from grafos_scheduler._wire._models import (
    AcquireRequest,
    HoldRequest,
    PreemptRequest,
    ReasonName,
    ReleaseRequest,
    RenewalEntry,
    RenewalsRequest,
    RenewRequest,
)
from grafos_scheduler._wire._parsing import FieldError, parse_body, parse_id, parse_renewals


def store_of(scheduler: Scheduler) -> Any:
    """The scheduler's store: fault tests wrap its transactions or write to it directly."""
    return scheduler._store


def book_of(scheduler: Scheduler) -> Any:
    """The scheduler's LeaseBook: commit-point tests compare memory before and after."""
    return scheduler._book


def stale_grant(scheduler: Scheduler, job: str, lease_id: int) -> Any:
    """A grant of ``job`` decided from a stale counter (0), as its Change: it would
    mint token 1 again, so a store must refuse it once the job has had a token."""
    clock = scheduler.clock
    change, _row = book_of(scheduler).grant(
        lease_id=lease_id,
        job=job,
        holder="w",
        priority=0,
        slots=1,
        ttl=10.0,
        ticket_id=None,
        last_token=0,
        now=clock.monotonic(),
        wall=clock.wall(),
    )
    return change


def listening_socket(server: Any) -> Any:
    """The socket a BackgroundServer bound and hands to uvicorn (its TCP options)."""
    return server._socket


def active_row(scheduler: Scheduler, lease_id: int) -> Any:
    """The scheduler's in-memory row of an active lease, as the store would be given it."""
    return scheduler._active[lease_id]


class FailingCommits:
    """Stands in for a SqliteStore's connection and fails its next ``times`` COMMITs
    with the error SQLite gives for a failed WAL write; everything else is real."""

    def __init__(self, store: Any, times: int) -> None:
        self.real = store._conn
        self.left = times
        self.failed = 0
        store._conn = self

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.left:
            self.left -= 1
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return self.real.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def wal_sync_of(store: Any) -> Any:
    """A SqliteStore's group sync: durability tests hold back or fail its WAL fsync."""
    return store._sync


__all__ = [
    "GENESIS_HASH",
    "ID_PATTERN",
    "LIVE_EVENTS",
    "MARKER",
    "QUIET_LOGGERS",
    "ROUTES",
    "AcquireRequest",
    "AuditEntry",
    "DemoConfig",
    "DemoDirectoryRefused",
    "Display",
    "DurabilityWaiter",
    "FailingCommits",
    "FieldError",
    "HoldRequest",
    "HttpProtocol",
    "JobView",
    "JsonLogFormatter",
    "LeaseBook",
    "PreemptRequest",
    "ReasonName",
    "ReleaseRequest",
    "RenewRequest",
    "RenewalEntry",
    "RenewalsRequest",
    "UsageError",
    "WorkerSpec",
    "active_row",
    "audit_entries",
    "body_model",
    "book_of",
    "chain",
    "check_id",
    "check_name",
    "claim_directory",
    "cli_main",
    "cli_parser",
    "configure_logging",
    "id_from_hex",
    "id_hex",
    "limits",
    "listening_socket",
    "new_id",
    "parse_body",
    "parse_id",
    "parse_renewals",
    "policy",
    "request_schema",
    "resolve_serve_config",
    "run_demo",
    "stale_grant",
    "store_of",
    "verify_records",
    "wal_sync_of",
    "wire_models",
]


class HeldFsync:
    """Stands in for the store's WAL fsync: counts calls, can hold them, can fail them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: SqliteStore) -> None:
        self.real: Callable[[], None] = store._fsync_wal
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        monkeypatch.setattr(store, "_fsync_wal", self)
        # GroupSync holds the bound method it was given: point it here too.
        monkeypatch.setattr(wal_sync_of(store), "_fsync", self)

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.real()
