"""Peer benchmark: grafos's lease service against etcd's, side by side, driven by wrk.

The floor here is not a physical one but a peer: etcd (Debian's ``etcd-server``, a
single member with its default fsync) answering the same kind of request through its
JSON gateway. Both servers run on 127.0.0.1 on free ports, each from a fresh data
directory, and ``wrk`` drives them with lua scripts generated into a temporary
directory. Runs alternate grafos and etcd (A, B, B, A, ...), so both see the same noise.

| operation | grafos | etcd |
| --- | --- | --- |
| grant | ``POST /v1/leases`` (a distinct job per request) | ``POST /v3/lease/grant`` |
| renew | ``POST /v1/leases/{id}/renew`` | ``POST /v3/lease/keepalive`` |
| grant+release | a grant, then ``POST /v1/leases/{id}/release`` | a grant, then a revoke |
| batch renew | ``POST /v1/renewals``, many leases per request | (compared to keepalive) |

Counting: every figure is per HTTP request. A grant+release *cycle* is two requests
(the grant, then the release of the lease it returned, on the same wrk thread), so
cycles per second are half the requests per second shown; p50 and p99 are per request.
Batch renewal is counted in leases kept alive per second (requests times batch size).

For renew, the leases are acquired before the run, one per connection, and the lua
script hands each thread its own slice of them, round robin. Every answer is checked
(status and body); a run with a refused request, a socket error or a timeout fails.

The server's CPU per request is its utime+stime from ``/proc/PID/stat`` across the run,
divided by the requests wrk completed. Both servers get the same wrk, the same
connections and threads, the same 2 cores; on a shared machine the figures are noisy,
which is why they are medians of alternated rounds.

Parameters (environment, so ``nox -s bench`` can pass them): ``GRAFOS_PEER_DURATION``
(seconds per run; default 8, quick 1), ``GRAFOS_PEER_ROUNDS`` (default 3, quick 1).

Run alone: ``python benchmarks/bench_peer.py [--quick] [--duration S] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from benchmarks.harness import Row, Sample, fmt_seconds, markdown_table
else:
    from harness import Row, Sample, fmt_seconds, markdown_table

GROUP = "peer"
SECTION = "Peer: grafos against etcd"
CONNECTIONS = (1, 32)
GRANT_TTL = 3600  # seconds: no lease granted during the benchmark expires in it
WORKER = "bench"
BATCH_SIZE = 1000
CLK_TCK = os.sysconf("SC_CLK_TCK")
JSON_HEADERS = {"Content-Type": "application/json"}
TOOLS = {"etcd": "etcd-server", "wrk": "wrk"}  # executable -> Debian package


class PeerToolsMissing(RuntimeError):
    """etcd or wrk is not installed, so the peer benchmark cannot run."""


# ----------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run against one server."""

    requests: int
    seconds: float
    p50: float  # seconds
    p99: float  # seconds
    cpu: float  # server CPU seconds (utime + stime) during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is state
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# The generic part of every script. The generated head defines ITEMS (a lua table of
# {path, body} pairs), HEADERS, NTHREADS and the functions make_request() and check().
_LUA_TAIL = r"""
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  first_bad = ""
  n = 0
  queue = {}
  mine = {}
  for i = id + 1, #ITEMS, NTHREADS do
    table.insert(mine, wrk.format("POST", ITEMS[i][1], HEADERS, ITEMS[i][2]))
  end
end

function request()
  n = n + 1
  return make_request()
end

function response(status, headers, body)
  if not check(status, body) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  local first = ""
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"bad": %d, "socket_errors": %d, "status_errors": %d, "first_bad": %q}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    total_bad, e.connect + e.read + e.write + e.timeout, e.status, first))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid lua string literal here


def _lua_script(
    *,
    items: Sequence[tuple[str, str]],
    headers: dict[str, str],
    threads: int,
    make_request: str,
    check: str,
) -> str:
    rows = ",\n".join(f"  {{{_lua_string(p)}, {_lua_string(b)}}}" for p, b in items)
    head = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return (
        f"ITEMS = {{\n{rows}\n}}\nHEADERS = {{{head}}}\nNTHREADS = {threads}\n"
        f"{make_request}\n{check}\n{_LUA_TAIL}"
    )


def _threads(connections: int) -> int:
    return min(connections, 2)  # 2 cores: more wrk threads only steal them from the server


def _wrk(script: Path, url: str, connections: int, duration: float, pid: int) -> WrkResult:
    wrk = shutil.which("wrk")
    assert wrk is not None
    cmd = [
        wrk,
        f"-t{_threads(connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    before = _cpu_seconds(pid)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    cpu = _cpu_seconds(pid) - before
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    out = json.loads(line.removeprefix("WRKJSON "))
    if out["bad"] or out["socket_errors"] or out["status_errors"] or not out["requests"]:
        raise RuntimeError(
            f"wrk against {url} with {script.name}: {out['requests']} requests, "
            f"{out['bad']} refused, {out['socket_errors']} socket errors or timeouts; "
            f"first refusal: {out['first_bad']}"
        )
    return WrkResult(
        requests=out["requests"],
        seconds=out["duration_us"] / 1e6,
        p50=out["p50_us"] / 1e6,
        p99=out["p99_us"] / 1e6,
        cpu=cpu,
    )


# ----------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(probe: str, proc: subprocess.Popen[bytes], log: Path, method: str = "GET") -> None:
    give_up = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{probe}: the server exited ({proc.returncode}):\n{_tail(log)}")
        try:
            if httpx.request(method, probe, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > give_up:
            raise RuntimeError(f"{probe}: the server did not start in 60 s:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Grafos:
    """``grafos-scheduler serve`` on a fresh SQLite file, one worker principal."""

    directory: Path
    name: str = "grafos"
    pid: int = 0
    url: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _proc: subprocess.Popen[bytes] | None = None
    _renewals: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> None:
        tokens = self.directory / "tokens.toml"
        tokens.write_text(
            f'admin = "{secrets.token_urlsafe(24)}"\n\n[workers]\n{WORKER} = "{self.token}"\n'
        )
        tokens.chmod(0o600)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = self.directory / "server.log"
        script = Path(sys.executable).with_name("grafos-scheduler")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "grafos_scheduler"]
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    *command,
                    "serve",
                    "--db",
                    str(self.directory / "scheduler.db"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--tokens",
                    str(tokens),
                    "--capacity",
                    "1000000000",  # every grant of the run fits: none waits, none preempts
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._proc.pid
        _wait_ready(f"{self.url}/healthz", self._proc, log)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    @property
    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}

    def acquire(self, jobs: Sequence[str]) -> list[tuple[str, int]]:
        """Lease ids and fencing tokens for ``jobs``, acquired one by one before a run."""
        held = []
        with httpx.Client(base_url=self.url, headers=self._headers) as client:
            for job in jobs:
                answer = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": GRANT_TTL})
                if answer.status_code != 201:
                    raise RuntimeError(f"grafos acquire {job}: {answer.status_code} {answer.text}")
                lease = answer.json()["lease"]
                held.append((lease["lease_id"], int(lease["fencing_token"])))
        return held

    def prepare_renewals(self, count: int) -> None:
        held = self.acquire([f"renew-{i}" for i in range(count)])
        self._renewals = [
            (f"/v1/leases/{lid}/renew", json.dumps({"fencing_token": tok, "reasons": []}))
            for lid, tok in held
        ]

    def grant_script(self, tag: str, threads: int) -> str:
        return _lua_script(
            items=[("/v1/leases", "")],
            headers=self._headers,
            threads=threads,
            make_request=(
                "function make_request()\n"
                "  return wrk.format('POST', '/v1/leases', HEADERS, string.format(\n"
                f'    \'{{"job":"{tag}-%d-%d","slots":1,"ttl":{GRANT_TTL}}}\', id, n))\n'
                "end"
            ),
            check="function check(status, body) return status == 201 end",
        )

    def renew_script(self, connections: int, threads: int) -> str:
        return _lua_script(
            items=self._renewals[:connections],
            headers=self._headers,
            threads=threads,
            make_request="function make_request() return mine[(n - 1) % #mine + 1] end",
            check="function check(status, body) return status == 200 end",
        )

    def cycle_script(self, tag: str, threads: int) -> str:
        # A grant's answer queues its lease id; the thread's next request releases it.
        return _lua_script(
            items=[("/v1/leases", "")],
            headers=self._headers,
            threads=threads,
            make_request=(
                "function make_request()\n"
                "  local lid = table.remove(queue)\n"
                "  if lid then\n"
                "    return wrk.format('POST', '/v1/leases/' .. lid .. '/release', HEADERS, '')\n"
                "  end\n"
                "  return wrk.format('POST', '/v1/leases', HEADERS, string.format(\n"
                f'    \'{{"job":"{tag}-%d-%d","slots":1,"ttl":{GRANT_TTL}}}\', id, n))\n'
                "end"
            ),
            check=(
                "function check(status, body)\n"
                "  if status == 201 then\n"
                '    local lid = string.match(body, \'"lease_id":"(%x+)"\')\n'
                "    if not lid then return false end\n"
                "    table.insert(queue, lid)\n"
                "    return true\n"
                "  end\n"
                "  return status == 200 and string.find(body, '\"released\"', 1, true) ~= nil\n"
                "end"
            ),
        )

    def batch_script(self, threads: int) -> str:
        """One ``POST /v1/renewals`` of every prepared lease, per request."""
        leases = [
            {"lease_id": path.split("/")[3], "fencing_token": json.loads(body)["fencing_token"]}
            for path, body in self._renewals
        ]
        body = json.dumps({"leases": [dict(entry, reasons=[]) for entry in leases]})
        return _lua_script(
            items=[("/v1/renewals", body)] * threads,
            headers=self._headers,
            threads=threads,
            make_request="function make_request() return mine[1] end",
            check=(
                "function check(status, body)\n"
                "  return status == 200 and string.find(body, '\"error\"', 1, true) == nil\n"
                "end"
            ),
        )

    def has_batch_renewal(self) -> bool:
        with httpx.Client(base_url=self.url, headers=self._headers) as client:
            answer = client.post("/v1/renewals", json={"leases": []})
        return answer.status_code not in (404, 405)


@dataclass
class Etcd:
    """etcd 3.4, a single member with default fsync, through its JSON gateway."""

    directory: Path
    name: str = "etcd"
    pid: int = 0
    url: str = ""
    _proc: subprocess.Popen[bytes] | None = None
    _renewals: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> None:
        client, peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        log = self.directory / "etcd.log"
        etcd = shutil.which("etcd")
        assert etcd is not None
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    etcd,
                    "--name",
                    "bench",
                    "--data-dir",
                    str(self.directory / "etcd"),
                    "--listen-client-urls",
                    self.url,
                    "--advertise-client-urls",
                    self.url,
                    "--listen-peer-urls",
                    peer_url,
                    "--initial-advertise-peer-urls",
                    peer_url,
                    "--initial-cluster",
                    f"bench={peer_url}",
                    "--logger",
                    "zap",
                    "--log-level",
                    "warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._proc.pid
        _wait_ready(f"{self.url}/health", self._proc, log)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def prepare_renewals(self, count: int) -> None:
        ids = []
        with httpx.Client(base_url=self.url) as client:
            for _ in range(count):
                answer = client.post("/v3/lease/grant", json={"TTL": GRANT_TTL})
                answer.raise_for_status()
                ids.append(answer.json()["ID"])
        self._renewals = [("/v3/lease/keepalive", json.dumps({"ID": i})) for i in ids]

    def grant_script(self, tag: str, threads: int) -> str:
        body = json.dumps({"TTL": GRANT_TTL})
        return _lua_script(
            items=[("/v3/lease/grant", body)] * threads,
            headers=JSON_HEADERS,
            threads=threads,
            make_request="function make_request() return mine[1] end",
            check=(
                "function check(status, body)\n"
                '  return status == 200 and string.find(body, \'"ID":"\', 1, true) ~= nil\n'
                "end"
            ),
        )

    def renew_script(self, connections: int, threads: int) -> str:
        # A keepalive of a lease that is gone still answers 200, without a TTL.
        return _lua_script(
            items=self._renewals[:connections],
            headers=JSON_HEADERS,
            threads=threads,
            make_request="function make_request() return mine[(n - 1) % #mine + 1] end",
            check=(
                "function check(status, body)\n"
                '  return status == 200 and string.find(body, \'"TTL":"\', 1, true) ~= nil\n'
                "end"
            ),
        )

    def cycle_script(self, tag: str, threads: int) -> str:
        grant = json.dumps({"TTL": GRANT_TTL})
        return _lua_script(
            items=[("/v3/lease/grant", grant)] * threads,
            headers=JSON_HEADERS,
            threads=threads,
            make_request=(
                "function make_request()\n"
                "  local lid = table.remove(queue)\n"
                "  if lid then\n"
                "    return wrk.format('POST', '/v3/lease/revoke', HEADERS,\n"
                "      '{\"ID\":\"' .. lid .. '\"}')\n"
                "  end\n"
                "  return mine[1]\n"
                "end"
            ),
            check=(
                "function check(status, body)\n"
                "  if status ~= 200 then return false end\n"
                '  local lid = string.match(body, \'"ID":"(%d+)"\')\n'
                "  if lid then table.insert(queue, lid) end\n"
                "  return true\n"
                "end"
            ),
        )


# ----------------------------------------------------------------------------- the runs


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float
    rounds: int
    warmup: float


def settings(quick: bool) -> Settings:
    duration = float(os.environ.get("GRAFOS_PEER_DURATION", "1" if quick else "8"))
    rounds = int(os.environ.get("GRAFOS_PEER_ROUNDS", "1" if quick else "3"))
    if not 1 <= duration <= 60:
        raise ValueError(f"GRAFOS_PEER_DURATION={duration} is not between 1 and 60 seconds")
    if not 1 <= rounds <= 20:
        raise ValueError(f"GRAFOS_PEER_ROUNDS={rounds} is not between 1 and 20")
    return Settings(duration, rounds, warmup=0 if quick else 1)


@contextlib.contextmanager
def _servers(root: Path) -> Iterator[tuple[Grafos, Etcd]]:
    """A fresh grafos and a fresh etcd, each in its own directory under ``root``."""
    (root / "grafos").mkdir()
    (root / "etcd").mkdir()
    grafos, etcd = Grafos(root / "grafos"), Etcd(root / "etcd")
    try:
        grafos.start()
        etcd.start()
        yield grafos, etcd
    finally:
        grafos.stop()
        etcd.stop()


OPERATIONS = {
    "grant": ("POST /v1/leases", "etcd lease/grant"),
    "renew": ("POST /v1/leases/{id}/renew", "etcd lease/keepalive"),
    "grant+release": ("grant, then POST .../release", "etcd grant, then lease/revoke"),
}


@dataclass
class Measured:
    """Every run of one (operation, connections) pair, for both servers."""

    grafos: list[WrkResult] = field(default_factory=list)
    etcd: list[WrkResult] = field(default_factory=list)


def _script(peer: Grafos | Etcd, op: str, c: int, tag: str) -> str:
    threads = _threads(c)
    if op == "grant":
        return peer.grant_script(tag, threads)
    if op == "renew":
        return peer.renew_script(c, threads)
    return peer.cycle_script(tag, threads)


def measure(s: Settings, log: list[str]) -> tuple[dict[tuple[str, int], Measured], list[float]]:
    """All runs; the batch renewal rates (leases/s) when grafos has ``POST /v1/renewals``."""
    results: dict[tuple[str, int], Measured] = {}
    batch: list[float] = []
    with tempfile.TemporaryDirectory(prefix="grafos-peer-") as tmp:
        root = Path(tmp)
        runs = 0
        for op in OPERATIONS:
            home = root / op.replace("+", "-")
            home.mkdir()
            with _servers(home) as (grafos, etcd):
                if op == "renew":
                    grafos.prepare_renewals(max(CONNECTIONS))
                    etcd.prepare_renewals(max(CONNECTIONS))
                for c in CONNECTIONS:
                    m = results.setdefault((op, c), Measured())
                    if s.warmup:
                        for peer in (grafos, etcd):
                            runs += 1
                            path = home / f"warm-{peer.name}-{c}.lua"
                            path.write_text(_script(peer, op, c, f"w{runs}"))
                            _wrk(path, peer.url, c, s.warmup, peer.pid)
                    for r in range(s.rounds):
                        order: tuple[Grafos | Etcd, ...] = (grafos, etcd)
                        if r % 2:
                            order = (etcd, grafos)
                        for peer in order:
                            runs += 1
                            path = home / f"{peer.name}-{c}-{r}.lua"
                            path.write_text(_script(peer, op, c, f"r{runs}"))
                            result = _wrk(path, peer.url, c, s.duration, peer.pid)
                            (m.grafos if peer is grafos else m.etcd).append(result)
                            log.append(_describe(op, c, peer.name, result))
                            print(log[-1], file=sys.stderr, flush=True)
        batch = _measure_batch(root, s, log)
    return results, batch


def _describe(op: str, c: int, server: str, r: WrkResult) -> str:
    return (
        f"{op:>13} c={c:<2} {server:>6}: {r.rate:8,.0f} req/s p50 {fmt_seconds(r.p50):>9} "
        f"p99 {fmt_seconds(r.p99):>9} CPU/req {fmt_seconds(r.cpu_per_request):>9}"
    )


def _measure_batch(root: Path, s: Settings, log: list[str]) -> list[float]:
    home = root / "batch"
    home.mkdir()
    grafos = Grafos(home)
    try:
        grafos.start()
        if not grafos.has_batch_renewal():
            log.append("batch renewal: POST /v1/renewals does not exist on this server")
            print(log[-1], file=sys.stderr, flush=True)
            return []
        grafos.prepare_renewals(BATCH_SIZE)
        c = max(CONNECTIONS)
        script = home / "batch.lua"
        script.write_text(grafos.batch_script(_threads(c)))
        rates = []
        for _ in range(s.rounds):
            result = _wrk(script, grafos.url, c, s.duration, grafos.pid)
            rates.append(result.rate * BATCH_SIZE)
            log.append(
                f"batch renewal c={c} x{BATCH_SIZE}: {rates[-1]:,.0f} leases/s "
                f"({result.rate:,.1f} req/s, p99 {fmt_seconds(result.p99)})"
            )
            print(log[-1], file=sys.stderr, flush=True)
        return rates
    finally:
        grafos.stop()


def rows_from(results: dict[tuple[str, int], Measured], batch: list[float]) -> list[Row]:
    rows: list[Row] = []
    for (op, c), m in results.items():
        _, etcd_name = OPERATIONS[op]
        judged = c == max(CONNECTIONS)

        def sample(runs: list[WrkResult], what: str) -> Sample:
            return Sample(tuple(getattr(r, what) for r in runs))

        rate_g, rate_e = sample(m.grafos, "rate"), sample(m.etcd, "rate")
        p99_g, p99_e = sample(m.grafos, "p99"), sample(m.etcd, "p99")
        rows += [
            Row(
                GROUP,
                f"{op}, c={c}: requests per second",
                rate_g,
                etcd_name,
                rate_e,
                ">= 1.0" if judged else "",
                rate_g.median >= rate_e.median if judged else None,
                unit="req/s",
            ),
            Row(
                GROUP,
                f"{op}, c={c}: latency p50",
                sample(m.grafos, "p50"),
                etcd_name,
                sample(m.etcd, "p50"),
                "",
                None,
            ),
            Row(
                GROUP,
                f"{op}, c={c}: latency p99",
                p99_g,
                etcd_name,
                p99_e,
                "<= 1.0" if judged else "",
                p99_g.median <= p99_e.median if judged else None,
            ),
            Row(
                GROUP,
                f"{op}, c={c}: server CPU per request",
                sample(m.grafos, "cpu_per_request"),
                etcd_name,
                sample(m.etcd, "cpu_per_request"),
                "",
                None,
            ),
        ]
    if batch:
        keepalive = results[("renew", max(CONNECTIONS))].etcd
        rows.append(
            Row(
                GROUP,
                f"batch renewal ({BATCH_SIZE} leases per request), c={max(CONNECTIONS)}: "
                "leases per second",
                Sample(tuple(batch)),
                "etcd lease/keepalive, leases per second",
                Sample(tuple(r.rate for r in keepalive)),
                ">= 10",
                statistics.median(batch) >= 10 * statistics.median(r.rate for r in keepalive),
                unit="leases/s",
            )
        )
    return rows


def section(rows: list[Row]) -> str:
    """The peer table for docs/benchmarks.md: one line per operation and concurrency."""
    by_name = {row.name: row for row in rows if row.group == GROUP}
    lines = [
        "grafos (`grafos-scheduler serve`, a fresh SQLite file) against etcd",
        f"{_etcd_version()} (a single member, default fsync, its JSON gateway), both on",
        "127.0.0.1, driven by wrk (`benchmarks/bench_peer.py`). Runs alternate between the",
        "two; each figure is the median of the rounds (spread in brackets). Every figure is",
        "per HTTP request: a grant+release cycle is two requests, so cycles/s are half the",
        "req/s. CPU per request is the server process's utime+stime over the run divided",
        "by the requests answered. Target: >= 1.0x etcd at c=32 with a p99 no worse.",
        "",
        "| operation | c | grafos req/s | etcd req/s | grafos / etcd | p50 grafos / etcd "
        "| p99 grafos / etcd | CPU per request grafos / etcd |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def spread(sample: Sample) -> str:
        return f"{sample.median:,.0f} ({sample.low:,.0f}-{sample.high:,.0f})"

    for op in OPERATIONS:
        for c in CONNECTIONS:
            rate = by_name.get(f"{op}, c={c}: requests per second")
            if rate is None:
                continue
            p50 = by_name[f"{op}, c={c}: latency p50"]
            p99 = by_name[f"{op}, c={c}: latency p99"]
            cpu = by_name[f"{op}, c={c}: server CPU per request"]
            lines.append(
                f"| {op} | {c} | {spread(rate.ours)} | {spread(rate.floor)} "
                f"| **{rate.ratio:.2f}** "
                f"| {fmt_seconds(p50.ours.median)} / {fmt_seconds(p50.floor.median)} "
                f"| {fmt_seconds(p99.ours.median)} / {fmt_seconds(p99.floor.median)} "
                f"| {fmt_seconds(cpu.ours.median)} / {fmt_seconds(cpu.floor.median)} |"
            )
    batch = [row for row in rows if row.group == GROUP and row.name.startswith("batch")]
    for row in batch:
        lines.append(
            f"| batch renewal, leases/s ({BATCH_SIZE} per request) | {max(CONNECTIONS)} "
            f"| {spread(row.ours)} | {spread(row.floor)} (keepalive) | **{row.ratio:.1f}** "
            "| | | |"
        )
    if not batch:
        lines += ["", "Batch renewal: not measured (this server has no `POST /v1/renewals`)."]
    return "\n".join(lines) + "\n"


def _etcd_version() -> str:
    etcd = shutil.which("etcd")
    if etcd is None:
        return "(not installed)"
    out = subprocess.run([etcd, "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("etcd Version: ").strip() or "(version unknown)"


def _missing_tools() -> list[str]:
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


def run(quick: bool = False) -> list[Row]:
    missing = _missing_tools()
    if missing:
        message = (
            f"the peer benchmark needs {' and '.join(missing)} (Debian: apt-get install "
            f"{' '.join(missing)}); `nox -s bench` installs them when it can"
        )
        if os.environ.get("CI") == "true":
            raise PeerToolsMissing(message)
        print(f"SKIPPED: {message}", file=sys.stderr, flush=True)
        return []
    log: list[str] = []
    results, batch = measure(settings(quick), log)
    return rows_from(results, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, help="seconds per run")
    parser.add_argument("--rounds", type=int, help="rounds per (operation, connections)")
    args = parser.parse_args()
    if args.duration is not None:
        os.environ["GRAFOS_PEER_DURATION"] = str(args.duration)
    if args.rounds is not None:
        os.environ["GRAFOS_PEER_ROUNDS"] = str(args.rounds)
    print(markdown_table(run(quick=args.quick)))
