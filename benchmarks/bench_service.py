"""Service benchmarks: HTTP renewals vs a bare endpoint; acquire+release vs a bare commit.

(a) Lease renewals over HTTP. The server runs in its own process (so the load
    generator does not share its GIL): the real app plus one bare route, ``POST
    /bench/bare``, that reads the same JSON body and returns a constant. Both go through
    the same uvicorn, the same middleware (authentication, latency histogram) and the
    same keep-alive connections, so the ratio is what a renewal itself costs: strict
    parsing, the scheduler, and a SQLite commit with ``synchronous=FULL`` (an fsync).
    The load generator is bounded: a fixed number of client threads, each sending a
    fixed number of requests back to back on 127.0.0.1. Rounds alternate ours/floor.

(b) acquire+release cycles on a Scheduler over SqliteStore (WAL, ``synchronous=FULL``),
    against the bare floor: one single-row ``BEGIN IMMEDIATE ... COMMIT`` in a WAL
    database with ``synchronous=FULL`` in the same directory. A cycle is two state
    changes (grant, release), each one transaction with its audit record, so a ratio
    near 2 means the scheduler adds little beyond the commits it must make.

Run: ``python benchmarks/bench_service.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
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
    from benchmarks.harness import Row, Sample, interleaved, markdown_table
else:
    from harness import Row, Sample, interleaved, markdown_table

ADMIN_TOKEN = "bench-admin-token-000000001"  # noqa: S105 - a throwaway local token
CLIENTS = 4


# ----------------------------------------------------------------------------- server side


def serve(port: int, directory: str) -> None:
    """Run the real app plus the bare route on 127.0.0.1:port (in a child process)."""
    import uvicorn
    from litestar import Request, post

    from grafos_scheduler import Scheduler, SqliteStore
    from grafos_scheduler._service._app import create_app
    from grafos_scheduler._service._auth import TokenConfig

    async def no_body_parsing(request: Request) -> None:  # type: ignore[type-arg]
        return None  # the floor skips our strict body parser; Litestar's own still runs

    @post("/bench/bare", status_code=200, before_request=no_body_parsing)
    async def bare(request: Request) -> dict[str, object]:  # type: ignore[type-arg]
        await request.body()
        return {"ok": True}

    workers = {f"w{i}": f"bench-worker-token-{i:08d}" for i in range(CLIENTS)}
    scheduler = Scheduler(CLIENTS, SqliteStore(Path(directory) / "bench.db"))
    scheduler.start()
    app = create_app(scheduler, TokenConfig(ADMIN_TOKEN, workers))
    app.register(bare)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- (a) HTTP


def _load(calls: list[tuple[httpx.Client, str, dict[str, object]]], per_client: int) -> list[float]:
    """Each client sends ``per_client`` requests back to back; returns every latency."""
    latencies: list[list[float]] = [[] for _ in calls]
    failures: list[str] = []

    def drive(i: int) -> None:
        client, path, body = calls[i]
        own = latencies[i]
        for _ in range(per_client):
            start = time.perf_counter()
            response = client.post(path, json=body)
            own.append(time.perf_counter() - start)
            if response.status_code != 200:
                failures.append(f"{path}: {response.status_code} {response.text}")
                return

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(failures[0])
    return [x for own in latencies for x in own]


def bench_http(quick: bool) -> list[Row]:
    rounds, per_client = (3, 100) if quick else (7, 400)
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
            clients = [
                httpx.Client(
                    base_url=base,
                    headers={"Authorization": f"Bearer bench-worker-token-{i:08d}"},
                )
                for i in range(CLIENTS)
            ]
            renew_calls: list[tuple[httpx.Client, str, dict[str, object]]] = []
            for i, c in enumerate(clients):
                lease = c.post("/v1/leases", json={"job": f"bench-{i}", "slots": 1, "ttl": 3600})
                body = lease.json()["lease"]
                renew_calls.append(
                    (
                        c,
                        f"/v1/leases/{body['lease_id']}/renew",
                        {"fencing_token": body["fencing_token"], "reasons": []},
                    )
                )
            bare_calls = [(c, "/bench/bare", body) for c, _, body in renew_calls]
            ours_lat: list[list[float]] = []
            floor_lat: list[list[float]] = []
            total = CLIENTS * per_client

            def ours() -> None:
                ours_lat.append(_load(renew_calls, per_client))

            def floor() -> None:
                floor_lat.append(_load(bare_calls, per_client))

            a, b = interleaved(ours, floor, rounds=rounds, number=1, warmup=1)
            ours_lat, floor_lat = ours_lat[1:], floor_lat[1:]  # drop the warm-up round
            for c in clients:
                c.close()
        finally:
            server.terminate()
            server.wait(10)

    def per_op(sample: Sample) -> Sample:
        return Sample(tuple(v / total for v in sample.values))

    def rate(sample: Sample) -> Sample:
        return Sample(tuple(total / v for v in sample.values))

    def pct(rounds_: list[list[float]], q: float) -> Sample:
        return Sample(tuple(statistics.quantiles(r, n=100)[int(q) - 1] for r in rounds_))

    return [
        Row(
            "http",
            f"renewal, {CLIENTS} clients (time per renewal)",
            per_op(a),
            "bare endpoint",
            per_op(b),
            "",
            None,
        ),
        Row(
            "http", "renewals per second", rate(a), "bare endpoint", rate(b), "", None, unit="req/s"
        ),
        Row(
            "http",
            "renewal latency p50",
            pct(ours_lat, 50),
            "bare endpoint",
            pct(floor_lat, 50),
            "",
            None,
        ),
        Row(
            "http",
            "renewal latency p99",
            pct(ours_lat, 99),
            "bare endpoint",
            pct(floor_lat, 99),
            "",
            None,
        ),
    ]


# ----------------------------------------------------------------------------- (b) SQLite


def bench_sqlite(quick: bool) -> list[Row]:
    from grafos_scheduler import Scheduler, SqliteStore

    rounds, number = (3, 20) if quick else (9, 60)
    with tempfile.TemporaryDirectory(prefix="grafos-bench-", dir=os.getcwd()) as directory:
        scheduler = Scheduler(4, SqliteStore(Path(directory) / "scheduler.db"))
        conn = sqlite3.connect(Path(directory) / "bare.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 0)")
        counter = [0]

        def cycle() -> None:
            lease = scheduler.acquire("bench", "bench", 0, 1, 60.0)
            scheduler.release(lease.lease_id)  # type: ignore[union-attr]

        def bare_commit() -> None:
            counter[0] += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE t SET value = ? WHERE id = 1", (counter[0],))
            conn.execute("COMMIT")

        try:
            a, b = interleaved(cycle, bare_commit, rounds=rounds, number=number)
        finally:
            scheduler.close()
            conn.close()

    def rate(sample: Sample) -> Sample:
        return Sample(tuple(1.0 / v for v in sample.values))

    return [
        Row("sqlite", "acquire+release cycle (2 commits)", a, "bare 1-row commit", b, "", None),
        Row(
            "sqlite",
            "acquire+release cycles per second",
            rate(a),
            "bare commits per second",
            rate(b),
            "",
            None,
            unit="ops/s",
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    return bench_http(quick) + bench_sqlite(quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
    else:
        print(markdown_table(run(quick=args.quick)))
