"""PreemptionManager benchmarks: the marker hot path and victim choice at scale.

(a) A mark+clear pair, the work a flush observer adds per checkpoint, against its
    physical floor: a bare dict set and a bare dict pop, each under a threading.Lock
    (two lock acquisitions, as mark and clear take). Target: median ratio <= 3.
(b) Victim selection among 100 000 tracked leases. Target: median <= 1 ms, judged
    on the absolute time. The floor is the least work any selection must do: walk
    a plain dict backwards and take as many ids as there are victims, so the ratio
    is the cost of the rules (priorities, markers, pending, minimality).
(c) The same, worst case: every lease below the top priority is mid-flush (marked),
    so the preemptible-now victims are only the top priority's, behind 90 000 marked
    leases. Same target and floor.

Run: python benchmarks/bench_preemption.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import threading
from typing import TYPE_CHECKING

from grafos_scheduler import ManualClock, NonPreemptibleReason, PreemptionManager

if TYPE_CHECKING:
    # mypy (explicit package bases, from the repository root) sees benchmarks.harness;
    # at run time benchmarks/ itself is on sys.path (the script's own directory).
    from benchmarks.harness import Row, interleaved, markdown_table
else:
    from harness import Row, interleaved, markdown_table

CKPT = NonPreemptibleReason.CHECKPOINT_IN_PROGRESS
LEASES = 100_000
PRIORITIES = 10
VICTIM_SLOTS = 8


def bench_mark_clear(quick: bool) -> Row:
    manager = PreemptionManager(ManualClock())
    lease_id = (1 << 127) | 12345
    manager.track(lease_id, 0, 1)
    mark = manager.mark_non_preemptible
    clear = manager.clear_non_preemptible

    def ours() -> None:
        mark(lease_id, CKPT)
        clear(lease_id, CKPT)

    lock = threading.Lock()
    table: dict[int, int] = {}

    def floor() -> None:
        with lock:
            table[lease_id] = 1
        with lock:
            table.pop(lease_id)

    rounds, number = (5, 20_000) if quick else (31, 100_000)
    gc.disable()
    try:
        a, b = interleaved(ours, floor, rounds=rounds, number=number)
    finally:
        gc.enable()
    assert manager.marker_count(lease_id, CKPT) == 0
    ratio = a.median / b.median
    return Row(
        group="preemption",
        name="mark+clear pair (observer hot path)",
        ours=a,
        floor_name="dict set+pop under a Lock",
        floor=b,
        target="<= 3",
        passed=ratio <= 3.0,
    )


def _populated() -> PreemptionManager:
    manager = PreemptionManager(ManualClock())
    for i in range(1, LEASES + 1):
        manager.track(i, i % PRIORITIES, 1 + i % 4)
    # Some leases flush now and then (moving them to the back), some are mid-flush.
    for i in range(1, LEASES + 1, 97):
        manager.mark_non_preemptible(i, CKPT)
        manager.clear_non_preemptible(i, CKPT)
    for i in range(2, LEASES + 1, 50):
        manager.mark_non_preemptible(i, CKPT)
    return manager


def _mostly_marked() -> PreemptionManager:
    manager = PreemptionManager(ManualClock())
    for i in range(1, LEASES + 1):
        manager.track(i, i % PRIORITIES, 1)
        if i % PRIORITIES < PRIORITIES - 1:
            manager.mark_non_preemptible(i, CKPT)
    return manager


def bench_victims(quick: bool, *, worst: bool = False) -> Row:
    manager = _mostly_marked() if worst else _populated()
    plain = dict.fromkeys(range(1, LEASES + 1))
    priority = PRIORITIES if worst else PRIORITIES // 2

    def ours() -> None:
        victims = manager.select_victims(VICTIM_SLOTS, priority)
        assert victims

    def floor() -> None:
        taken = []
        for lease_id in reversed(plain):
            taken.append(lease_id)
            if len(taken) == VICTIM_SLOTS:
                break

    rounds, number = (5, 200) if quick else (31, 2_000)
    gc.disable()
    try:
        a, b = interleaved(ours, floor, rounds=rounds, number=number)
    finally:
        gc.enable()
    name = f"victim choice, {LEASES:,} leases, {VICTIM_SLOTS} slots"
    if worst:
        name += ", 90% marked (worst case)"
    return Row(
        group="preemption",
        name=name,
        ours=a,
        floor_name=f"reversed dict walk, {VICTIM_SLOTS} ids",
        floor=b,
        target="<= 1 ms",
        passed=a.median <= 1e-3,
    )


def run(quick: bool = False) -> list[Row]:
    """The preemption benchmarks; ``quick`` takes a second and proves nothing."""
    return [bench_mark_clear(quick), bench_victims(quick), bench_victims(quick, worst=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, for a smoke test")
    args = parser.parse_args()
    print(markdown_table(run(quick=args.quick)), end="")


if __name__ == "__main__":
    main()
