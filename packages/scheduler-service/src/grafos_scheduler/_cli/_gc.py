"""The cyclic garbage collector of a process that ``serve`` owns."""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLD", "settle_garbage_collector"]

#: Allocations between two young-generation collections in a serving process (the
#: default is 700). A batch renewal allocates a few objects per lease; at the default,
#: collections took a quarter of its time (docs/benchmarks.md has the measurement).
GC_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Tune this serving process's cyclic collector, once everything is loaded.

    What exists now (modules, the app, the restored leases) lives as long as the
    process: ``gc.freeze`` moves it out of the collector's way, so no collection walks
    it again (a frozen object that is dropped later is still freed by its reference
    count; only a cycle of them would stay). Young collections then run every
    :data:`GC_THRESHOLD` allocations. Only a process that ``serve`` owns does this,
    never a library user's.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)
