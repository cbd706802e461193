"""Prometheus metrics for the scheduler service, in a registry of its own.

Gauges are read from the scheduler when scraped, so they can never drift from it.
Preemption outcomes are counted from the audit chain, which records every one of them
in the same transaction as the state change: the counters are exact, including the
deferred preemptions that the executor thread carries out or forces later.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._domain._audit import AuditKind
from .._domain._lease import LeaseState
from .._domain._preemption import NonPreemptibleReason

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .._scheduler._scheduler import Scheduler

__all__ = ["END_KINDS", "PREEMPTION_KINDS", "SchedulerMetrics"]

#: Audit kinds counted as preemption outcomes, and the label each one gets.
PREEMPTION_KINDS = {
    AuditKind.PREEMPTION_REQUESTED.value: "requested",
    AuditKind.PREEMPTION_DEFERRED.value: "deferred",
    AuditKind.PREEMPTION_EXECUTED.value: "executed",
    AuditKind.PREEMPTION_FORCED.value: "forced",
    AuditKind.PREEMPTION_COOPERATIVE.value: "cooperative",
}

#: Audit kinds that end a lease, and the outcome label of the work they lost.
END_KINDS = {
    AuditKind.RELEASE.value: "released",
    AuditKind.EXPIRE.value: "expired",
    AuditKind.FENCE.value: "fenced",
    AuditKind.PREEMPTION_EXECUTED.value: "preempted",
    AuditKind.PREEMPTION_FORCED.value: "forced",
    AuditKind.PREEMPTION_COOPERATIVE.value: "cooperative",
}


class _SchedulerCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._audit_seq = 0
        self._outcomes: Counter[str] = Counter()
        self._lost_seconds: dict[str, float] = dict.fromkeys(END_KINDS.values(), 0.0)
        self._lost_records: Counter[str] = Counter()

    def _tail_audit(self) -> None:
        """Count preemption records, and the work each end lost, appended since the
        last scrape (records before this version carry no work lost: skipped)."""
        with self._lock:
            while True:
                batch = self._scheduler.audit.records(after_seq=self._audit_seq, limit=1000)
                for record in batch:
                    label = PREEMPTION_KINDS.get(record.kind)
                    if label is not None:
                        self._outcomes[label] += 1
                    end = END_KINDS.get(record.kind)
                    if end is not None:
                        seconds = record.data.get("work_lost_seconds")
                        records = record.data.get("work_lost_records")
                        if isinstance(seconds, int | float):
                            self._lost_seconds[end] += seconds
                        if isinstance(records, int):
                            self._lost_records[end] += records
                if not batch:
                    break
                self._audit_seq = batch[-1].seq

    def collect(self) -> Iterator[Metric]:
        scheduler = self._scheduler
        # A count per state from the store, not every lease ever granted: a scrape
        # costs the same after a million leases, and never holds the scheduler's lock
        # for more than expiring what is due.
        by_state = scheduler.lease_counts()
        gauge = GaugeMetricFamily(
            "grafos_leases", "Leases known to the scheduler, by state", labels=["state"]
        )
        for state in LeaseState:
            gauge.add_metric([state.value], by_state.get(state, 0))
        yield gauge

        # The ACTIVE leases only: at most one per slot of capacity.
        leases = scheduler.leases(LeaseState.ACTIVE)
        slots = GaugeMetricFamily("grafos_slots", "Capacity slots", labels=["kind"])
        slots.add_metric(["capacity"], scheduler.capacity)
        slots.add_metric(["leased"], sum(lease.slots for lease in leases))
        yield slots

        yield GaugeMetricFamily(
            "grafos_tickets_pending",
            "Acquires waiting for capacity",
            value=len(scheduler.tickets()),
        )

        markers = GaugeMetricFamily(
            "grafos_nonpreemptible_leases",
            "ACTIVE leases held non-preemptible now, by reason (local markers and reports)",
            labels=["reason"],
        )
        reason_counts: Counter[NonPreemptibleReason] = Counter()
        pending = 0
        for lease in leases:
            reason_counts.update(scheduler.reasons(lease.lease_id))
            pending += scheduler.pending_preemption(lease.lease_id) is not None
        for reason in NonPreemptibleReason:
            markers.add_metric([reason.value], reason_counts.get(reason, 0))
        yield markers
        yield GaugeMetricFamily(
            "grafos_preemptions_pending", "Deferred preemptions waiting now", value=pending
        )

        self._tail_audit()
        outcomes = CounterMetricFamily(
            "grafos_preemptions",
            "Preemptions by outcome, from the audit chain",
            labels=["outcome"],
        )
        for label in PREEMPTION_KINDS.values():
            outcomes.add_metric([label], self._outcomes.get(label, 0))
        yield outcomes

        lost_seconds = CounterMetricFamily(
            "grafos_work_lost_seconds",
            "Work done since the last completed checkpoint when a lease ended, by outcome",
            labels=["outcome"],
        )
        lost_records = CounterMetricFamily(
            "grafos_work_lost_records",
            "Records processed since the last completed checkpoint when a lease ended, "
            "by outcome (only the records holders reported)",
            labels=["outcome"],
        )
        for label in END_KINDS.values():
            lost_seconds.add_metric([label], self._lost_seconds.get(label, 0.0))
            lost_records.add_metric([label], self._lost_records.get(label, 0))
        yield lost_seconds
        yield lost_records

        yield CounterMetricFamily(
            "grafos_observer_misses",
            "Flush notifications for leases that were not tracked",
            value=scheduler.observer.misses,
        )


class SchedulerMetrics:
    """The service's metrics: scheduler state, read at scrape time, and request latency."""

    def __init__(self, scheduler: Scheduler, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False) if registry is None else registry
        self.registry.register(_SchedulerCollector(scheduler))
        self.request_latency = Histogram(
            "grafos_http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            labelnames=["method", "route", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            # labels() checks and locks on every call; routes and statuses are few.
            child = self._children[key] = self.request_latency.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
