"""A worker process for the agent tests: a real WorkerAgent over HTTP, a real store.

    python agent_worker.py gate   URL TOKEN JOB CHECKPOINT_DIR STATE_DIR
    python agent_worker.py zombie URL TOKEN JOB CHECKPOINT_DIR STATE_DIR

gate: runs a pipeline whose first checkpoint flush blocks until STATE_DIR/gate exists
(after creating STATE_DIR/in-flush), and prints the run's result as JSON.

zombie: checkpoints every record; after the first one it SIGSTOPs itself at a point
where it holds no lock, and on SIGCONT commits again at once, as a paused worker that
has not yet noticed that it lost its lease would. Prints what happened to that commit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grafos_pipeline import DirectoryCheckpointStore, Pipeline, StaleFencingToken
from grafos_scheduler import SchedulerClient, WorkerAgent


class GatedSink:
    """Collects records; its first snapshot waits for the test to open the gate."""

    name = "sink"

    def __init__(self, state_dir: Path | None) -> None:
        self.rows: list[Any] = []
        self.state_dir = state_dir

    def process(self, record: Any) -> Iterable[Any]:
        self.rows.append(record)
        return [record]

    def snapshot(self) -> bytes:
        if self.state_dir is not None:
            (self.state_dir / "in-flush").touch()
            give_up = time.monotonic() + 60
            while not (self.state_dir / "gate").exists():
                if time.monotonic() > give_up:
                    raise TimeoutError("the test never opened the gate")
                time.sleep(0.01)
            self.state_dir = None  # only the first flush waits
        return json.dumps(self.rows).encode()

    def restore(self, state: bytes) -> None:
        self.rows = json.loads(state)


def gate(client: SchedulerClient, job: str, store: DirectoryCheckpointStore, state: Path) -> None:
    agent = WorkerAgent(client, job, ttl=30.0)
    agent.acquire(timeout=30)
    pipeline = Pipeline(job, [GatedSink(state)], store)
    result = agent.run(pipeline, range(50), checkpoint_every=5, final_checkpoint=False)
    print(
        json.dumps(
            {
                "outcome": result.outcome.value,
                "position": result.position,
                "checkpoints": result.checkpoints,
                "detail": result.detail,
            }
        ),
        flush=True,
    )


def zombie(client: SchedulerClient, job: str, store: DirectoryCheckpointStore, state: Path) -> None:
    agent = WorkerAgent(client, job, ttl=1.0)
    agent.acquire(timeout=30)
    pipeline = Pipeline(
        job,
        [GatedSink(None)],
        store,
        observer=agent,
        lease_id=agent.lease_id,
        fencing_token=agent.fencing_token,
    )
    pipeline.resume()
    pipeline.process([0])
    pipeline.checkpoint()
    (state / "stopping").write_text(str(agent.fencing_token))
    os.kill(os.getpid(), signal.SIGSTOP)  # between commits: no lock is held
    # Woken by SIGCONT, long after the lease expired: commit before checking anything.
    pipeline.process([1])
    try:
        pipeline.checkpoint()
        late = "committed"
    except StaleFencingToken:
        late = "refused"
    lost = agent.lost.wait(15)  # the renewer's next call gets 410
    agent.abandon()
    print(json.dumps({"late_commit": late, "lost": lost, "reason": agent.lost_reason}), flush=True)


def main() -> None:
    mode, url, token, job, checkpoint_dir, state_dir = sys.argv[1:7]
    client = SchedulerClient(url, token)
    store = DirectoryCheckpointStore(checkpoint_dir)
    {"gate": gate, "zombie": zombie}[mode](client, job, store, Path(state_dir))
    client.close()


if __name__ == "__main__":
    main()
