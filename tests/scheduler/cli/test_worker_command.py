"""``grafos-scheduler worker`` as real processes against a real server.

Every run's output (the sink's state in the newest checkpoint) is compared with an
uninterrupted in-memory run's: no record lost or duplicated across notices, preemptions
and a second worker taking over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from grafos_pipeline import DirectorySink
from grafos_scheduler import BackgroundServer, SchedulerClient, TokenConfig
from support.internals import cli_main as main
from support.metadata_servers import Ec2Metadata, GceMetadata, ec2_metadata, gce_metadata
from support.servers import admin, app, scheduler, server, tokens
from support.stages import expected_output
from support.watch import server_has_watch
from support.worker_pipeline import output
from support.workers import TESTS, Workers, summary, wait_for, workers_for

__all__ = ["admin", "app", "scheduler", "server", "tokens", "workers_for"]

RECORDS = 300


@pytest.fixture
def workers(
    workers_for: Callable[[str, str, Path], Workers],
    server: BackgroundServer,
    tokens: TokenConfig,
    tmp_path: Path,
) -> Workers:
    return workers_for(server.url, tokens.worker_tokens["alice"], tmp_path)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def checkpointed(workers: Workers, job: str, at_least: int = 1) -> Callable[[], bool]:
    return lambda: output(workers.checkpoint_dir, job)[0] >= at_least


def assert_stopped_cleanly(
    workers: Workers, admin: SchedulerClient, job: str, out: str, kind: str
) -> int:
    """A notice stop: final checkpoint at the stop position, lease released, 0 lost."""
    told = summary(out)
    assert told["how"].startswith(f"stopped by {kind}"), out
    assert told["records"] == "0"
    assert told["leases"] == "1"
    position, rows = output(workers.checkpoint_dir, job)
    assert 0 < position < RECORDS
    assert position == int(told["position"])  # the final checkpoint holds all the work
    assert rows == expected_output(job, RECORDS)[:position]
    (lease,) = admin.leases()
    assert lease.state == "released"
    return position


def assert_second_worker_finishes(
    workers: Workers, admin: SchedulerClient, job: str, *extra: str
) -> None:
    code, out, err = finish(workers.start(job, "--checkpoint-every", "25", *extra, records=RECORDS))
    assert code == 0, err
    assert summary(out)["how"] == "done"
    assert output(workers.checkpoint_dir, job) == (RECORDS, expected_output(job, RECORDS))
    assert [lease.state for lease in admin.leases()] == ["released", "released"]


def test_an_uninterrupted_run_exits_0_with_the_whole_output(
    workers: Workers, admin: SchedulerClient
) -> None:
    code, out, err = finish(workers.start("job-plain", "--checkpoint-every", "30", delay=0))
    assert code == 0, err
    told = summary(out)
    assert told["how"] == "done"
    assert (told["position"], told["leases"], told["preemptions"], told["lost"]) == (
        "200",
        "1",
        "0",
        "0",
    )
    assert told["checkpoints"] == "7"  # 30, 60, ..., 180 and the tail at 200
    assert output(workers.checkpoint_dir, "job-plain") == (200, expected_output("job-plain", 200))
    (lease,) = admin.leases()
    assert lease.state == "released"


def test_sigterm_checkpoints_releases_before_the_deadline_and_exits_75(
    workers: Workers, admin: SchedulerClient
) -> None:
    out_dir = str(workers.checkpoint_dir.parent / "output")
    first = workers.start(
        "job-term",
        "--checkpoint-every",
        "25",
        "--signal-deadline",
        "10",
        "--output-dir",
        out_dir,
        records=RECORDS,
    )
    wait_for(checkpointed(workers, "job-term", 25), "the first checkpoint")
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    code, out, err = finish(first, timeout=15)
    took = time.monotonic() - sent
    assert code == 75, err
    assert took < 10, took  # inside --signal-deadline
    stopped_at = assert_stopped_cleanly(workers, admin, "job-term", out, "signal (SIGTERM")
    expected = expected_output("job-term", RECORDS)
    assert DirectorySink(out_dir).read("job-term") == expected[:stopped_at]
    assert_second_worker_finishes(workers, admin, "job-term", "--output-dir", out_dir)
    # Through the sink too: every record's output exactly once, in order.
    assert DirectorySink(out_dir).read("job-term") == expected


def test_sigint_is_a_notice_too(workers: Workers, admin: SchedulerClient) -> None:
    first = workers.start("job-int", "--checkpoint-every", "25", records=RECORDS)
    wait_for(checkpointed(workers, "job-int"), "the first checkpoint")
    first.send_signal(signal.SIGINT)
    code, out, err = finish(first, timeout=15)
    assert code == 75, err
    assert_stopped_cleanly(workers, admin, "job-int", out, "signal (SIGINT")


@pytest.mark.parametrize("notice", ["interruption", "rebalance"])
def test_an_ec2_notice_over_imdsv2_stops_the_worker_cleanly(
    workers: Workers, admin: SchedulerClient, notice: str
) -> None:
    job = f"job-ec2-{notice}"
    with ec2_metadata() as ec2:
        first = workers.start(
            job,
            "--checkpoint-every",
            "25",
            "--notices",
            "sigterm,ec2",
            "--ec2-metadata-url",
            ec2.url,
            "--ec2-poll-interval",
            "0.1",
            records=RECORDS,
        )
        wait_for(checkpointed(workers, job), "the first checkpoint")
        wait_for(lambda: len(ec2.requests_to(Ec2Metadata.ACTION_PATH)) >= 2, "the polls")
        if notice == "interruption":
            ec2.interrupt(in_seconds=120)
        else:
            ec2.recommend_rebalance()
        sent = time.monotonic()
        code, out, err = finish(first, timeout=15)
        assert code == 75, err
        assert time.monotonic() - sent < 5
        # IMDSv2: a token first, and every read carried one the server had issued.
        assert ec2.requests_to(Ec2Metadata.TOKEN_PATH)[0][0] == "PUT"
        reads = ec2.requests_to(Ec2Metadata.ACTION_PATH)
        assert reads
        assert all(h.get("X-aws-ec2-metadata-token") for _, _, h in reads)
    kind = "ec2_spot_interruption" if notice == "interruption" else "ec2_rebalance"
    assert_stopped_cleanly(workers, admin, job, out, kind)
    assert_second_worker_finishes(workers, admin, job)


def test_the_gce_preemption_notice_stops_the_worker_cleanly(
    workers: Workers, admin: SchedulerClient
) -> None:
    with gce_metadata() as gce:
        first = workers.start(
            "job-gce",
            "--checkpoint-every",
            "25",
            "--notices",
            "gce",
            "--gce-metadata-url",
            gce.url,
            records=RECORDS,
        )
        wait_for(checkpointed(workers, "job-gce"), "the first checkpoint")
        wait_for(lambda: gce.waiting >= 1, "the worker's wait_for_change request")
        gce.preempt()
        sent = time.monotonic()
        code, out, err = finish(first, timeout=15)
        assert code == 75, err
        assert time.monotonic() - sent < 5
        reads = gce.requests_to(GceMetadata.PATH)
        assert all(h.get("Metadata-Flavor") == "Google" for _, _, h in reads)
        assert any("wait_for_change=true" in path for _, path, _ in reads)
    assert_stopped_cleanly(workers, admin, "job-gce", out, "gce_preemption")
    assert_second_worker_finishes(workers, admin, "job-gce")


def test_an_immediate_preemption_loses_the_lease_and_the_worker_acquires_again(
    workers: Workers, admin: SchedulerClient
) -> None:
    worker = workers.start("job-imm", "--checkpoint-every", "100", "--ttl", "3", records=RECORDS)
    wait_for(checkpointed(workers, "job-imm"), "the first checkpoint")
    (lease,) = admin.leases("active")
    # Between flushes (the next is 100 records away): nothing defers the preemption.
    wait_for(lambda: admin.get(lease.lease_id).reasons == [], "the flush's end reported")
    decision = admin.preempt(lease.lease_id, "make room at once")
    assert decision.outcome == "preempted"
    code, out, err = finish(worker)
    assert code == 0, err
    told = summary(out)
    assert told["how"] == "done"
    assert (told["leases"], told["lost"]) == ("2", "1")
    assert output(workers.checkpoint_dir, "job-imm") == (
        RECORDS,
        expected_output("job-imm", RECORDS),
    )
    states = sorted(lease.state for lease in admin.leases())
    assert states == ["preempted", "released"]


def test_a_second_worker_waits_for_the_job_then_finds_it_done(
    workers: Workers, admin: SchedulerClient
) -> None:
    first = workers.start("job-two", "--checkpoint-every", "50", records=150, delay=0.005)
    wait_for(checkpointed(workers, "job-two"), "the first checkpoint")
    second = workers.start("job-two", "--checkpoint-every", "50", records=150)
    assert finish(first)[0] == 0
    code, out, err = finish(second)
    assert code == 0, err
    assert summary(out)["how"] == "done"
    assert output(workers.checkpoint_dir, "job-two") == (150, expected_output("job-two", 150))


def test_an_admin_preemption_within_grace_is_cooperative_with_nothing_lost(
    workers: Workers, admin: SchedulerClient, server: BackgroundServer, tokens: TokenConfig
) -> None:
    if not server_has_watch(server.url, tokens.admin_token):
        pytest.skip("needs the server side of issue 10 (grace windows, GET /v1/watch)")
    worker = workers.start(
        "job-grace", "--checkpoint-every", "25", "--grace", "10", "--ttl", "30", records=RECORDS
    )
    wait_for(checkpointed(workers, "job-grace"), "the first checkpoint")
    (lease,) = admin.leases("active")
    decision = admin.preempt(lease.lease_id, "make room, kindly")
    assert decision.outcome != "preempted"  # pending within the grace window
    code, out, err = finish(worker)
    assert code == 0, err
    told = summary(out)
    assert (told["leases"], told["preemptions"], told["lost"], told["records"]) == (
        "2",
        "1",
        "0",
        "0",
    )
    assert output(workers.checkpoint_dir, "job-grace") == (
        RECORDS,
        expected_output("job-grace", RECORDS),
    )
    ended = admin.get(lease.lease_id)
    assert ended.state == "preempted"
    assert ended.work_lost_records == 0
    assert ended.work_lost_seconds == 0.0
    kinds = [r.kind for r in admin.audit(limit=1000).records if r.lease_id == lease.lease_id]
    assert kinds[-1] == "preemption_cooperative", kinds


def run_worker_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GRAFOS_URL", "GRAFOS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "grafos_scheduler", "worker", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, "PYTHONPATH": str(TESTS), **(env or {})},
    )


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("a-token\n")
    return path


def required(token_file: Path, tmp_path: Path, **override: str) -> list[str]:
    values = {
        "--url": "http://127.0.0.1:9",
        "--token-file": str(token_file),
        "--job": "job-a",
        "--pipeline": "support.worker_pipeline:build",
        "--checkpoint-dir": str(tmp_path / "cp"),
        **override,
    }
    return [part for flag, value in values.items() if value for part in (flag, value)]


@pytest.mark.parametrize(
    ("override", "extra", "needle"),
    [
        ({"--url": ""}, [], "--url or GRAFOS_URL"),
        ({"--url": "ftp://x"}, [], "'ftp://x'"),
        ({"--token-file": "/nonexistent/token"}, [], "'/nonexistent/token'"),
        ({"--pipeline": "support.worker_pipeline"}, [], "package.module:function"),
        ({"--pipeline": "no_such_module_here:build"}, [], "'no_such_module_here'"),
        ({"--pipeline": "support.worker_pipeline:nothing"}, [], "'nothing'"),
        ({"--pipeline": "support.worker_pipeline:not_a_pair"}, [], "not (stages, records)"),
        ({"--job": "bad job"}, [], "'bad job'"),
        ({}, ["--notices", "sigterm,azure"], "'azure'"),
        ({}, ["--slots", "0"], "slots 0"),
        ({}, ["--ttl", "-1"], "ttl -1"),
        ({}, ["--grace", "soon"], "'soon'"),
        ({}, ["--checkpoint-every", "0"], "0 must be at least 1"),
        ({}, ["--priority", "99999999999"], "priority 99999999999"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    token_file: Path,
    tmp_path: Path,
    override: dict[str, str],
    extra: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process (the parser and the checks before connecting); the processes above
    # run the same entry point.
    monkeypatch.delenv("GRAFOS_URL", raising=False)
    monkeypatch.delenv("GRAFOS_TOKEN", raising=False)
    code: object
    try:
        code = main(["worker", *required(token_file, tmp_path, **override), *extra])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("grafos-scheduler")
    assert needle in lines[0]
    assert "Traceback" not in err


def test_a_bad_argument_from_the_command_line_is_status_2(token_file: Path, tmp_path: Path) -> None:
    result = run_worker_cli(*required(token_file, tmp_path), "--notices", "azure")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "'azure'" in result.stderr


def test_the_token_comes_from_grafos_token_when_there_is_no_file(
    token_file: Path, tmp_path: Path
) -> None:
    args = required(token_file, tmp_path, **{"--token-file": ""})
    missing = run_worker_cli(*args)
    assert missing.returncode == 2
    assert "--token-file FILE or GRAFOS_TOKEN" in missing.stderr
    # With the token in the environment the arguments are good; nothing listens on
    # port 9, so the worker fails (1) once it gives up on the service.
    given = run_worker_cli(*args, "--give-up-after", "0.5", env={"GRAFOS_TOKEN": "t"})
    assert given.returncode == 1, given.stderr
    assert "unreachable" in given.stderr


def test_an_empty_token_file_is_refused(token_file: Path, tmp_path: Path) -> None:
    token_file.write_text("\n")
    result = run_worker_cli(*required(token_file, tmp_path))
    assert result.returncode == 2
    assert "must hold the token alone" in result.stderr


def test_a_wrong_token_is_a_failure_not_a_usage_error(
    token_file: Path, tmp_path: Path, server: BackgroundServer
) -> None:
    result = run_worker_cli(*required(token_file, tmp_path, **{"--url": server.url}))
    assert result.returncode == 1, result.stderr
    assert "401" in result.stderr
