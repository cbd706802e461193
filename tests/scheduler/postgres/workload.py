"""Clients that acquire and release through the failover client, and the checks on
what they were told against what the database holds."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict

import attrs

from grafos_scheduler import (
    AuditLog,
    AuditRecord,
    LeaseGone,
    PostgresStore,
    SchedulerClient,
    ServiceError,
    ServiceUnavailable,
    TokenConflict,
)


@attrs.frozen
class Grant:
    """A grant a client was told of (acknowledged): when, which lease, which token."""

    at: float
    job: str
    lease_id: str
    token: int


class Workload:
    """``clients`` threads, each acquiring and releasing its own job in a loop."""

    def __init__(self, urls: list[str], tokens: dict[str, str], *, clients: int = 4) -> None:
        self.urls = urls
        self.names = list(tokens)[:clients]
        self.tokens = tokens
        self.grants: list[Grant] = []
        self.released: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True) for name in self.names
        ]

    def start(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def grants_after(self, moment: float) -> Grant | None:
        with self._lock:
            later = [g for g in self.grants if g.at > moment]
        return min(later, key=lambda g: g.at) if later else None

    def wait_for_grant_after(self, moment: float, timeout: float) -> Grant:
        give_up = time.monotonic() + timeout
        while True:
            grant = self.grants_after(moment)
            if grant is not None:
                return grant
            if time.monotonic() > give_up:
                raise AssertionError(f"no grant within {timeout} s after {moment}")
            time.sleep(0.005)

    def _run(self, name: str) -> None:
        job = f"job-{name}"
        with SchedulerClient(self.urls, self.tokens[name], timeout=6.0) as client:
            while not self._stop.is_set():
                try:
                    result = client.acquire(job, slots=1, ttl=30.0)
                except ServiceUnavailable:
                    continue  # unknown outcome: a 409 on the next try tells
                except TokenConflict:
                    self._release_leftover(client, job)
                    continue
                except ServiceError as exc:
                    self._note(f"{name}: acquire: {exc}")
                    continue
                lease = result.lease
                if lease is None:
                    self._note(f"{name}: pending ticket with capacity to spare: {result}")
                    continue
                with self._lock:
                    self.grants.append(
                        Grant(time.monotonic(), job, lease.lease_id, lease.fencing_token)
                    )
                self._release(client, lease.lease_id)

    def _release(self, client: SchedulerClient, lease_id: str) -> None:
        while not self._stop.is_set():
            try:
                client.release(lease_id)
            except ServiceUnavailable:
                continue
            except LeaseGone:
                pass  # released by a try whose answer was lost (or expired)
            except ServiceError as exc:
                self._note(f"release {lease_id}: {exc}")
            with self._lock:
                self.released.add(lease_id)
            return

    def _release_leftover(self, client: SchedulerClient, job: str) -> None:
        # A grant whose answer was lost on the way (the leader died): never
        # acknowledged, so not ours to count; release it to go on.
        try:
            for lease in client.leases("active"):
                if lease.job == job:
                    self._release(client, lease.lease_id)
        except ServiceError:
            pass

    def _note(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)


def check_against_database(workload: Workload, url: str) -> dict[str, int]:
    """No acknowledged grant lost, tokens strictly rising per job, one chain that
    verifies, epochs never interleaved. Returns counts for the test's message."""
    assert workload.grants, "the clients were granted nothing"
    with PostgresStore(url) as store:
        by_job: dict[str, list[Grant]] = defaultdict(list)
        for grant in sorted(workload.grants, key=lambda g: g.at):
            row = store.get_lease(int(grant.lease_id, 16))
            assert row is not None, f"acknowledged grant {grant} is not in the database"
            assert (row.job, row.fencing_token) == (grant.job, grant.token), (grant, row)
            by_job[grant.job].append(grant)
        for job, grants in by_job.items():
            tokens = [g.token for g in grants]
            assert tokens == sorted(set(tokens)), f"tokens of {job} do not rise strictly: {tokens}"
        stored = defaultdict(list)
        for row in store.list_leases():
            stored[row.job].append(row.fencing_token)
        for job, tokens in stored.items():
            assert len(tokens) == len(set(tokens)), f"a token of {job} was minted twice"
        verification = AuditLog(store).verify()
        assert verification.ok, verification
        epochs = [e for _, e in store.audit_epochs(limit=10**9) if e is not None]
        assert epochs == sorted(epochs), "records of an older epoch follow a newer one"
        grants_audited = {r.lease_id for r in _all_records(store) if r.kind == "grant"}
        missing = [g for g in workload.grants if int(g.lease_id, 16) not in grants_audited]
        assert not missing, f"grants without their audit record: {missing[:3]}"
        return {"grants": len(workload.grants), "epochs": len(set(epochs))}


def _all_records(store: PostgresStore) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    after = 0
    while True:
        batch = store.audit_records(after, 1000)
        if not batch:
            return records
        records.extend(batch)
        after = batch[-1].seq


def elections(url: str) -> list[float]:
    """The wall times of the leader_elected records, in order."""
    with PostgresStore(url) as store:
        return [r.time for r in _all_records(store) if r.kind == "leader_elected"]


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"n={len(ordered)} median={statistics.median(ordered):.3f}s "
        f"p90={ordered[int(0.9 * (len(ordered) - 1))]:.3f}s max={ordered[-1]:.3f}s"
    )
