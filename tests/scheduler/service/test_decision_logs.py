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


def test_each_decision_is_logged_once(
    tmp_path: Any, tokens: Any, headers: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    # The bug: the routes logged their own line (lease_granted, preemption_requested...)
    # beside the audit tail's, so every decision made in a request was logged twice.
    caplog.set_level(logging.INFO, logger="grafos_scheduler.http")
    with (
        Scheduler(1, SqliteStore(tmp_path / "s.db")) as scheduler,
        TestClient(create_app(scheduler, tokens), raise_server_exceptions=False) as c,
    ):
        admin, alice, bob = headers["admin"], headers["alice"], headers["bob"]
        first = granted(c, alice, "one")
        waiting = c.post("/v1/leases", json={"job": "two", "slots": 1, "ttl": 30}, headers=bob)
        ticket = waiting.json()["ticket"]["ticket_id"]
        assert c.delete(f"/v1/tickets/{ticket}", headers=bob).status_code == 200
        url = f"/v1/leases/{first['lease_id']}"
        assert c.post(f"{url}/preempt", json={"cause": "x"}, headers=admin).is_success
        second = granted(c, alice, "three")
        assert c.post(f"/v1/leases/{second['lease_id']}/release", headers=alice).is_success
        third = granted(c, alice, "four")
        assert c.post(f"/v1/leases/{third['lease_id']}/fence", headers=admin).is_success
        records = scheduler.audit.records(limit=1000)
        give_up = time.monotonic() + 10
        while not any(getattr(r, "audit_seq", None) == records[-1].seq for r in caplog.records):
            assert time.monotonic() < give_up
            time.sleep(0.05)
    events = [e for r in caplog.records if (e := getattr(r, "event", None)) is not None]
    decisions = [e for e in events if e not in {"start", "restart"}]
    expected = [r.kind for r in records if r.kind not in {"start", "restart"}]
    assert decisions == expected
    assert expected.count("preemption_requested") == 1
    assert expected.count("ticket_cancelled") == 1
