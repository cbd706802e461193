"""Shared fixtures: a manual clock, a real store (a SQLite file or a PostgreSQL
database), a scheduler on both, and the throwaway PostgreSQL server of the session.

These tests also run against the installed wheels (the `wheels` nox session).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import grafos_pipeline
import grafos_scheduler
from grafos_scheduler import ManualClock, Scheduler, SchedulerStore, SqliteStore
from support.postgres import PostgresCluster, find_bindir
from support.scheduling import SchedulerFactory

StoreFactory = Callable[[], SchedulerStore]
STORE_KINDS = ("sqlite", "postgres")


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test on a store runs on both; one that opens the SQLite file itself
    (``db_path``: tampering, file locks, read-only opens) runs on SQLite only."""
    if "store_kind" in metafunc.fixturenames:
        sqlite_only = "db_path" in metafunc.fixturenames
        metafunc.parametrize("store_kind", ("sqlite",) if sqlite_only else STORE_KINDS)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session, in a temporary directory.

    Without PostgreSQL's server binaries the tests that need it are skipped, except
    under ``CI=true``, where that is a failure: CI must test both stores.
    """
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; "
            "apt-get install postgresql"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cluster = PostgresCluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty schema (its own tables) on the session's server."""
    return postgres_cluster.create_schema()


@pytest.fixture
def make_store(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreFactory]:
    """Open stores on one database (a restart is: close, then open another)."""
    opened: list[SchedulerStore] = []
    if store_kind == "sqlite":
        path = tmp_path / "scheduler.sqlite3"  # the same file as db_path

        def make() -> SchedulerStore:
            store = SqliteStore(path)
            opened.append(store)
            return store

    else:
        from grafos_scheduler import PostgresStore

        url = request.getfixturevalue("postgres_url")

        def make() -> SchedulerStore:
            store = PostgresStore(url)
            opened.append(store)
            return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "scheduler.sqlite3"


@pytest.fixture
def make_scheduler(make_store: StoreFactory, clock: ManualClock) -> Iterator[SchedulerFactory]:
    """Open schedulers on the same database (a restart is: close, then make another)."""
    opened: list[Scheduler] = []

    def make(capacity: int = 10, *, max_defer: float = 30.0) -> Scheduler:
        # Deterministic: the tests drive the executor's work with tick().
        scheduler = Scheduler(
            capacity, make_store(), clock=clock, max_defer=max_defer, autostart=False
        )
        opened.append(scheduler)
        return scheduler

    yield make
    for scheduler in opened:
        scheduler.close()


@pytest.fixture
def scheduler(make_scheduler: SchedulerFactory) -> Scheduler:
    return make_scheduler()
