"""The domain does no I/O: decisions in plain objects, the I/O at the edge (like h11).

An AST scan of every module of grafos_scheduler._domain, as installed: no import of a
module that reaches a disk, a database, a socket or a process, and no call of ``open``.
Threads, locks and clocks are allowed: they are how the domain keeps its promises.
"""

from __future__ import annotations

import ast
from importlib import resources

import pytest

import grafos_scheduler

# Top-level modules (and packages) the domain must never import.
FORBIDDEN = frozenset(
    {
        # files, databases, processes
        "sqlite3",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "subprocess",
        "multiprocessing",
        "importlib",
        # networks
        "socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "http",
        "urllib",
        # the edge's own libraries
        "httpx",
        "litestar",
        "uvicorn",
        "anyio",
        "prometheus_client",
        "psycopg",
    }
)
FORBIDDEN_CALLS = frozenset({"open", "__import__", "exec", "eval"})


def io_in(source: str, filename: str) -> list[str]:
    """Every forbidden import or call in ``source``, as ``file:line what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append(f"{filename}:{node.lineno} calls {node.func.id}()")
        found += [
            f"{filename}:{getattr(node, 'lineno', '?')} imports {name}"
            for name in names
            if name.partition(".")[0] in FORBIDDEN
        ]
    return found


def _domain_sources() -> dict[str, str]:
    files = resources.files(grafos_scheduler) / "_domain"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in files.iterdir()
        if entry.name.endswith(".py")
    }


def test_the_domain_imports_and_calls_no_io() -> None:
    sources = _domain_sources()
    # The scan must see the modules that hold the rules, or it proves nothing.
    assert {"_lease.py", "_preemption.py", "_audit.py"} <= set(sources)
    found = [hit for name, text in sorted(sources.items()) for hit in io_in(text, name)]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import sqlite3",
        "import socket",
        "from http import client",
        "import http.server",
        "import urllib.request",
        "from subprocess import run",
        "import os.path",
        "def f():\n    import sqlite3",
        "with open('x') as f:\n    pass",
    ],
)
def test_the_scan_finds_each_kind_of_io(source: str) -> None:
    assert len(io_in(source, "bad.py")) == 1


def test_the_scan_allows_what_the_domain_needs() -> None:
    allowed = "import threading, hashlib, json, secrets, time\nfrom .._domain import _lease\n"
    assert io_in(allowed, "good.py") == []
