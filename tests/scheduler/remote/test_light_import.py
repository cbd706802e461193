"""A worker process loads only the light half: no server, no metrics, no SQLite.

Each probe runs in a fresh interpreter, so nothing this test process imported counts.
anyio is the one exception, and not ours: httpx's transport imports it as soon as a
client exists, so a worker is held to what httpx alone loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from grafos_scheduler import BackgroundServer, Scheduler, SqliteStore, TokenConfig, create_app

HEAVY = ("litestar", "uvicorn", "prometheus_client", "anyio", "sqlite3")
ADMIN_TOKEN = "admin-token-light-import-01"
WORKER_TOKEN = "worker-token-light-import-1"

# Prints the heavy modules loaded so far, as a JSON list, after each step named in argv.
_REPORT = f"""
import json, sys
def loaded():
    return sorted({{m.partition(".")[0] for m in sys.modules}} & set({HEAVY!r}))
"""

# The worker's whole life through the public names: import, construct, then use both
# the client and the agent against a live server.
_WORKER = (
    _REPORT
    + """
url, token = sys.argv[1:3]
steps = {}
import grafos_scheduler
from grafos_scheduler import SchedulerClient, WorkerAgent
steps["import"] = loaded()
client = SchedulerClient(url, token)
agent = WorkerAgent(client, "light-job", ttl=5.0)
steps["construct"] = loaded()

from grafos_pipeline import MemoryCheckpointStore, Pipeline

class Count:
    name = "count"
    def __init__(self):
        self.n = 0
    def process(self, record):
        self.n += 1
        return [record]
    def snapshot(self):
        return str(self.n).encode()
    def restore(self, state):
        self.n = int(state)

agent.acquire(timeout=10)
result = agent.run(
    Pipeline("light-job", [Count()], MemoryCheckpointStore()), range(20), checkpoint_every=5
)
granted = client.acquire("light-job-2", slots=1, ttl=5.0)
client.renew(granted.lease.lease_id, granted.lease.fencing_token)
client.release(granted.lease.lease_id)
client.close()
steps["use"] = loaded()
steps["outcome"] = result.outcome.value
# The probe can see a heavy module load: a lazy name of the heavy half loads sqlite3.
grafos_scheduler.SqliteStore
steps["after_lazy_store"] = loaded()
print(json.dumps(steps))
"""
)

# What httpx alone loads once a client sends a request (httpcore imports anyio).
_HTTPX_ALONE = (
    _REPORT
    + """
import httpx
with httpx.Client() as client:
    client.get(sys.argv[1] + "/healthz")
print(json.dumps(loaded()))
"""
)


def _probe(code: str, *args: str) -> object:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("light") / "scheduler.db"
    tokens = TokenConfig(ADMIN_TOKEN, {"light": WORKER_TOKEN})
    with Scheduler(4, SqliteStore(db)) as scheduler:
        scheduler.start()
        with BackgroundServer(create_app(scheduler, tokens)) as server:
            yield server.url


def test_a_worker_loads_no_server_metrics_or_store(url: str) -> None:
    steps = _probe(_WORKER, url, WORKER_TOKEN)
    assert isinstance(steps, dict)
    assert steps["outcome"] == "finished"
    assert steps["import"] == []
    httpx_alone = _probe(_HTTPX_ALONE, url)
    assert isinstance(httpx_alone, list)
    # Once a client exists, the one heavy module allowed is the one httpx loads by
    # itself (its transport, httpcore, imports anyio when it is installed).
    assert set(httpx_alone) <= {"anyio"}
    assert set(steps["construct"]) <= set(httpx_alone)
    assert set(steps["use"]) <= set(httpx_alone)
    assert "sqlite3" in steps["after_lazy_store"]


def test_importing_the_package_loads_no_heavy_module() -> None:
    assert _probe(_REPORT + "import grafos_scheduler\nprint(json.dumps(loaded()))") == []


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("Scheduler", "grafos_scheduler._scheduler._scheduler"),
        ("SqliteStore", "sqlite3"),
        ("create_app", "litestar"),
        ("BackgroundServer", "uvicorn"),
        ("SchedulerMetrics", "prometheus_client"),
    ],
)
def test_each_heavy_name_loads_on_first_use(name: str, module: str) -> None:
    code = (
        "import json, sys, grafos_scheduler\n"
        f"before = {module!r} in sys.modules\n"
        f"value = getattr(grafos_scheduler, {name!r})\n"
        f"print(json.dumps([before, {module!r} in sys.modules, value.__module__]))\n"
    )
    assert _probe(code) == [False, True, "grafos_scheduler"]
