"""Run inside an environment holding the scheduler wheel and the core wheel."""

from __future__ import annotations

import sys
from importlib import resources

import grafos_pipeline
import grafos_scheduler

# Installed without extras: the PostgreSQL names need the `postgres` extra, and say so.
NEEDS_POSTGRES = {"PostgresStore", "LeadershipLost"}
for name in sorted(NEEDS_POSTGRES):
    try:
        getattr(grafos_scheduler, name)
    except ImportError as exc:
        if "grafos-scheduler[postgres]" not in str(exc):
            print(f"grafos_scheduler.{name} without psycopg: unclear error {exc}")
            sys.exit(1)
    else:
        print(f"grafos_scheduler.{name} imported without the postgres extra installed")
        sys.exit(1)

for module in (grafos_pipeline, grafos_scheduler):
    if "site-packages" not in (module.__file__ or ""):
        print(f"{module.__name__} imported from {module.__file__}, not site-packages")
        sys.exit(1)
    names = [n for n in module.__all__ if module is grafos_pipeline or n not in NEEDS_POSTGRES]
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        print(f"{module.__name__}.__all__ names missing attributes: {missing}")
        sys.exit(1)
# The dashboard at /ui is served from package data: it must be inside the wheel.
ui = resources.files("grafos_scheduler._service").joinpath("_ui")
absent = [name for name in ("index.html", "app.js", "app.css") if not ui.joinpath(name).is_file()]
if absent:
    print(f"the scheduler wheel lacks the dashboard assets {absent}")
    sys.exit(1)
print(f"scheduler wheel with core: ok ({len(grafos_scheduler.__all__)} scheduler names)")
