"""A reload of the service's tokens is an audit record, in the chain like any other."""

from __future__ import annotations

import pytest

from grafos_scheduler import InvalidRequest, Scheduler


def test_reloads_are_chained_audit_records(scheduler: Scheduler) -> None:
    ok = scheduler.record_tokens_reloaded(
        source="/etc/grafos/tokens.toml", admin=True, workers=["bob", "alice"]
    )
    failed = scheduler.record_tokens_reloaded(source="/etc/grafos/tokens.toml", error="bad toml")
    assert (ok.kind, dict(ok.data)) == (
        "tokens_reloaded",
        {"source": "/etc/grafos/tokens.toml", "admin": True, "workers": ["alice", "bob"]},
    )
    assert (failed.kind, failed.data["error"]) == ("tokens_reload_failed", "bad toml")
    assert scheduler.audit.head() == (failed.seq, failed.hash)
    assert scheduler.audit.verify()


def test_a_bad_worker_name_is_refused(scheduler: Scheduler) -> None:
    head = scheduler.audit.head()
    with pytest.raises(InvalidRequest, match="worker 'no spaces'"):
        scheduler.record_tokens_reloaded(source="t.toml", workers=["no spaces"])
    assert scheduler.audit.head() == head
