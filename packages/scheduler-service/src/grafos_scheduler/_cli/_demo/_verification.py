"""The demo's checks: outputs equal uninterrupted runs, tokens rose, deferrals kept
their deadlines, the slow-disk preemption was forced, and the audit chain verifies."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from grafos_pipeline import CheckpointStore, DirectorySink
from grafos_scheduler import AuditKind, AuditRecord, Scheduler

from ._config import DemoConfig
from ._display import JobView
from ._stages import expected_output

__all__ = ["ENDS", "EXECUTOR_SLACK", "audit_by_lease", "verify"]

# A deferral is carried out or forced by the executor thread, which wakes at the
# deadline; allow it this much lateness (lock waits, a loaded machine).
EXECUTOR_SLACK = 0.5
ENDS = frozenset(
    k.value
    for k in (
        AuditKind.PREEMPTION_EXECUTED,
        AuditKind.PREEMPTION_FORCED,
        AuditKind.PREEMPTION_COOPERATIVE,
        AuditKind.RELEASE,
        AuditKind.EXPIRE,
        AuditKind.FENCE,
    )
)
_PREEMPTED = frozenset(
    {
        AuditKind.PREEMPTION_EXECUTED.value,
        AuditKind.PREEMPTION_FORCED.value,
        AuditKind.PREEMPTION_COOPERATIVE.value,
    }
)


def audit_by_lease(scheduler: Scheduler) -> tuple[list[AuditRecord], dict[int, list[AuditRecord]]]:
    """Every audit record, and those of each lease, oldest first."""
    records: list[AuditRecord] = []
    after = 0
    while batch := scheduler.audit.records(after_seq=after, limit=1000):
        records.extend(batch)
        after = batch[-1].seq
    by_lease: dict[int, list[AuditRecord]] = defaultdict(list)
    for record in records:
        if record.lease_id is not None:
            by_lease[record.lease_id].append(record)
    return records, by_lease


def verify(
    config: DemoConfig,
    scheduler: Scheduler,
    views: dict[str, JobView],
    low_jobs: list[str],
    store: CheckpointStore,
    sink: DirectorySink,
) -> list[tuple[bool, str]]:
    """Each check as (passed, what it found)."""
    verdicts: list[tuple[bool, str]] = []
    for job, view in views.items():
        checkpoint = store.latest(job)
        expected = expected_output(job, view.total)
        if checkpoint is None:
            verdicts.append((False, f"{job}: no checkpoint at all"))
            continue
        # The committed output, as a consumer reads it: not any stage's state.
        rows: list[Any] = [list(row) for row in sink.read(job)]
        state_bytes = sum(len(state) for state in checkpoint.stage_states.values())
        same = rows == expected and checkpoint.position == view.total
        lost = view.total - len({r[0] for r in rows})
        dup = len(rows) - len({r[0] for r in rows})
        verdicts.append(
            (
                same,
                f"{job}: committed output of {len(rows)} records "
                + ("equals the uninterrupted run" if same else f"DIFFERS ({lost} lost, {dup} dup)")
                + f" (checkpoint {checkpoint.sequence}, token {checkpoint.fencing_token})",
            )
        )
        # Output lives in the sink, so a checkpoint's state does not grow with it.
        verdicts.append(
            (
                state_bytes <= 64,
                f"{job}: its checkpoint holds {state_bytes} bytes of stage state",
            )
        )
    records, by_lease = audit_by_lease(scheduler)
    grants: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.kind == AuditKind.GRANT.value and record.job is not None:
            grants[record.job].append(record.data["fencing_token"])
    rising = all(all(a < b for a, b in itertools.pairwise(t)) for t in grants.values())
    verdicts.append(
        (
            rising,
            "fencing tokens rose with every new lease of each job: "
            + ", ".join(f"{j} {t}" for j, t in sorted(grants.items())),
        )
    )
    resumed = [j for j in low_jobs if len(grants.get(j, [])) > 1]
    preempted_any = any(r.kind in _PREEMPTED for r in records)
    verdicts.append(
        (
            preempted_any and bool(resumed),
            f"preemptions happened and {len(resumed)} job(s) resumed from checkpoints "
            "with new leases",
        )
    )
    verdicts.append(_deferrals(config, by_lease))
    if config.has_slow_disk:
        verdicts.append(_forced(config, views, by_lease))
    if config.has_graceful:
        verdicts.append(_cooperative(config, views, by_lease))
    result = scheduler.audit.verify()
    verdicts.append(
        (
            result.ok,
            f"audit chain verifies ({result.records_checked} records, head seq {result.head[0]})"
            if result.ok
            else f"audit chain broken: {result.reason}",
        )
    )
    return verdicts


def _deferrals(config: DemoConfig, by_lease: dict[int, list[AuditRecord]]) -> tuple[bool, str]:
    """Each deferral against its own recorded deadline (request time + max_defer, in
    the same wall clock as the records): the lease must end by then, and a forced
    preemption must not come before it."""
    deferrals = late = early_forced = forced = 0
    longest = 0.0
    for lease_records in by_lease.values():
        deferred = next(
            (r for r in lease_records if r.kind == AuditKind.PREEMPTION_DEFERRED.value), None
        )
        if deferred is None:
            continue
        deferrals += 1
        deadline = float(deferred.data["deadline_wall"])
        ended = next((r for r in lease_records if r.kind in ENDS), None)
        if ended is None:
            late += 1  # still ACTIVE at the end of the run: never carried out
            continue
        longest = max(longest, ended.time - deferred.time)
        if ended.time > deadline + EXECUTOR_SLACK:
            late += 1
        if ended.kind == AuditKind.PREEMPTION_FORCED.value:
            forced += 1
            if ended.time < deadline - EXECUTOR_SLACK:
                early_forced += 1
    if late == 0 and early_forced == 0:
        return (
            True,
            f"{deferrals} deferred preemption(s), {forced} forced at max_defer "
            f"{config.max_defer}s: every one ended by its deadline (longest wait "
            f"{longest:.2f}s, executor slack {EXECUTOR_SLACK}s)",
        )
    return False, f"{late} deferral(s) outlived their deadline, {early_forced} forced early"


def _forced(
    config: DemoConfig, views: dict[str, JobView], by_lease: dict[int, list[AuditRecord]]
) -> tuple[bool, str]:
    """The slow-disk flush outlasts max_defer, so its preemption must have been forced."""
    slow = {job for job, view in views.items() if view.role == "slow-disk"}
    forced = [
        records[0].job
        for records in by_lease.values()
        if records[0].job in slow
        and any(r.kind == AuditKind.PREEMPTION_FORCED.value for r in records)
    ]
    if forced:
        return (
            True,
            f"a slow-disk flush ({config.slow_flush:g}s) outlasted max_defer "
            f"{config.max_defer}s: {len(forced)} preemption(s) forced ({', '.join(forced)})",
        )
    return False, "no forced preemption: the slow-disk flush never outlasted max_defer"


def _cooperative(
    config: DemoConfig, views: dict[str, JobView], by_lease: dict[int, list[AuditRecord]]
) -> tuple[bool, str]:
    """The graceful job's preemptions were cooperative: checkpoint, release, 0 lost."""
    graceful = {job for job, view in views.items() if view.role == "graceful"}
    ends = [
        records[-1]
        for records in by_lease.values()
        if records[0].job in graceful
        and any(r.kind == AuditKind.PREEMPTION_REQUESTED.value for r in records)
    ]
    cooperative = [r for r in ends if r.kind == AuditKind.PREEMPTION_COOPERATIVE.value]
    lossless = [
        r
        for r in cooperative
        if r.data.get("work_lost_records") == 0 and r.data.get("work_lost_seconds") == 0
    ]
    if ends and len(lossless) == len(ends):
        return (
            True,
            f"within a {config.grace:g}s grace window, {len(ends)} preemption(s) cooperative: "
            "the worker checkpointed and released, 0 records lost",
        )
    kinds = ", ".join(r.kind for r in ends) or "none requested"
    return False, f"the graceful job's preemptions were not all cooperative and lossless: {kinds}"
