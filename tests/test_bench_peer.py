"""The peer benchmark's bookkeeping: rows, the docs section, and what happens without etcd.

The wrk runs themselves take tens of seconds against two real servers, so they run in
`nox -s bench`, not here; these tests feed the same functions recorded results.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the module imports harness by name
    spec = importlib.util.spec_from_file_location("bench_peer", BENCHMARKS / "bench_peer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_rows_judge_c32_rate_and_p99_against_etcd() -> None:
    peer = load()
    fast = peer.WrkResult(requests=8000, seconds=1.0, p50=0.001, p99=0.004, cpu=1.6)
    slow = peer.WrkResult(requests=4000, seconds=1.0, p50=0.002, p99=0.008, cpu=2.0)
    results = {}
    for op in peer.OPERATIONS:
        for c in peer.CONNECTIONS:
            # grafos is faster than etcd on grant only.
            m = peer.Measured()
            m.grafos = [fast if op == "grant" else slow] * 3
            m.etcd = [slow if op == "grant" else fast] * 3
            results[(op, c)] = m
    rows = peer.rows_from(results, [90_000.0, 80_000.0, 85_000.0])
    by_name = {row.name: row for row in rows}
    grant = by_name["grant, c=32: requests per second"]
    assert grant.ratio == pytest.approx(2.0)
    assert grant.passed is True
    assert by_name["grant, c=32: latency p99"].passed is True
    assert by_name["renew, c=32: requests per second"].passed is False
    assert by_name["renew, c=32: latency p99"].passed is False
    assert by_name["renew, c=1: requests per second"].passed is None  # only c=32 is judged
    cpu = by_name["renew, c=32: server CPU per request"]
    assert cpu.ours.median == pytest.approx(2.0 / 4000)
    assert cpu.floor.median == pytest.approx(1.6 / 8000)
    (batch,) = [row for row in rows if row.name.startswith("batch")]
    assert batch.ours.median == 85_000.0
    assert batch.floor.median == 8000.0  # etcd's keepalive rate at c=32
    assert batch.passed is True  # 85,000 >= 10 x 8,000
    text = peer.section(rows)
    assert "| renew | 32 | 4,000 (4,000-4,000) | 8,000 (8,000-8,000) | **0.50** |" in text
    assert "| batch renewal" in text


def test_without_etcd_it_skips_loudly_or_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    peer = load()
    monkeypatch.setenv("PATH", str(tmp_path))  # neither etcd nor wrk on it
    monkeypatch.delenv("CI", raising=False)
    assert peer.run(quick=True) == []
    assert "SKIPPED: the peer benchmark needs etcd-server and wrk" in capsys.readouterr().err
    monkeypatch.setenv("CI", "true")
    with pytest.raises(peer.PeerToolsMissing, match="etcd-server and wrk"):
        peer.run(quick=True)


def test_cpu_seconds_reads_this_process() -> None:
    peer = load()
    before = peer._cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))  # burn some CPU
    assert peer._cpu_seconds(os.getpid()) > before
