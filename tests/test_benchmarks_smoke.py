"""The checkpoint benchmarks run (quick mode) and produce sane rows; targets are not judged."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the modules import harness by name
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_checkpoint_quick_rows_are_sane() -> None:
    rows = load("bench_checkpoint").run(quick=True)
    assert len(rows) == 4
    names = [row.name for row in rows]
    assert any("observer" in name for name in names)
    assert sum("DirectoryCheckpointStore.commit" in name for name in names) == 3
    for row in rows:
        for sample in (row.ours, row.floor):
            assert sample.values
            assert all(value > 0 for value in sample.values)
            assert sample.low <= sample.median <= sample.high
        assert math.isfinite(row.ratio)
        assert row.ratio > 0
        assert row.target
        assert row.passed in (True, False, None)
    assert [row.passed is None for row in rows] == [False, False, True, False]


def test_run_renders_a_report_for_the_checkpoint_module(tmp_path: Path) -> None:
    runner = load("run")
    output = tmp_path / "benchmarks.md"
    assert runner.main(["--quick", "--only", "checkpoint", "--output", str(output)]) == 0
    text = output.read_text()
    assert "## Method" in text
    assert "| ratio |" in text
    assert "DirectoryCheckpointStore.commit, 16 MiB" in text
    assert "- Machine:" in text
    assert runner.main(["--only", "no-such-benchmark"]) == 2


def test_bench_sink_quick_rows_are_sane() -> None:
    rows = load("bench_sink").run(quick=True)
    flushes = [row for row in rows if "1 MiB of new output" in row.name]
    sizes = [row for row in rows if row.name.startswith("checkpoint bytes after")]
    assert len(flushes) == 3
    assert len(sizes) == 2
    for row in rows:
        assert all(value > 0 for value in (*row.ours.values, *row.floor.values))
        assert math.isfinite(row.ratio)
    assert [row.passed is None for row in flushes] == [False, True, True]
    # The checkpoint does not grow with the output; the state-held one does.
    assert all(row.passed for row in sizes)
    assert sizes[1].floor.median > 5 * sizes[0].floor.median


def test_bench_watch_quick_rows_are_sane() -> None:
    rows = load("bench_watch").run(quick=True)
    assert [row.group for row in rows] == ["watch", "watch"]
    assert ["p50" in rows[0].name, "p99" in rows[1].name] == [True, True]
    for row in rows:
        for sample in (row.ours, row.floor):
            assert sample.values
            assert all(0 < value < 30 for value in sample.values)
        assert math.isfinite(row.ratio)
    # The target is judged on the p99 row only (the machine may be loaded: not asserted).
    assert rows[0].passed is None
    assert rows[1].passed in (True, False)
