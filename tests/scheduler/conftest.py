"""Shared fixtures: a manual clock, a real SQLite file, a scheduler on both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grafos_scheduler import ManualClock, Scheduler, SqliteStore

SchedulerFactory = Callable[..., Scheduler]


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
