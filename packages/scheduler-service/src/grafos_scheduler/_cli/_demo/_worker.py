"""A demo worker process: run one job to its end, across preemptions, reporting events.

It runs in a spawned process and imports only the light half of grafos_scheduler
(``SchedulerClient``, ``WorkerAgent``). Events go to the parent over a queue as tuples:
``("ready", job)``, ``("waiting", job)``, ``("lease", job, lease_id, token)``,
``("progress", job, n)``, ``("flush", job)``, ``("checkpoint", job, seq, position)``,
``("stopped", job, outcome, position, detail)``, ``("done", job)`` and
``("error", job, message, traceback)``.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from grafos_pipeline import DirectoryCheckpointStore, DirectorySink
from grafos_scheduler import RunOutcome, SchedulerClient, TokenConflict, WorkerAgent

from ._config import WorkerSpec
from ._stages import build_pipeline

__all__ = ["worker_main"]


def worker_main(spec: WorkerSpec, events: Any, go: Any) -> None:
    """Entry point of a worker process: run the job to the end, across preemptions."""
    try:
        _worker(spec, events, go)
    except BaseException as exc:  # report, so the parent fails the demo with a reason
        events.put(("error", spec.job, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise SystemExit(1) from None


def _worker(spec: WorkerSpec, events: Any, go: Any) -> None:
    # The terminal belongs to the parent's progress display: log to a file of our own.
    logging.basicConfig(
        level=logging.INFO,
        filename=os.path.join(spec.log_dir, f"worker-{spec.job}.log"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # One line per HTTP request would bury the agent's own decisions.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    events.put(("ready", spec.job))  # imported and set up: waits for its start signal
    go.wait()
    client = SchedulerClient(spec.url, spec.token, timeout=10.0)
    agent = WorkerAgent(
        client,
        spec.job,
        slots=spec.slots,
        ttl=spec.ttl,
        priority=spec.priority,
        poll_interval=0.05,
        grace=spec.grace,
    )
    store = DirectoryCheckpointStore(spec.checkpoint_dir)
    sink = DirectorySink(spec.output_dir)
    records = range(spec.records)
    last_sent = 0.0

    def on_progress(position: int) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= 0.05 or position == spec.records:
            last_sent = now
            events.put(("progress", spec.job, position))

    while True:
        events.put(("waiting", spec.job))
        try:
            lease = agent.acquire()
        except TokenConflict:
            # The previous lease is not over on the server yet (it is being preempted).
            time.sleep(0.1)
            continue
        events.put(("lease", spec.job, lease.lease_id, lease.fencing_token))
        pipeline = build_pipeline(
            spec.job,
            store,
            record_delay=spec.record_delay,
            flush_delay=spec.flush_delay,
            on_flush=lambda: events.put(("flush", spec.job)),
            sink=sink,
        )
        result = agent.run(
            pipeline,
            records,
            checkpoint_every=spec.checkpoint_every,
            on_progress=on_progress,
            on_checkpoint=lambda c: events.put(("checkpoint", spec.job, c.sequence, c.position)),
        )
        events.put(("stopped", spec.job, result.outcome.value, result.position, result.detail))
        if result.outcome is RunOutcome.FINISHED:
            break
    client.close()
    events.put(("done", spec.job))
