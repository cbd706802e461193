"""The demo's closing report: per job leases, tokens, the four kinds of preemption, the
work lost and checkpoints, and every preemption as the audit log recorded it."""

from __future__ import annotations

import textwrap
from collections import defaultdict

from grafos_scheduler import AuditKind, Scheduler

from ._display import JobView
from ._verification import ENDS, audit_by_lease

__all__ = ["summary_lines"]

HEAD = ("job", "role", "leases", "tokens", "immed", "defer", "forced", "coop", "lost", "ckpts")


def summary_lines(scheduler: Scheduler, views: dict[str, JobView], start: float) -> list[str]:
    """The table (at most 80 columns for the default jobs), then each preempted lease's
    story, wrapped to 80: requested, deferred with its reasons, executed or forced, in
    seconds since ``start`` (wall clock: the display's start, as in its event lines)."""
    _, by_lease = audit_by_lease(scheduler)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    lost: dict[str, float] = defaultdict(float)  # seconds of work lost, per job
    stories: list[str] = []
    for lease_id, lease_records in by_lease.items():
        job = lease_records[0].job or "-"
        kinds = [r.kind for r in lease_records]
        end = next((r for r in lease_records if r.kind in ENDS), None)
        if end is not None:
            lost[job] += float(end.data.get("work_lost_seconds") or 0.0)
        if AuditKind.PREEMPTION_COOPERATIVE.value in kinds:
            stats[job]["coop"] += 1
        elif AuditKind.PREEMPTION_FORCED.value in kinds:
            stats[job]["forced"] += 1
        elif AuditKind.PREEMPTION_DEFERRED.value in kinds:
            stats[job]["deferred"] += 1
        elif AuditKind.PREEMPTION_EXECUTED.value in kinds:
            stats[job]["immediate"] += 1
        steps: list[str] = []
        for record in lease_records:
            if not record.kind.startswith("preemption_") and not (steps and record.kind in ENDS):
                continue
            what = record.kind.removeprefix("preemption_")
            if record.kind == AuditKind.PREEMPTION_DEFERRED.value:
                reasons = record.data.get("reasons") or []
                what += f" ({', '.join(map(str, reasons))})" if reasons else ""
            steps.append(f"{what} at {record.time - start:.2f}s")
        if steps:
            token = lease_records[0].data.get("fencing_token", "-")
            short = f"{lease_id:032x}"[:8]
            story = f"{job} lease {short}.. token {token}: " + ", ".join(steps)
            stories += textwrap.wrap(story, 78, initial_indent="  ", subsequent_indent="    ")
    rows = []
    for job, view in views.items():
        s = stats[job]
        rows.append(
            [
                job,
                view.role,
                str(view.leases),
                ",".join(map(str, view.tokens)) or "-",
                str(s["immediate"]),
                str(s["deferred"]),
                str(s["forced"]),
                str(s["coop"]),
                f"{lost[job]:.2f}s",
                str(view.checkpoints),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEAD)]
    lines = [" ".join(h.ljust(w) for h, w in zip(HEAD, widths, strict=True)).rstrip()]
    lines.append(" ".join("-" * w for w in widths))
    lines += [" ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("(preemptions: immed = at once, no flush in flight; defer = waited for a")
    lines.append(" flush; forced = the flush outlasted max_defer; coop = in its grace window")
    lines.append(" the worker checkpointed and released; lost = work lost, seconds since the")
    lines.append(" last checkpoint at each end; ckpts = checkpoints committed)")
    if stories:
        lines.append("preemptions, from the audit log (seconds into the run):")
        lines += stories
    return lines
