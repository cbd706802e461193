"""The pipeline that the tests' ``grafos-scheduler worker`` processes run.

    grafos-scheduler worker ... --pipeline support.worker_pipeline:build

``build()`` returns the tests' deterministic stages (Mix -> RunningSum -> Sink) and the
whole input, ``range(GRAFOS_TEST_RECORDS)``; each record takes
``GRAFOS_TEST_RECORD_DELAY`` seconds, so that a test can act while the worker runs.
The output is the sink's state in the newest checkpoint: :func:`output` reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from grafos_pipeline import DirectoryCheckpointStore
from support.stages import Mix, RunningSum, Sink


def build() -> tuple[list[Any], range]:
    records = int(os.environ.get("GRAFOS_TEST_RECORDS", "200"))
    delay = float(os.environ.get("GRAFOS_TEST_RECORD_DELAY", "0.01"))
    return [Mix(delay), RunningSum(), Sink()], range(records)


def output(checkpoint_dir: Path, job: str) -> tuple[int, list[Any]]:
    """The newest checkpoint's position and the sink's rows in it."""
    checkpoint = DirectoryCheckpointStore(checkpoint_dir).latest(job)
    if checkpoint is None:
        return 0, []
    return checkpoint.position, json.loads(checkpoint.stage_states["sink"])


def not_a_pair() -> list[int]:
    """A build function that breaks the contract: the worker refuses it (status 2)."""
    return [1, 2, 3]
