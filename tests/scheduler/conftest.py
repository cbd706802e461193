"""Shared fixtures: a manual clock, a real SQLite file, a scheduler on both.

These tests also run against the installed wheels (the `wheels` nox session).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import grafos_pipeline
import grafos_scheduler
from grafos_scheduler import ManualClock, Scheduler, SqliteStore
from support.scheduling import SchedulerFactory


def pytest_configure() -> None:
    # The `wheels` nox session copies these tests out of the tree and sets this, so that
    # a run silently importing the source tree cannot pass for a run against the wheels.
    if os.environ.get("GRAFOS_EXPECT_INSTALLED_WHEEL"):
        for package in (grafos_pipeline, grafos_scheduler):
            origin = Path(package.__file__ or "").resolve()
            # A wheel puts the package right in site-packages; an editable install or
            # the source tree on sys.path leaves it under packages/*/src.
            if origin.parent.parent.name != "site-packages":
                raise RuntimeError(f"expected the installed wheel, imported {origin}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.sqlite3"


@pytest.fixture
def make_scheduler(db_path: Path, clock: ManualClock) -> Iterator[SchedulerFactory]:
    """Open schedulers on the same file (a restart is: close, then make another)."""
    opened: list[Scheduler] = []

    def make(capacity: int = 10, *, max_defer: float = 30.0) -> Scheduler:
        # Deterministic: the tests drive the executor's work with tick().
        scheduler = Scheduler(
            capacity, SqliteStore(db_path), clock=clock, max_defer=max_defer, autostart=False
        )
        opened.append(scheduler)
        return scheduler

    yield make
    for scheduler in opened:
        scheduler.close()


@pytest.fixture
def scheduler(make_scheduler: SchedulerFactory) -> Scheduler:
    return make_scheduler()
