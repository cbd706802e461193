"""Every audited decision is also one structured log event (logger grafos_scheduler.http)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from litestar.testing import TestClient

from grafos_scheduler import Scheduler, SqliteStore, create_app
from support.servers import Headers, granted


def test_every_audited_decision_is_one_structured_log_event(
    tmp_path: Any, tokens: Any, headers: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="grafos_scheduler.http")
    with Scheduler(2, SqliteStore(tmp_path / "s.db"), max_defer=0.3) as scheduler:
        scheduler.start()
        with TestClient(create_app(scheduler, tokens), raise_server_exceptions=False) as c:
            lease = granted(c, headers["alice"])
            lid = lease["lease_id"]
            renew = {"fencing_token": lease["fencing_token"], "reasons": ["checkpoint_in_progress"]}
            assert c.post(
                f"/v1/leases/{lid}/renew", json=renew, headers=headers["alice"]
            ).is_success
            r = c.post(f"/v1/leases/{lid}/preempt", json={"cause": "t"}, headers=headers["admin"])
            assert r.json()["outcome"] == "deferred"
            give_up = time.monotonic() + 10
            wanted = {"grant", "preemption_deferred", "preemption_forced"}

            def seen() -> dict[str, logging.LogRecord]:
                return {
                    e: rec
                    for rec in caplog.records
                    if (e := getattr(rec, "event", None)) in wanted
                    and getattr(rec, "lease_id", None) == lid
                }

            while set(seen()) != wanted:
                assert time.monotonic() < give_up, sorted(seen())
                time.sleep(0.05)
    for record in seen().values():
        assert record.levelno == logging.INFO
        assert getattr(record, "job", None) == "job-a"
        assert isinstance(getattr(record, "data", None), dict)
        assert isinstance(getattr(record, "audit_seq", None), int)
    forced = [r for r in caplog.records if getattr(r, "event", None) == "preemption_forced"]
    assert len(forced) == 1  # one event per decision, not one per reader
