"""The serving process's garbage collector: what was loaded is frozen, and young
collections are rarer than Python's default."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json
from grafos_scheduler._cli._gc import GC_THRESHOLD, settle_garbage_collector
before = gc.get_threshold()
settle_garbage_collector()
print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold(), GC_THRESHOLD]))
"""


def test_a_serving_process_freezes_what_it_loaded_and_raises_the_young_threshold() -> None:
    # In a process of its own: the settings are the whole process's.
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    frozen, before, after, threshold = json.loads(out)
    assert frozen > 1000  # the interpreter's objects and the package's, at least
    assert after == [threshold, before[1], before[2]]
    assert threshold > before[0]
