"""Every private piece of grafos_scheduler that a test reaches for, and why.

Tests use the public names (``from grafos_scheduler import ...``). The few that test a
private piece directly import it from here, so that the list stays short and visible and a
rename inside the package is one edit here.
"""

from __future__ import annotations

from typing import Any

from grafos_scheduler import Scheduler

# The demo under test: its configuration presets, the worker spec that crosses to a
# process (its repr must hold no token), and the run that must fail on a timeout.
from grafos_scheduler._cli._demo._run import DemoConfig, WorkerSpec, run_demo

# The CLI's entry point, called in-process: the help and argument tests read its exit
# status and output through capsys without a subprocess per case.
from grafos_scheduler._cli._main import main as cli_main

# The domain's name rule, checked on its own as well as through Scheduler.acquire.
from grafos_scheduler._domain._limits import check_name

# The wire layer's strict body parser and its models: the parser is tested on every model,
# beyond the bodies that the HTTP routes happen to send it.
from grafos_scheduler._wire._models import (
    AcquireRequest,
    FieldError,
    PreemptRequest,
    RenewRequest,
    parse_body,
)


def store_of(scheduler: Scheduler) -> Any:
    """The scheduler's store: fault tests wrap its transactions or write to it directly."""
    return scheduler._store


def active_row(scheduler: Scheduler, lease_id: int) -> Any:
    """The scheduler's in-memory row of an active lease, as the store would be given it."""
    return scheduler._active[lease_id]


__all__ = [
    "AcquireRequest",
    "DemoConfig",
    "FieldError",
    "PreemptRequest",
    "RenewRequest",
    "WorkerSpec",
    "active_row",
    "check_name",
    "cli_main",
    "parse_body",
    "run_demo",
    "store_of",
]
