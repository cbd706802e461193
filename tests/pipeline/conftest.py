"""Fixtures for the core's tests. These tests also run against the installed wheel."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import grafos_pipeline
from grafos_pipeline import DirectorySink, SqliteSink


def pytest_configure() -> None:
    # The `wheels` nox session copies these tests out of the tree and sets this, so
    # that a test run silently picking up the source tree cannot pass for the wheel.
    if os.environ.get("GRAFOS_EXPECT_INSTALLED_WHEEL"):
        origin = Path(grafos_pipeline.__file__).resolve()
        if "site-packages" not in origin.parts:
            raise RuntimeError(f"expected the installed wheel, imported {origin}")


# -- sinks: both built-in sinks, for tests parametrized over them --------------------

SINK_KINDS = ("directory", "sqlite")


def open_sink(kind: str, where: Path, **options: Any) -> DirectorySink | SqliteSink:
    """A real sink of ``kind`` kept under ``where`` (a directory; created if needed)."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "directory":
        return DirectorySink(where / "output", **options)
    return SqliteSink(where / "output.db", **options)


@pytest.fixture(params=SINK_KINDS)
def sink_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


class SinkFactory:
    """Opens (and re-opens, as a new process would) one real sink of one kind."""

    def __init__(self, kind: str, where: Path) -> None:
        self.kind = kind
        self.where = where

    def __call__(self, **options: Any) -> DirectorySink | SqliteSink:
        return open_sink(self.kind, self.where, **options)


@pytest.fixture
def make_sink(sink_kind: str, tmp_path: Path) -> SinkFactory:
    return SinkFactory(sink_kind, tmp_path / "sink")
