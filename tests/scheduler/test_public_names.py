"""Every public name presents itself as grafos_scheduler's own, wherever it is shown.

Reprs, tracebacks, docs and pickles name ``grafos_scheduler.Lease``, never the private
module that defines it; and the names still behave (type hints, pickling, lazy loading).
"""

from __future__ import annotations

import enum
import inspect
import pickle
import pydoc
import subprocess
import sys
import traceback
import typing
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import grafos_scheduler
from grafos_scheduler import (
    LeaseState,
    NonPreemptibleReason,
    Scheduler,
    SqliteStore,
    UnknownLease,
)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    with Scheduler(2, SqliteStore(tmp_path / "scheduler.db"), autostart=False) as s:
        yield s


@pytest.mark.parametrize("name", grafos_scheduler.__all__)
def test_every_public_name_claims_the_package(name: str) -> None:
    obj = getattr(grafos_scheduler, name)
    assert obj.__module__ == "grafos_scheduler"
    assert obj.__qualname__ == name
    if inspect.isclass(obj) and not issubclass(obj, enum.Enum):  # enums show <enum 'X'>
        assert repr(obj) == f"<class 'grafos_scheduler.{name}'>"


@pytest.mark.parametrize(
    "name", [n for n in grafos_scheduler.__all__ if inspect.isclass(getattr(grafos_scheduler, n))]
)
def test_type_hints_still_resolve(name: str) -> None:
    # get_type_hints resolves a class's annotations in sys.modules[cls.__module__].
    cls = getattr(grafos_scheduler, name)
    hints = typing.get_type_hints(cls, include_extras=True)
    assert not [v for v in hints.values() if isinstance(v, str)]


def test_tracebacks_name_the_public_error() -> None:
    (line,) = traceback.format_exception_only(UnknownLease(5))
    assert line.startswith("grafos_scheduler.UnknownLease: ")


def test_reprs_show_the_public_path_or_just_the_name(scheduler: Scheduler) -> None:
    lease = scheduler.acquire("job", "alice", 0, 1, 10.0)
    assert isinstance(lease, grafos_scheduler.Lease)
    # attrs shows the class's name alone; a default repr shows its whole path.
    assert repr(lease).startswith("Lease(lease_id=")
    assert repr(scheduler.audit.records()[0]).startswith("AuditRecord(seq=1, ")
    assert repr(scheduler.audit).startswith("<grafos_scheduler.AuditLog object at ")
    assert repr(scheduler.manager).startswith("<grafos_scheduler.PreemptionManager object at ")
    assert repr(LeaseState.ACTIVE) == "<LeaseState.ACTIVE: 'active'>"


def test_docs_name_the_package() -> None:
    doc = pydoc.plain(pydoc.render_doc(grafos_scheduler.Lease))
    assert doc.startswith("Python Library Documentation: class Lease in module grafos_scheduler")


def test_values_pickle_through_the_public_path(scheduler: Scheduler) -> None:
    lease = scheduler.acquire("job", "alice", 0, 1, 10.0)
    assert isinstance(lease, grafos_scheduler.Lease)
    decision = scheduler.request_preemption(lease.lease_id, "make room")
    record = scheduler.audit.records()[-1]
    for value in (lease, decision, record, LeaseState.FENCED, NonPreemptibleReason.OPERATOR_HOLD):
        data = pickle.dumps(value)
        assert b"grafos_scheduler\x94" in data  # by the public name, not a _module
        assert b"grafos_scheduler._" not in data
        assert pickle.loads(data) == value  # noqa: S301 - bytes pickled just above
    assert attrs.evolve(lease, holder="bob").holder == "bob"


def test_a_fresh_interpreter_unpickles_lazy_names() -> None:
    # A lazy name is found through the package's __getattr__ when it is unpickled.
    data = pickle.dumps([Scheduler, SqliteStore, grafos_scheduler.create_app])
    code = (
        "import pickle, sys\n"
        "values = pickle.loads(sys.stdin.buffer.read())\n"
        "print(' '.join(f'{v.__module__}.{v.__qualname__}' for v in values))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, timeout=60, check=True
    )
    assert done.stdout.decode().split() == [
        "grafos_scheduler.Scheduler",
        "grafos_scheduler.SqliteStore",
        "grafos_scheduler.create_app",
    ]


def test_dir_lists_the_lazy_names() -> None:
    assert set(grafos_scheduler.__all__) <= set(dir(grafos_scheduler))


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="'NoSuchThing'"):
        _ = grafos_scheduler.NoSuchThing
