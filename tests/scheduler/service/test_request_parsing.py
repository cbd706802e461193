"""Request bodies at the HTTP edge: strict JSON, named fields, limits, the content type."""

from __future__ import annotations

from typing import Any

import pytest

from support.internals import AcquireRequest, FieldError, PreemptRequest, RenewRequest, parse_body
from support.servers import Client, Headers, granted

JSON = {"Content-Type": "application/json"}


def post_raw(client: Client, path: str, raw: bytes, h: dict[str, str]) -> Any:
    return client.post(path, content=raw, headers={**h, **JSON})


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


@pytest.mark.parametrize("job", ["job\n", "job-a\n", "\njob", "jo\nb"])
def test_job_names_with_a_newline_are_400(client: Client, headers: Headers, job: str) -> None:
    r = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": 5}, headers=headers["alice"])
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "job"


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
