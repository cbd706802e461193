"""The JSON log lines: no terminal decorations, quiet third parties, and a worker's
"lease lost" line that names its lease and job."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from grafos_scheduler import BackgroundServer, SchedulerClient, WorkerAgent
from support.internals import QUIET_LOGGERS, JsonLogFormatter, configure_logging

from .conftest import ADMIN_TOKEN, WORKER_TOKENS


def test_color_message_and_escapes_never_reach_a_line() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "Started %s", ("x",), None)
    record.color_message = "Started \x1b[36m%s\x1b[0m"
    record.detail = "a \x1b[1mbold\x1b[0m word"
    entry = json.loads(JsonLogFormatter().format(record))
    assert "color_message" not in entry
    assert entry["event"] == "Started x"
    assert entry["detail"] == "a bold word"


def test_configure_logging_holds_third_parties_at_warning() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("debug", stream)
        for name in QUIET_LOGGERS:
            logging.getLogger(f"{name}.factory").debug("chatter")
        logging.getLogger("grafos_scheduler.http").debug("ours", extra={"event": "ours"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["ours"]


def test_lease_lost_names_the_lease_and_the_job(
    server: BackgroundServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = SchedulerClient(server.url, WORKER_TOKENS["alice"])
    agent = WorkerAgent(client, "job-lost", ttl=1.0)
    lease = agent.acquire()
    with caplog.at_level(logging.WARNING, logger="grafos_scheduler.agent"):
        with SchedulerClient(server.url, ADMIN_TOKEN) as admin:
            admin.fence(lease.lease_id)
        assert agent.lost.wait(10)
        time.sleep(0.05)
    agent.abandon()
    client.close()
    lost = [r for r in caplog.records if getattr(r, "event", None) == "lease_lost"]
    assert lost
    message = lost[0].getMessage()
    assert lease.lease_id in message
    assert "job-lost" in message
