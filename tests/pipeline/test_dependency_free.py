"""The core imports nothing outside the standard library (and never the scheduler)."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import resources

import grafos_pipeline


def _imported_top_level_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in resources.files(grafos_pipeline).iterdir():
        if not entry.name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(entry.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(entry.name)
    return found


def test_every_import_is_standard_library() -> None:
    imported = _imported_top_level_modules()
    assert imported, "the scan found no imports at all: it is not looking at the package"
    foreign = {
        name: sorted(files)
        for name, files in imported.items()
        if name not in sys.stdlib_module_names and name != "__future__"
    }
    assert foreign == {}


def test_importing_the_core_loads_only_the_standard_library() -> None:
    probe = (
        "import sys, grafos_pipeline\n"
        "bad = sorted({m.partition('.')[0] for m in sys.modules}"
        " - set(sys.stdlib_module_names) - {'grafos_pipeline', '__main__', '_virtualenv'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == ""
