"""Platform notice sources against local servers that speak each documented protocol,
and the agent stopping on a notice: final checkpoint, release, nothing lost."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from grafos_pipeline import DirectoryCheckpointStore
from grafos_scheduler import (
    Ec2SpotNotices,
    GcePreemptionNotice,
    NoticeKind,
    PlatformNotice,
    RunOutcome,
    SchedulerClient,
    SignalNotices,
    StopRequested,
    WorkerAgent,
)
from support.metadata_servers import Ec2Metadata, GceMetadata, ec2_metadata, gce_metadata
from support.stages import build_pipeline, expected_output
from support.workers import wait_for


def collect() -> tuple[queue.Queue[PlatformNotice], Callable[[PlatformNotice], None]]:
    notices: queue.Queue[PlatformNotice] = queue.Queue()
    return notices, notices.put


# -- EC2 (IMDSv2) --------------------------------------------------------------------


def test_the_ec2_server_refuses_reads_without_a_token() -> None:
    with ec2_metadata() as ec2:
        assert httpx.get(ec2.url + Ec2Metadata.ACTION_PATH).status_code == 401
        assert httpx.put(ec2.url + Ec2Metadata.TOKEN_PATH).status_code == 400  # no ttl


def test_no_notice_while_imds_answers_404() -> None:
    notices, notify = collect()
    with ec2_metadata() as ec2:
        source = Ec2SpotNotices(ec2.url, interval=0.05)
        source.start(notify)
        try:
            wait_for(lambda: source.polls >= 5, "five polls")
        finally:
            source.stop()
        assert notices.empty()
        puts = ec2.requests_to(Ec2Metadata.TOKEN_PATH)
        assert len(puts) == 1  # one session token serves every poll
        assert puts[0][2]["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"


def test_the_spot_interruption_notice_carries_its_deadline() -> None:
    notices, notify = collect()
    with ec2_metadata() as ec2:
        source = Ec2SpotNotices(ec2.url, interval=0.05)
        source.start(notify)
        try:
            wait_for(lambda: source.polls >= 1, "a poll")
            ec2.interrupt(in_seconds=120)
            notice = notices.get(timeout=5)
        finally:
            source.stop()
    assert notice.kind is NoticeKind.EC2_SPOT_INTERRUPTION
    assert "terminate" in notice.detail
    assert notice.deadline_in is not None
    assert 115 < notice.deadline_in <= 121  # the time in the notice, to the second


def test_a_rebalance_recommendation_is_a_notice_without_a_deadline() -> None:
    notices, notify = collect()
    with ec2_metadata() as ec2:
        ec2.recommend_rebalance()
        source = Ec2SpotNotices(ec2.url, interval=0.05)
        source.start(notify)
        try:
            notice = notices.get(timeout=5)
        finally:
            source.stop()
    assert notice.kind is NoticeKind.EC2_REBALANCE_RECOMMENDATION
    assert notice.deadline is None


def test_an_expired_token_is_replaced() -> None:
    notices, notify = collect()
    with ec2_metadata() as ec2:
        source = Ec2SpotNotices(ec2.url, interval=0.05)
        source.start(notify)
        try:
            wait_for(lambda: source.polls >= 2, "two polls")
            ec2.revoke_tokens()  # the next read gets a 401
            ec2.interrupt(in_seconds=60)
            notice = notices.get(timeout=5)
        finally:
            source.stop()
        assert len(ec2.requests_to(Ec2Metadata.TOKEN_PATH)) == 2
    assert notice.kind is NoticeKind.EC2_SPOT_INTERRUPTION


# -- GCE -------------------------------------------------------------------------------


def test_the_gce_server_wants_the_metadata_flavor_header() -> None:
    with gce_metadata() as gce:
        assert httpx.get(gce.url + GceMetadata.PATH).status_code == 403
        answer = httpx.get(gce.url + GceMetadata.PATH, headers={"Metadata-Flavor": "Google"})
        assert answer.text == "FALSE"


def test_the_gce_notice_arrives_as_soon_as_preempted_turns_true() -> None:
    notices, notify = collect()
    with gce_metadata() as gce:
        source = GcePreemptionNotice(gce.url, deadline=30.0)
        source.start(notify)
        try:
            wait_for(lambda: gce.waiting == 1, "the hanging wait_for_change request")
            time.sleep(0.3)
            assert notices.empty()
            changed = time.monotonic()
            gce.preempt()
            notice = notices.get(timeout=5)
            heard = time.monotonic() - changed
        finally:
            source.stop()
        waits = [p for _, p, _ in gce.requests_to(GceMetadata.PATH) if "wait_for_change" in p]
        assert waits
        assert all("last_etag=" in p for p in waits)
    assert notice.kind is NoticeKind.GCE_PREEMPTION
    assert heard < 0.5  # no polling interval: the hanging request answered
    assert notice.deadline_in is not None
    assert 29 < notice.deadline_in <= 30


def test_a_vm_already_preempted_is_noticed_on_the_first_read() -> None:
    notices, notify = collect()
    with gce_metadata() as gce:
        gce.preempt()
        source = GcePreemptionNotice(gce.url)
        source.start(notify)
        try:
            assert notices.get(timeout=5).kind is NoticeKind.GCE_PREEMPTION
        finally:
            source.stop()


# -- signals ---------------------------------------------------------------------------


def test_sigterm_is_a_notice_and_stop_puts_the_old_handler_back() -> None:
    notices, notify = collect()
    before = signal.getsignal(signal.SIGTERM)
    source = SignalNotices(deadline=12.0)
    source.start(notify)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        notice = notices.get(timeout=5)
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat changes nothing
        time.sleep(0.1)
        assert notices.empty()
    finally:
        source.stop()
    assert signal.getsignal(signal.SIGTERM) is before
    assert notice.kind is NoticeKind.SIGNAL
    assert notice.detail == "SIGTERM"
    assert notice.deadline_in is not None
    assert 11 < notice.deadline_in <= 12


def test_signal_notices_start_only_in_the_main_thread() -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SignalNotices().start(lambda notice: None)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert errors
    assert "main thread" in str(errors[0])


# -- the agent -------------------------------------------------------------------------


def test_an_ec2_notice_stops_the_agent_with_a_final_checkpoint_and_nothing_lost(
    alice: SchedulerClient, admin: SchedulerClient, tmp_path: Path
) -> None:
    store = DirectoryCheckpointStore(tmp_path / "cp")
    with ec2_metadata() as ec2:
        source = Ec2SpotNotices(ec2.url, interval=0.05)
        with WorkerAgent(alice, "job-n", ttl=30.0, notices=[source]) as agent:
            lease = agent.acquire(timeout=10)
            pipeline = build_pipeline("job-n", store, record_delay=0.01)

            def interrupt() -> None:
                wait_for(lambda: pipeline.position >= 30, "some work")
                ec2.interrupt(in_seconds=120)

            threading.Thread(target=interrupt, daemon=True).start()
            result = agent.run(pipeline, range(100_000), checkpoint_every=25)
    assert result.outcome is RunOutcome.STOPPED
    assert "ec2_spot_interruption" in result.detail
    assert (result.work_lost_records, result.work_lost_seconds) == (0, 0.0)
    checkpoint = store.latest("job-n")
    assert checkpoint is not None
    assert checkpoint.position == result.position  # the final checkpoint has it all
    rows = pipeline.stages[-1].rows  # type: ignore[attr-defined]
    assert rows == expected_output("job-n", result.position)
    assert admin.get(lease.lease_id).state == "released"


def test_a_notice_while_the_ticket_is_pending_withdraws_it(
    alice: SchedulerClient, admin: SchedulerClient
) -> None:
    blockers = [alice.acquire(f"job-big-{i}", slots=1, ttl=30.0) for i in range(2)]
    assert all(b.status == "granted" for b in blockers)  # the server's 2 slots
    agent = WorkerAgent(alice, "job-wait", ttl=30.0, poll_interval=0.05)
    stopper = threading.Timer(
        0.3,
        agent.request_stop,
        args=[PlatformNotice(NoticeKind.SIGNAL, "SIGTERM", time.monotonic(), None)],
    )
    stopper.start()
    with pytest.raises(StopRequested, match="SIGTERM"):
        agent.acquire()
    agent.close()
    assert not any(lease.job == "job-wait" for lease in admin.leases())
    assert admin.audit(limit=1000).records[-1].kind == "ticket_cancelled"
    with pytest.raises(StopRequested):
        agent.acquire()  # a stopped agent does not acquire again
