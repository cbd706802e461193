"""Regression tests for the service review: bad input at the edges, metrics, logs."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import InvalidRequest, Scheduler, SqliteStore, create_app
from grafos_scheduler._domain._lease import check_name
from grafos_scheduler._wire._models import (
    AcquireRequest,
    FieldError,
    PreemptRequest,
    RenewRequest,
    parse_body,
)

Client = TestClient[Litestar]
Headers = dict[str, dict[str, str]]
JSON = {"Content-Type": "application/json"}


def post_raw(client: Client, path: str, raw: bytes, h: dict[str, str]) -> Any:
    return client.post(path, content=raw, headers={**h, **JSON})


def granted(client: Client, h: dict[str, str], job: str = "job-a", ttl: float = 30.0) -> Any:
    r = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": ttl}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()["lease"]


# ------------------------------------------------------------------ 1: lone surrogates

SURROGATE_BODIES = [
    # (path template, raw body, field named in the error)
    ("/v1/leases", rb'{"\ud800": 1}', "\\ud800"),
    ("/v1/leases", rb'{"job": "a", "slots": 1, "ttl": 1, "x\udfff": 1}', "x\\udfff"),
    ("/v1/leases", rb'{"job": "a\ud800", "slots": 1, "ttl": 1}', "job"),
    ("/v1/leases/{lid}/renew", rb'{"\udbff": 1}', "\\udbff"),
    ("/v1/leases/{lid}/renew", rb'{"fencing_token": 1, "reasons": ["\ud800"]}', "reasons[0]"),
    ("/v1/leases/{lid}/preempt", rb'{"\ud800": "x"}', "\\ud800"),
    ("/v1/leases/{lid}/preempt", rb'{"cause": "x\ud800"}', "cause"),
]


@pytest.mark.parametrize(("path", "raw", "field"), SURROGATE_BODIES)
def test_lone_surrogates_in_keys_and_values_are_400_naming_the_field(
    client: Client, headers: Headers, path: str, raw: bytes, field: str
) -> None:
    lease = granted(client, headers["alice"])
    r = post_raw(client, path.format(lid=lease["lease_id"]), raw, headers["admin"])
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"] == field
    assert "surrogate" in body["message"] or "unknown field" in body["message"]


@pytest.mark.parametrize("model", [AcquireRequest, RenewRequest, PreemptRequest])
def test_parse_body_refuses_surrogates_for_every_model(model: type[Any]) -> None:
    for raw in (rb'{"\ud800": 1}', rb'{"\ud800\udc00x\udc00": 1}'):
        with pytest.raises(FieldError) as info:
            parse_body(model, raw)
        assert info.value.field is not None
        info.value.field.encode("utf-8")  # escaped: it can go into a response


# ------------------------------------------------------------------ 2: latency statuses


def test_401_and_unknown_routes_are_counted_with_their_status(
    client: Client, headers: Headers
) -> None:
    for _ in range(3):
        assert client.get("/v1/leases", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/nowhere", headers=headers["admin"]).status_code == 404
    assert client.delete("/healthz").status_code == 405
    text = client.get("/metrics", headers=headers["admin"]).text
    counts = [
        line for line in text.splitlines() if "grafos_http_request_duration_seconds_count" in line
    ]
    assert any('status="401"' in line and line.endswith(" 3.0") for line in counts), counts
    assert any('status="404"' in line for line in counts), counts
    assert any('status="405"' in line for line in counts), counts
    assert not any('status="500"' in line for line in counts), counts


# ------------------------------------------------------------------ 3: trailing newline


@pytest.mark.parametrize("job", ["job\n", "job-a\n", "\njob", "jo\nb"])
def test_job_names_with_a_newline_are_400(client: Client, headers: Headers, job: str) -> None:
    r = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": 5}, headers=headers["alice"])
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "job"


@pytest.mark.parametrize("name", ["job\n", "job\r\n", "jo\tb", "a\x00"])
def test_core_check_name_refuses_control_characters(name: str, scheduler: Scheduler) -> None:
    with pytest.raises(InvalidRequest):
        check_name(name, "job")
    with pytest.raises(InvalidRequest):
        scheduler.acquire(name, "alice", 0, 1, 5.0)
    assert check_name("job with space", "job") == "job with space"


# ------------------------------------------------------------------ 19: ttl, duplicates


@pytest.mark.parametrize("ttl", [0, -1, -1e-320, 86_400.5])
def test_a_ttl_that_is_not_positive_or_over_a_day_is_400(
    client: Client, headers: Headers, ttl: float
) -> None:
    r = client.post(
        "/v1/leases", json={"job": "j", "slots": 1, "ttl": ttl}, headers=headers["alice"]
    )
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "ttl"


@pytest.mark.parametrize("ttl", [1e-320, 0.001])
def test_a_tiny_positive_ttl_is_granted_and_simply_runs_out(
    client: Client, headers: Headers, ttl: float
) -> None:
    # The issue refuses only a ttl that is not positive; a tiny one is a lease that
    # expires at once, and renewing it is a 410 like any other expired lease.
    r = client.post(
        "/v1/leases", json={"job": "j", "slots": 1, "ttl": ttl}, headers=headers["alice"]
    )
    assert r.status_code == 201, r.text
    lease = r.json()["lease"]
    renewed = client.post(
        f"/v1/leases/{lease['lease_id']}/renew",
        json={"fencing_token": lease["fencing_token"], "reasons": []},
        headers=headers["alice"],
    )
    assert renewed.status_code == 410, renewed.text


def test_duplicate_keys_are_400_naming_the_key(client: Client, headers: Headers) -> None:
    raw = b'{"job": "j", "slots": 1, "ttl": 5, "slots": 2}'
    r = post_raw(client, "/v1/leases", raw, headers["alice"])
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "slots"
    assert "more than once" in r.json()["message"]


# ------------------------------------------------------------------ 10: decision logs


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


# ------------------------------------------------------------------ 16: worker reasons


def test_workers_may_report_only_checkpoint_in_progress(client: Client, headers: Headers) -> None:
    lease = granted(client, headers["alice"])
    url = f"/v1/leases/{lease['lease_id']}/renew"
    body = {"fencing_token": lease["fencing_token"], "reasons": ["operator_hold"]}
    r = client.post(url, json=body, headers=headers["alice"])
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "reasons[0]"
    body["reasons"] = ["checkpoint_in_progress"]
    assert client.post(url, json=body, headers=headers["alice"]).status_code == 200


# ------------------------------------------------------------------ 17: content type


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_declared_as_json_is_415(
    client: Client, headers: Headers, content_type: str | None
) -> None:
    raw = b'{"job": "j", "slots": 1, "ttl": 5}'
    h = dict(headers["alice"])
    if content_type is not None:
        h["Content-Type"] = content_type
    r = client.post("/v1/leases", content=raw, headers=h)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type"
    lease = granted(client, headers["alice"])
    # An empty body needs no content type.
    assert client.post(f"/v1/leases/{lease['lease_id']}/release", headers=h).status_code == 200
