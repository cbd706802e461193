"""Grace windows, the watch and work-lost accounting over real HTTP: a real scheduler
on a SQLite file, a real uvicorn on 127.0.0.1, SchedulerClient as a worker uses it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grafos_scheduler import (
    BackgroundServer,
    RequestRejected,
    Scheduler,
    SchedulerClient,
    SqliteStore,
    TokenConfig,
    create_app,
)
from support.servers import ADMIN_TOKEN, WORKER_TOKENS

TTL = 30.0
RENEW_INTERVAL = TTL / 3  # what the WorkerAgent renews at by default


class Service:
    """A scheduler and its server on one SQLite file, restartable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scheduler: Scheduler | None = None
        self.server: BackgroundServer | None = None

    def start(self) -> Service:
        self.scheduler = Scheduler(2, SqliteStore(self.path), max_defer=30.0, max_grace=10.0)
        tokens = TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)
        self.server = BackgroundServer(create_app(self.scheduler, tokens)).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.scheduler is not None:
            self.scheduler.close()
        self.server = self.scheduler = None

    def client(self, who: str) -> SchedulerClient:
        assert self.server is not None
        token = ADMIN_TOKEN if who == "admin" else WORKER_TOKENS[who]
        return SchedulerClient(self.server.url, token)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "scheduler.sqlite3").start()
    yield service
    service.stop()


@pytest.fixture
def clients(service: Service) -> Iterator[dict[str, SchedulerClient]]:
    made = {who: service.client(who) for who in ("admin", "alice", "bob")}
    yield made
    for c in made.values():
        c.close()


def _watch_in_thread(
    client: SchedulerClient, cursor: str, timeout: float
) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["answer"] = client.watch(cursor, timeout=timeout)
        out["at"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _kinds(admin: SchedulerClient, lease_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.kind, r.data) for r in admin.audit(limit=1000).records if r.lease_id == lease_id]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_holder_that_checkpoints_and_releases_in_its_window_loses_nothing(
    clients: dict[str, SchedulerClient],
) -> None:
    admin, alice, bob = clients["admin"], clients["alice"], clients["bob"]
    lease = alice.acquire("low", slots=2, ttl=TTL, grace=5.0).lease
    assert lease is not None
    assert lease.grace == 5.0
    start = alice.watch(timeout=0)
    ticket = bob.acquire("high", slots=1, ttl=TTL, priority=9).ticket
    assert ticket is not None  # it waits for alice's window
    answer = alice.watch(start.cursor, timeout=10)
    (event,) = answer.events
    assert (event.lease_id, event.kind, event.state) == (
        lease.lease_id,
        "preemption_requested",
        "active",
    )
    assert event.deadline_in is not None
    assert 4.0 < event.deadline_in <= 5.0
    assert event.grace == 5.0
    assert event.cause is not None
    assert "high" in event.cause
    view = alice.get(lease.lease_id)
    assert view.pending_preemption is not None
    assert view.pending_preemption.grace_deadline == view.pending_preemption.deadline
    assert view.pending_preemption.grace_deadline_in is not None
    assert 0 < view.pending_preemption.grace_deadline_in <= 5.0
    # The holder's final checkpoint is taken: it reports no work lost, and releases.
    ended = alice.release(lease.lease_id, work_lost_records=0, work_lost_seconds=0.0)
    assert (ended.state, ended.work_lost_records, ended.work_lost_seconds) == ("preempted", 0, 0.0)
    assert alice.get(lease.lease_id).work_lost_records == 0
    kind, data = _kinds(admin, lease.lease_id)[-1]
    assert kind == "preemption_cooperative"
    assert (data["work_lost_records"], data["work_lost_seconds"]) == (0, 0.0)
    assert bob.poll(ticket.ticket_id).status == "granted"
    told = alice.watch(answer.cursor, timeout=5).events
    assert [(e.kind, e.outcome, e.work_lost_records) for e in told] == [
        ("lease_ended", "preemption_cooperative", 0)
    ]
    text = admin.metrics()
    assert _metric(text, 'grafos_preemptions_total{outcome="cooperative"}') == 1.0
    assert _metric(text, 'grafos_work_lost_records_total{outcome="cooperative"}') == 0.0
    assert _metric(text, 'grafos_work_lost_seconds_total{outcome="cooperative"}') == 0.0


def test_a_holder_that_ignores_its_window_is_forced_and_the_loss_is_counted_exactly(
    clients: dict[str, SchedulerClient],
) -> None:
    admin, alice = clients["admin"], clients["alice"]
    grace = 0.6
    lease = alice.acquire("stubborn", slots=1, ttl=TTL, grace=grace).lease
    assert lease is not None
    # A flush reported in one renewal and gone in the next: it completed in between.
    alice.renew(lease.lease_id, lease.fencing_token, ["checkpoint_in_progress"])
    before_clear = time.monotonic()
    alice.renew(lease.lease_id, lease.fencing_token, [])
    after_clear = time.monotonic()
    time.sleep(0.3)
    cursor = alice.watch(timeout=0).cursor
    sent = time.monotonic()
    decision = admin.preempt(lease.lease_id, "make room")
    answered = time.monotonic()
    assert decision.outcome == "deferred"
    answer = alice.watch(cursor, timeout=10)  # the request: it is ignored
    assert answer.events[0].kind == "preemption_requested"
    ended_events = alice.watch(answer.cursor, timeout=10).events
    assert [e.kind for e in ended_events] == ["lease_ended"]
    ended = alice.get(lease.lease_id)
    assert ended.state == "preempted"
    assert ended.work_lost_records is None  # nobody reported them
    assert ended.work_lost_seconds is not None
    # From the last clear the server saw to the end of the window, to the millisecond
    # the executor is late by (it sleeps until the deadline).
    low = sent + grace - after_clear
    high = answered + grace - before_clear + 0.05
    assert low <= ended.work_lost_seconds <= high
    kind, data = _kinds(admin, lease.lease_id)[-1]
    assert kind == "preemption_forced"
    assert data["grace_expired"] is True
    assert data["work_lost_seconds"] == ended.work_lost_seconds
    assert data["work_lost_records"] is None
    assert ended_events[0].outcome == "preemption_forced"
    assert ended_events[0].work_lost_seconds == ended.work_lost_seconds
    text = admin.metrics()
    assert _metric(text, 'grafos_work_lost_seconds_total{outcome="forced"}') == pytest.approx(
        ended.work_lost_seconds
    )


def test_a_grace_above_the_bound_is_refused_naming_both_values(
    clients: dict[str, SchedulerClient],
) -> None:
    alice = clients["alice"]
    with pytest.raises(RequestRejected) as refused:
        alice.acquire("greedy", slots=1, ttl=TTL, grace=10.5)
    assert refused.value.status == 400
    assert refused.value.field == "grace"
    assert "max_grace is 10 s" in refused.value.message
    assert "max_defer is 30 s" in refused.value.message
    with pytest.raises(RequestRejected) as negative:
        alice.acquire("greedy", slots=1, ttl=TTL, grace=-1)
    assert negative.value.field == "grace"
    assert alice.leases() == []  # nothing was granted


def test_the_watch_tells_the_holder_within_milliseconds(
    clients: dict[str, SchedulerClient],
) -> None:
    admin, alice = clients["admin"], clients["alice"]
    lease = alice.acquire("watched", slots=1, ttl=TTL, grace=5.0).lease
    assert lease is not None
    cursor = alice.watch(timeout=0).cursor
    thread, out = _watch_in_thread(alice, cursor, timeout=20)
    time.sleep(0.3)  # the watch is waiting in the server
    assert thread.is_alive()
    sent = time.perf_counter()
    admin.preempt(lease.lease_id, "make room")
    thread.join(10)
    latency = out["at"] - sent
    assert [e.kind for e in out["answer"].events] == ["preemption_requested"]
    # Well inside one renewal interval (10 s at ttl 30 s); typically a few ms.
    assert latency < 0.5, latency
    assert latency < RENEW_INTERVAL / 20


def test_a_watch_with_nothing_to_say_answers_an_empty_list_at_its_timeout(
    clients: dict[str, SchedulerClient],
) -> None:
    alice = clients["alice"]
    cursor = alice.watch(timeout=0).cursor
    started = time.monotonic()
    answer = alice.watch(cursor, timeout=0.4)
    waited = time.monotonic() - started
    assert (answer.events, answer.cursor, answer.reset) == ([], cursor, False)
    assert 0.4 <= waited < 3.0


def test_a_worker_never_sees_another_workers_leases(
    clients: dict[str, SchedulerClient],
) -> None:
    admin, alice, bob = clients["admin"], clients["alice"], clients["bob"]
    mine = alice.acquire("alice-job", slots=1, ttl=TTL).lease
    theirs = bob.acquire("bob-job", slots=1, ttl=TTL, grace=5.0).lease
    assert mine is not None
    assert theirs is not None
    cursors = {who: c.watch(timeout=0).cursor for who, c in clients.items()}
    thread, out = _watch_in_thread(alice, cursors["alice"], timeout=1.0)
    admin.preempt(theirs.lease_id, "make room")
    bob_answer = bob.watch(cursors["bob"], timeout=5)
    assert [e.lease_id for e in bob_answer.events] == [theirs.lease_id]
    thread.join(5)
    assert out["answer"].events == []  # alice waited out her timeout
    admin_answer = admin.watch(cursors["admin"], timeout=5)
    assert [e.holder for e in admin_answer.events] == ["bob"]
    # A fresh watch re-sends the current state: only bob's pending request is bob's.
    assert alice.watch(timeout=0).events == []
    fresh = bob.watch(timeout=0)
    assert fresh.reset
    assert [e.lease_id for e in fresh.events] == [theirs.lease_id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "0123-99999"}, "cursor"),
        ({"timeout": "61"}, "timeout"),
        ({"timeout": "-1"}, "timeout"),
        ({"timeout": "nan"}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
    ],
)
def test_a_bad_cursor_or_timeout_is_a_400_naming_it(
    service: Service, params: dict[str, str], field: str
) -> None:
    assert service.server is not None
    headers = {"Authorization": f"Bearer {WORKER_TOKENS['alice']}"}
    with httpx.Client(base_url=service.server.url, headers=headers) as http:
        if params.get("cursor") == "0123-99999":
            epoch = http.get("/v1/watch", params={"timeout": 0}).json()["cursor"].split("-")[0]
            params = {"cursor": f"{epoch}-99999"}
        response = http.get("/v1/watch", params={"timeout": "0", **params})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field
    assert (params.get("cursor") or params.get("timeout") or "") in body["message"]


def test_a_restart_keeps_the_grace_and_the_pending_deadline(tmp_path: Path) -> None:
    service = Service(tmp_path / "restart.sqlite3").start()
    try:
        with service.client("alice") as alice, service.client("admin") as admin:
            lease = alice.acquire("survivor", slots=1, ttl=TTL, grace=8.0).lease
            assert lease is not None
            old_cursor = alice.watch(timeout=0).cursor
            admin.preempt(lease.lease_id, "make room")
            before = alice.get(lease.lease_id).pending_preemption
            assert before is not None
        service.stop()
        time.sleep(0.2)
        service.start()
        with service.client("alice") as alice:
            after = alice.get(lease.lease_id)
            assert (after.state, after.grace) == ("active", 8.0)
            pending = after.pending_preemption
            assert pending is not None
            # The same wall time: each answer renders its monotonic deadline through one
            # reading of both clocks, so the millisecond may differ by the readings' jitter.
            assert before.grace_deadline is not None
            assert pending.grace_deadline is not None
            moved = dt.datetime.fromisoformat(pending.grace_deadline) - dt.datetime.fromisoformat(
                before.grace_deadline
            )
            assert abs(moved.total_seconds()) <= 0.005, (before.grace_deadline, moved)
            assert pending.deadline_in < before.deadline_in
            # The old cursor is another process's: the watch re-sends the current state.
            answer = alice.watch(old_cursor, timeout=5)
            assert answer.reset
            assert [(e.lease_id, e.kind) for e in answer.events] == [
                (lease.lease_id, "preemption_requested")
            ]
            ended = alice.release(lease.lease_id, work_lost_records=0, work_lost_seconds=0.0)
            assert ended.state == "preempted"
    finally:
        service.stop()


def test_a_plain_release_with_no_body_still_works(clients: dict[str, SchedulerClient]) -> None:
    alice = clients["alice"]
    lease = alice.acquire("plain", slots=1, ttl=TTL).lease
    assert lease is not None
    ended = alice.release(lease.lease_id)
    assert ended.state == "released"
    assert ended.work_lost_records is None
    assert ended.work_lost_seconds is not None
    assert ended.work_lost_seconds >= 0
    other = alice.acquire("bad-report", slots=1, ttl=TTL).lease
    assert other is not None
    with pytest.raises(RequestRejected) as refused:
        alice.release(other.lease_id, work_lost_records=-3)
    assert refused.value.field == "work_lost_records"
    assert alice.get(other.lease_id).state == "active"


def test_checkpoint_age_counts_in_batch_and_single_renewals(
    service: Service, clients: dict[str, SchedulerClient]
) -> None:
    alice = clients["alice"]
    batched = alice.acquire("batched", slots=1, ttl=TTL).lease
    single = alice.acquire("single", slots=1, ttl=TTL).lease
    assert batched is not None
    assert single is not None
    time.sleep(0.6)
    # The client's renew shares POST /v1/renewals; the entry carries its age.
    alice.renew(batched.lease_id, batched.fencing_token, checkpoint_age=0.0)
    assert service.server is not None
    answer = httpx.post(
        f"{service.server.url}/v1/leases/{single.lease_id}/renew",
        headers={"Authorization": f"Bearer {WORKER_TOKENS['alice']}"},
        json={"fencing_token": single.fencing_token, "checkpoint_age": 0.0},
    )
    assert answer.status_code == 200, answer.text
    renewed_at = time.monotonic()
    refused = alice.renew_many([(batched.lease_id, batched.fencing_token, [], -1.0)])
    assert isinstance(refused[0], RequestRejected)
    assert refused[0].field == "leases[0].checkpoint_age"
    time.sleep(0.3)
    for lease in (batched, single):
        ended = alice.release(lease.lease_id)
        # Counted from the reported checkpoint (0.3 s ago), not the grant (0.9 s ago).
        assert ended.work_lost_seconds is not None
        assert 0.3 <= ended.work_lost_seconds <= time.monotonic() - renewed_at + 0.2
