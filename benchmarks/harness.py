"""Shared benchmark harness: every figure is a ratio to its physical floor.

The machines are shared and noisy, so a benchmark measures our code and its
floor interleaved in the same run (A, B, A, B, ...) and reports the median,
the spread (min-max) and the ratio of the medians.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """Per-operation timings in seconds, one per round."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the benchmark table."""

    group: str
    name: str
    ours: Sample
    floor_name: str
    floor: Sample
    target: str  # e.g. "<= 1.05" or "<= 1 ms"; "" when there is none
    passed: bool | None  # None when the target is not a ratio we can judge here
    unit: str = "s"

    @property
    def ratio(self) -> float:
        return self.ours.median / self.floor.median


def time_per_op(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn``, averaged over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(
    ours: Callable[[], object],
    floor: Callable[[], object],
    *,
    rounds: int,
    number: int,
    warmup: int = 1,
) -> tuple[Sample, Sample]:
    """Time ``ours`` and ``floor`` alternately, so both see the same noise."""
    for _ in range(warmup):
        time_per_op(ours, number)
        time_per_op(floor, number)
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        # Alternate which goes first so neither always pays a cold cache.
        if i % 2 == 0:
            a.append(time_per_op(ours, number))
            b.append(time_per_op(floor, number))
        else:
            b.append(time_per_op(floor, number))
            a.append(time_per_op(ours, number))
    return Sample(tuple(a)), Sample(tuple(b))


def fmt_seconds(value: float) -> str:
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    if value >= 1e-6:
        return f"{value * 1e6:.2f} µs"
    return f"{value * 1e9:.0f} ns"


def fmt_value(value: float, unit: str) -> str:
    return fmt_seconds(value) if unit == "s" else f"{value:,.0f} {unit}"


def markdown_table(rows: list[Row]) -> str:
    head = (
        "| group | measurement | median | min-max | floor | floor median "
        "| ratio | target | met |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        met = "n/a" if r.passed is None else ("yes" if r.passed else "NO")
        lines.append(
            f"| {r.group} | {r.name} | {fmt_value(r.ours.median, r.unit)} "
            f"| {fmt_value(r.ours.low, r.unit)} - {fmt_value(r.ours.high, r.unit)} "
            f"| {r.floor_name} | {fmt_value(r.floor.median, r.unit)} "
            f"| {r.ratio:.3f} | {r.target} | {met} |"
        )
    return head + "\n".join(lines) + "\n"
