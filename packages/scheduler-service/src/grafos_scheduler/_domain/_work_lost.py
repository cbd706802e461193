"""Work lost: what a lease had done since its last completed checkpoint when it ended.

The holder knows it exactly and reports it on release. For an end the holder did not
report (a forced preemption, an expiry, a fence, a plain release), the scheduler
counts the seconds since the last completed checkpoint it knows of (the last clear of
a ``checkpoint_in_progress`` marker, local or reported, or the grant if none), and
the records stay unknown (None).
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class WorkLost:
    """``records`` (None: unknown) and ``seconds`` of work an ended lease lost."""

    records: int | None
    seconds: float

    @classmethod
    def since(cls, checkpoint: float, end: float, records: int | None = None) -> WorkLost:
        """The work from a checkpoint at ``checkpoint`` to an end at ``end`` (one clock)."""
        return cls(records, max(0.0, end - checkpoint))

    def data(self) -> dict[str, Any]:
        """The audit payload's fields (seconds to the microsecond)."""
        return {"work_lost_records": self.records, "work_lost_seconds": round(self.seconds, 6)}
