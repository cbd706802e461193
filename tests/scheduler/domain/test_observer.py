"""PreemptionFlushObserver: implements the core protocol, never raises, counts misses."""

from __future__ import annotations

import logging

import pytest

from grafos_pipeline import CheckpointFlushObserver
from grafos_scheduler import (
    ManualClock,
    NonPreemptibleReason,
    PreemptionFlushObserver,
    PreemptionManager,
)

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS


def test_implements_the_core_protocol(clock: ManualClock) -> None:
    observer = PreemptionFlushObserver(PreemptionManager(clock))
    assert isinstance(observer, CheckpointFlushObserver)


def test_start_marks_and_complete_clears(clock: ManualClock) -> None:
    manager = PreemptionManager(clock)
    manager.track(3, 0, 1)
    observer = PreemptionFlushObserver(manager)
    observer.on_flush_start(3)
    assert manager.reasons(3) == {CKPT}
    observer.on_flush_complete(3)
    assert manager.reasons(3) == frozenset()
    assert observer.misses == 0


def test_untracked_lease_is_logged_and_counted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    observer = PreemptionFlushObserver(PreemptionManager(clock))
    with caplog.at_level(logging.WARNING, logger="grafos_scheduler"):
        observer.on_flush_start(0xABC)
        observer.on_flush_complete(0xABC)
    assert observer.misses == 2
    hits = [r for r in caplog.records if r.name == "grafos_scheduler"]
    # Every miss counts; one WARNING per lease id (the next ones log at DEBUG).
    assert len(hits) == 1
    assert hits[0].levelno == logging.WARNING
    assert f"{0xABC:032x}" in hits[0].getMessage()


def test_a_zombie_flushing_in_a_loop_warns_once_per_lease(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    observer = PreemptionFlushObserver(PreemptionManager(clock))
    with caplog.at_level(logging.DEBUG, logger="grafos_scheduler"):
        for _ in range(500):
            observer.on_flush_start(0xABC)
            observer.on_flush_complete(0xABC)
        observer.on_flush_start(0xDEF)
    assert observer.misses == 1001
    ours = [r for r in caplog.records if r.name == "grafos_scheduler"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert [f"{0xABC:032x}" in w.getMessage() for w in warnings] == [True, False]
    assert f"{0xDEF:032x}" in warnings[1].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in ours) == 999


@pytest.mark.parametrize("bad", [-1, 2**128, "x", None, [1], 1.5])
def test_never_raises_on_garbage(clock: ManualClock, bad: object) -> None:
    observer = PreemptionFlushObserver(PreemptionManager(clock))
    observer.on_flush_start(bad)  # type: ignore[arg-type]
    observer.on_flush_complete(bad)  # type: ignore[arg-type]
    assert observer.misses == 2
