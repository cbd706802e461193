"""Run inside a bare environment holding only the grafos-pipeline wheel.

It must import, it must come from site-packages (not the source tree), and no
third-party distribution or module may be importable beside it.
"""

from __future__ import annotations

import importlib.metadata
import pkgutil
import site
import sys

import grafos_pipeline

problems: list[str] = []

if "site-packages" not in (grafos_pipeline.__file__ or ""):
    problems.append(f"grafos_pipeline imported from {grafos_pipeline.__file__}, not site-packages")

dists = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
if dists != ["grafos-pipeline"]:
    problems.append(f"distributions installed beside the core: {dists}")

# uv's venv shim is the only non-stdlib module allowed next to ours.
allowed = {"grafos_pipeline", "_virtualenv"}
found = sorted(
    m.name for m in pkgutil.iter_modules(site.getsitepackages()) if m.name not in allowed
)
if found:
    problems.append(f"third-party modules importable beside the core: {found}")

loaded = sorted(
    name.partition(".")[0]
    for name in sys.modules
    if name.partition(".")[0] not in sys.stdlib_module_names
    and name.partition(".")[0] not in allowed
    and name != "__main__"
)
if loaded:
    problems.append(f"importing the core loaded non-stdlib modules: {sorted(set(loaded))}")

if problems:
    print("core wheel check FAILED:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"core wheel alone: ok ({grafos_pipeline.__file__}, names: {len(grafos_pipeline.__all__)})")
