"""Watch benchmark: from a preemption request to the holder's watch being told.

The server runs in its own process (the real app on SQLite, WAL, ``synchronous=FULL``),
on 127.0.0.1. A worker holds a lease with a grace window and keeps ``GET /v1/watch``
waiting on its own keep-alive connection; the admin sends ``POST .../preempt``. One
sample is the time from just before the admin sends the request to the moment the
worker's watch answer has arrived: the request's parse, the scheduler's decision, its
durable commit (an fsync), the event log, the wake-up of the server's event loop and
the answer's trip back.

The floor is a bare round trip to the same server (``GET /healthz``, no scheduler, no
store), interleaved round by round with the samples. Rows: p50 and p99 per round.
Target: p99 <= 50 ms.

Run: ``python benchmarks/bench_watch.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    # mypy (explicit package bases, from the repository root) sees benchmarks.harness;
    # at run time benchmarks/ itself is on sys.path (the script's own directory).
    from benchmarks.harness import Row, Sample, markdown_table
else:
    from harness import Row, Sample, markdown_table

ADMIN_TOKEN = "bench-admin-token-000000001"  # noqa: S105 - a throwaway local token
WORKER_TOKEN = "bench-worker-token-00000001"  # noqa: S105
TARGET_P99 = 0.050
# Time for the watch to be parked in the server before the request is sent.
PARK = 0.02


def serve(port: int, directory: str) -> None:
    """Run the real app on 127.0.0.1:port (in a child process)."""
    import uvicorn

    from grafos_scheduler import Scheduler, SqliteStore, TokenConfig, create_app

    scheduler = Scheduler(2, SqliteStore(Path(directory) / "bench.db"), max_defer=30.0)
    scheduler.start()
    app = create_app(scheduler, TokenConfig(ADMIN_TOKEN, {"worker": WORKER_TOKEN}))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Watcher:
    """The worker's side: one watch at a time, on its own connection and thread."""

    def __init__(self, worker: httpx.Client) -> None:
        self.worker = worker
        self.answer: dict[str, object] | None = None
        self.at = 0.0

    def start(self, cursor: str) -> threading.Thread:
        def run() -> None:
            response = self.worker.get("/v1/watch", params={"cursor": cursor, "timeout": 30})
            self.at = time.perf_counter()
            self.answer = response.json()

        thread = threading.Thread(target=run)
        thread.start()
        return thread


def _one_notice(worker: httpx.Client, admin: httpx.Client, i: int) -> float:
    granted = worker.post(
        "/v1/leases", json={"job": f"watched-{i}", "slots": 1, "ttl": 600, "grace": 10}
    )
    lease_id = granted.json()["lease"]["lease_id"]
    cursor = worker.get("/v1/watch", params={"timeout": 0}).json()["cursor"]
    watcher = _Watcher(worker)
    thread = watcher.start(cursor)
    time.sleep(PARK)
    sent = time.perf_counter()
    decided = admin.post(f"/v1/leases/{lease_id}/preempt", json={"cause": "bench"})
    thread.join(30)
    if decided.status_code != 200 or watcher.answer is None:
        raise RuntimeError(f"preempt {decided.status_code}: {decided.text}")
    events = watcher.answer["events"]
    if not isinstance(events, list) or not events:
        raise RuntimeError(f"the watch answered without the request: {watcher.answer}")
    # The final checkpoint is taken: release cooperatively, nothing lost.
    worker.post(
        f"/v1/leases/{lease_id}/release", json={"work_lost_records": 0, "work_lost_seconds": 0}
    )
    return watcher.at - sent


def _round_trip(client: httpx.Client) -> float:
    start = time.perf_counter()
    client.get("/healthz")
    return time.perf_counter() - start


def bench_watch(quick: bool) -> list[Row]:
    rounds, per_round = (3, 15) if quick else (7, 60)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="grafos-bench-") as directory:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            give_up = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > give_up:
                    raise RuntimeError("the benchmark server did not start")
                time.sleep(0.05)
            worker = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {WORKER_TOKEN}"}, timeout=60
            )
            admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            _one_notice(worker, admin, -1)  # warm-up: connections, first commit
            ours: list[list[float]] = []
            floor: list[list[float]] = []
            n = 0
            for r in range(rounds):
                notices: list[float] = []
                trips: list[float] = []
                for _ in range(per_round):
                    # Interleaved, alternating which goes first, to share the noise.
                    if r % 2 == 0:
                        notices.append(_one_notice(worker, admin, n))
                        trips.append(_round_trip(worker))
                    else:
                        trips.append(_round_trip(worker))
                        notices.append(_one_notice(worker, admin, n))
                    n += 1
                ours.append(notices)
                floor.append(trips)
            worker.close()
            admin.close()
        finally:
            server.terminate()
            server.wait(10)

    def per_round_quantile(samples: list[list[float]], q: float) -> Sample:
        return Sample(tuple(_quantile(s, q) for s in samples))

    p99 = per_round_quantile(ours, 0.99)
    return [
        Row(
            "watch",
            f"preempt request -> watch told, p50 ({per_round}/round)",
            per_round_quantile(ours, 0.5),
            "GET /healthz round trip p50",
            per_round_quantile(floor, 0.5),
            "",
            None,
        ),
        Row(
            "watch",
            f"preempt request -> watch told, p99 ({per_round}/round)",
            p99,
            "GET /healthz round trip p99",
            per_round_quantile(floor, 0.99),
            "p99 <= 50 ms",
            statistics.median(p99.values) <= TARGET_P99,
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    return bench_watch(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        serve(int(args.serve[0]), args.serve[1])
    else:
        print(markdown_table(run(quick=args.quick)))
