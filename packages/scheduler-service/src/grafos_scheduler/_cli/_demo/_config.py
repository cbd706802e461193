"""The demo's knobs (:class:`DemoConfig`, with size presets) and one worker's orders."""

from __future__ import annotations

from typing import IO, Any

import attrs

__all__ = ["ROLES", "URGENT", "DemoConfig", "WorkerSpec"]

# The four kinds of preemption, side by side: "fast" flushes with an fsync only, so it
# is preempted at once (grace 0) and loses the work since its last checkpoint;
# "steady" flushes with a short delay, so a preemption that lands in a flush waits for
# it; "slow-disk" flushes for longer than max_defer, so its preemption is forced;
# "graceful" asks for a grace window, so it checkpoints and releases on request
# (cooperative), losing nothing.
ROLES = ("steady", "slow-disk", "fast", "graceful")
URGENT = "urgent"


@attrs.frozen
class DemoConfig:
    """Every knob of the demo; :meth:`for_size` gives the presets."""

    directory: str | None = None
    workers: int = 4
    records: int = 400
    urgent_records: int = 200
    checkpoint_every: int = 40
    slow_checkpoint_every: int = 100
    record_delay: float = 0.01
    steady_flush: float = 0.25
    ttl: float = 2.0
    max_defer: float = 2.0
    start_urgent_at: float = 0.35  # fraction of the low-priority input done
    timeout: float = 150.0
    progress: bool = False
    keep: bool = False  # --keep: the service stays up after the verification
    out: IO[str] | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def for_size(cls, size: str) -> DemoConfig:
        if size == "small":
            return cls(
                workers=4,
                records=120,
                urgent_records=40,
                checkpoint_every=15,
                slow_checkpoint_every=40,
                record_delay=0.005,
                steady_flush=0.1,
                ttl=1.5,
                max_defer=1.0,
                timeout=90.0,
            )
        if size == "large":
            return cls(workers=4, records=1500, urgent_records=600, timeout=600.0)
        return cls()

    def with_overrides(self, **changes: Any) -> DemoConfig:
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def slow_flush(self) -> float:
        # Outlasts max_defer by a margin even when the urgent job arrives a little
        # after the flush began: the orchestrator submits it within the first
        # ``submit_window`` of the flush, so at least max_defer + 1 s of it remain.
        return self.max_defer * 2 + 1.0

    @property
    def submit_window(self) -> float:
        """How long into a slow-disk flush the urgent job may still be submitted."""
        # At least half a second to catch it, even with --max-defer 0.
        return max(0.5, self.slow_flush - self.max_defer - 1.0)

    @property
    def grace(self) -> float:
        """The graceful role's window: as long as the server allows (max_defer)."""
        return self.max_defer

    @property
    def has_graceful(self) -> bool:
        return self.workers >= 4 and self.grace > 0  # ROLES[3] is "graceful"

    @property
    def has_slow_disk(self) -> bool:
        return self.workers >= 2  # ROLES[1] is "slow-disk"

    @property
    def capacity(self) -> int:
        return self.workers


@attrs.frozen
class WorkerSpec:
    """What one worker process runs (picklable: it crosses to a spawned process)."""

    job: str
    role: str
    url: str
    token: str = attrs.field(repr=False)  # a bearer token: never in a repr or a log
    priority: int
    slots: int
    records: int
    checkpoint_every: int
    record_delay: float
    flush_delay: float
    ttl: float
    checkpoint_dir: str
    output_dir: str
    log_dir: str
    grace: float = 0.0  # seconds a preemption waits for the final checkpoint and release
