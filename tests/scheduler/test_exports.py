"""The public face: every name in __all__ imports, nothing private leaks."""

from __future__ import annotations

import importlib

import grafos_scheduler


def test_every_name_in_all_imports() -> None:
    module = importlib.import_module("grafos_scheduler")
    for name in grafos_scheduler.__all__:
        assert getattr(module, name) is not None, name


def test_no_private_name_in_all() -> None:
    assert not [name for name in grafos_scheduler.__all__ if name.startswith("_")]


def test_all_is_sorted_and_unique() -> None:
    assert len(set(grafos_scheduler.__all__)) == len(grafos_scheduler.__all__)


def test_contract_names_are_public() -> None:
    # The names docs/architecture.md promises to the service layer.
    promised = {
        "Scheduler",
        "SqliteStore",
        "SchedulerStore",
        "PreemptionManager",
        "PreemptionFlushObserver",
        "AuditLog",
        "Lease",
        "LeaseState",
        "Ticket",
        "NonPreemptibleReason",
        "PreemptionOutcome",
        "PreemptionDecision",
        "PendingPreemption",
        "Clock",
        "SystemClock",
        "ManualClock",
        "SchedulerError",
        "UnknownLease",
        "UnknownTicket",
        "LeaseExpired",
        "LeaseNotActive",
        "FencingTokenMismatch",
        "CapacityExceeded",
        "InvalidRequest",
    }
    assert promised <= set(grafos_scheduler.__all__)


def test_error_hierarchy() -> None:
    for name in grafos_scheduler.__all__:
        obj = getattr(grafos_scheduler, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, grafos_scheduler.SchedulerError), name
    assert issubclass(grafos_scheduler.InvalidRequest, ValueError)
