"""Fixtures for the core's tests. These tests also run against the installed wheel."""

from __future__ import annotations

import os
from pathlib import Path

import grafos_pipeline


def pytest_configure() -> None:
    # The `wheels` nox session copies these tests out of the tree and sets this, so
    # that a test run silently picking up the source tree cannot pass for the wheel.
    if os.environ.get("GRAFOS_EXPECT_INSTALLED_WHEEL"):
        origin = Path(grafos_pipeline.__file__).resolve()
        if "site-packages" not in origin.parts:
            raise RuntimeError(f"expected the installed wheel, imported {origin}")
