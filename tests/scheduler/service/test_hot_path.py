"""The hot path (acquire, renew, batch renewal, release without Litestar) answers every
request exactly as the Litestar routes do: same status, same headers, same body.

Each request goes to two apps over one scheduler: the default one, whose hot path
serves it, and one built with ``hot_path=False``. The answers must match once the
parts that differ between any two calls (ids of new leases, times) are set aside.
Every test runs through both of the hot path's doors: as the ASGI app (Litestar's test
client), and from grafos's HTTP protocol on a real uvicorn server, which answers the
call before any ASGI app runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import BackgroundServer, Scheduler, TokenConfig, create_app
from support.servers import Headers

Client = TestClient[Litestar] | httpx.Client
# Fields that differ between two calls made a moment apart.
_VOLATILE = {"expires_at", "expires_in", "granted_at", "ended_at", "work_lost_seconds"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in _VOLATILE else _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture(params=["asgi", "protocol"])
def pair(
    request: pytest.FixtureRequest, scheduler: Scheduler, tokens: TokenConfig
) -> Iterator[tuple[Client, Client, Any]]:
    hot_app = create_app(scheduler, tokens)
    cold_app = create_app(scheduler, tokens, hot_path=False)
    if request.param == "asgi":
        with (
            TestClient(hot_app, raise_server_exceptions=False) as hot,
            TestClient(cold_app, raise_server_exceptions=False) as cold,
        ):
            yield hot, cold, hot_app.asgi_handler
        return
    with (
        BackgroundServer(hot_app) as hot_server,
        BackgroundServer(cold_app) as cold_server,
        httpx.Client(base_url=hot_server.url) as hot_client,
        httpx.Client(base_url=cold_server.url) as cold_client,
    ):
        yield hot_client, cold_client, hot_app.asgi_handler


def _same(hot: Any, cold: Any) -> Any:
    assert hot.status_code == cold.status_code, (hot.text, cold.text)
    assert hot.headers["content-type"] == cold.headers["content-type"]
    assert hot.headers.get("www-authenticate") == cold.headers.get("www-authenticate")
    assert int(hot.headers["content-length"]) == len(hot.content)
    assert _stable(hot.json()) == _stable(cold.json()), (hot.text, cold.text)
    return hot.json()


def _lease(client: Client, h: dict[str, str], job: str) -> tuple[str, int]:
    r = client.post("/v1/leases", json={"job": job, "slots": 1, "ttl": 30}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()["lease"]["lease_id"], r.json()["lease"]["fencing_token"]


def test_a_grant_and_a_ticket_are_answered_alike(
    pair: tuple[Client, Client, Any], headers: Headers
) -> None:
    hot, cold, front = pair
    body = {"job": "j1", "slots": 1, "ttl": 30, "priority": 3, "grace": 0}
    a = hot.post("/v1/leases", json=body, headers=headers["alice"])
    b = cold.post("/v1/leases", json=dict(body, job="j2"), headers=headers["alice"])
    assert a.status_code == 201
    a_body, b_body = a.json(), b.json()
    for answer in (a_body, b_body):
        answer["lease"]["lease_id"] = answer["lease"]["job"] = "*"
    assert _stable(a_body) == _stable(b_body)
    # Both slots are taken: the next acquires wait, with a ticket.
    a = hot.post("/v1/leases", json=dict(body, job="j3"), headers=headers["bob"])
    b = cold.post("/v1/leases", json=dict(body, job="j4"), headers=headers["bob"])
    assert a.status_code == b.status_code == 202
    assert front.served == 2


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"job": "j1", "slots": 1, "ttl": 30}, "the job holds a lease (another principal's)"),
        ({"job": "x", "slots": 0, "ttl": 30}, "a value out of range"),
        ({"job": "x", "slots": 1, "ttl": 30, "grace": 10**9}, "a grace beyond the bound"),
        ({"job": "x", "slots": 1}, "a missing field"),
        ({"job": "x", "slots": 1, "ttl": 30, "color": "red"}, "an unknown field"),
        ({"job": "x", "slots": 99, "ttl": 30}, "more slots than the capacity"),
    ],
)
def test_a_refused_acquire_is_answered_alike(
    pair: tuple[Client, Client, Any], headers: Headers, body: dict[str, Any], why: str
) -> None:
    hot, cold, _ = pair
    _lease(hot, headers["alice"], "j1")
    _same(
        hot.post("/v1/leases", json=body, headers=headers["bob"]),
        cold.post("/v1/leases", json=body, headers=headers["bob"]),
    )


@pytest.mark.parametrize(
    ("raw", "content_type", "auth"),
    [
        (b'{"job":"x","slots":1,"ttl":30}', "application/json", None),
        (b'{"job":"x","slots":1,"ttl":30}', "application/json", "Bearer nope"),
        (b'{"job":"x","slots":1,"ttl":30}', "text/plain", "alice"),
        (b'{"job":"x","slots":1,"ttl":30', "application/json", "alice"),
        (b'\xef\xbb\xbf{"job":"x","slots":1,"ttl":30}', "application/json", "alice"),
        (b'{"job":"x","job":"y","slots":1,"ttl":30}', "application/json", "alice"),
        (b"[]", "application/json", "alice"),
        (b"", "application/json", "alice"),
    ],
)
def test_a_request_it_does_not_understand_goes_to_the_app(
    pair: tuple[Client, Client, Any],
    headers: Headers,
    raw: bytes,
    content_type: str,
    auth: str | None,
) -> None:
    hot, cold, front = pair
    h = {"Content-Type": content_type}
    if auth is not None:
        h["Authorization"] = headers[auth]["Authorization"] if auth in headers else auth
    _same(
        hot.post("/v1/leases", content=raw, headers=h),
        cold.post("/v1/leases", content=raw, headers=h),
    )
    assert front.served == 0


def test_renewals_and_their_refusals_are_answered_alike(
    pair: tuple[Client, Client, Any], headers: Headers, scheduler: Scheduler
) -> None:
    hot, cold, front = pair
    lease_id, token = _lease(hot, headers["alice"], "j1")
    cases: list[tuple[str, dict[str, Any], str]] = [
        (lease_id, {"fencing_token": token}, "alice"),
        (lease_id, {"fencing_token": token, "reasons": ["checkpoint_in_progress"]}, "alice"),
        (lease_id, {"fencing_token": token, "checkpoint_age": 2.5}, "alice"),
        (lease_id, {"fencing_token": token + 1}, "alice"),  # stale token, 409
        (lease_id, {"fencing_token": token}, "bob"),  # not bob's lease, 403
        (lease_id, {"fencing_token": token}, "admin"),  # the admin may
        (lease_id, {"fencing_token": token, "reasons": ["operator_hold"]}, "alice"),
        ("0" * 32, {"fencing_token": 1}, "alice"),  # unknown, 404
        (lease_id, {"fencing_token": 0}, "alice"),  # out of range, 400
    ]
    for lid, body, who in cases:
        path = f"/v1/leases/{lid}/renew"
        _same(
            hot.post(path, json=body, headers=headers[who]),
            cold.post(path, json=body, headers=headers[who]),
        )
    served = front.served
    # A path the hot path does not match (an id in capitals) is the app's to refuse.
    path = f"/v1/leases/{lease_id.upper()}/renew"
    body = {"fencing_token": token}
    _same(
        hot.post(path, json=body, headers=headers["alice"]),
        cold.post(path, json=body, headers=headers["alice"]),
    )
    assert front.served == served
    # A released lease: 410 from both.
    scheduler.release(int(lease_id, 16))
    path = f"/v1/leases/{lease_id}/renew"
    _same(
        hot.post(path, json=body, headers=headers["alice"]),
        cold.post(path, json=body, headers=headers["alice"]),
    )


def test_batch_renewals_are_answered_alike(
    pair: tuple[Client, Client, Any], headers: Headers
) -> None:
    hot, cold, front = pair
    mine = _lease(hot, headers["alice"], "j1")
    theirs = _lease(hot, headers["bob"], "j2")
    good = {"lease_id": mine[0], "fencing_token": mine[1], "reasons": []}
    bodies: list[Any] = [
        {"leases": [good]},
        {"leases": [good, dict(good, fencing_token=mine[1] + 7)]},
        {"leases": [good, {"lease_id": theirs[0], "fencing_token": theirs[1]}]},
        {"leases": [good, {"lease_id": "zz", "fencing_token": 1}, {"fencing_token": 1}]},
        {"leases": [dict(good, checkpoint_age=1.5), dict(good, color=1)]},
        {"leases": [dict(good, reasons=["operator_hold"])]},
        {"leases": []},
        {"leases": [good] * 1001},
        {"leases": [good], "more": True},
    ]
    for body in bodies:
        _same(
            hot.post("/v1/renewals", json=body, headers=headers["alice"]),
            cold.post("/v1/renewals", json=body, headers=headers["alice"]),
        )
    assert front.served >= 6
    raw = b'{"leases":[{"lease_id":"%s","fencing_token":%d,"fencing_token":1}]}' % (
        mine[0].encode(),
        mine[1],
    )
    h = {**headers["alice"], "Content-Type": "application/json"}
    _same(
        hot.post("/v1/renewals", content=raw, headers=h),
        cold.post("/v1/renewals", content=raw, headers=h),
    )


def test_releases_and_their_refusals_are_answered_alike(
    pair: tuple[Client, Client, Any], headers: Headers
) -> None:
    hot, cold, front = pair
    first = _lease(hot, headers["alice"], "j1")[0]
    second = _lease(hot, headers["alice"], "j2")[0]
    # Bob may not; then each app releases one lease, with and without a body.
    for lid in (first, second):
        _same(
            hot.post(f"/v1/leases/{lid}/release", headers=headers["bob"]),
            cold.post(f"/v1/leases/{lid}/release", headers=headers["bob"]),
        )
    a = hot.post(
        f"/v1/leases/{first}/release", json={"work_lost_records": 3}, headers=headers["alice"]
    )
    b = cold.post(
        f"/v1/leases/{second}/release", json={"work_lost_records": 3}, headers=headers["alice"]
    )
    assert a.status_code == b.status_code == 200
    a_body, b_body = a.json(), b.json()
    for answer in (a_body, b_body):
        answer["lease_id"] = answer["job"] = "*"
    assert _stable(a_body) == _stable(b_body)
    # Released already: 410, from both, with an empty body too.
    _same(
        hot.post(f"/v1/leases/{first}/release", headers=headers["alice"]),
        cold.post(f"/v1/leases/{first}/release", headers=headers["alice"]),
    )
    _same(
        hot.post(
            f"/v1/leases/{first}/release", json={"work_lost_records": -1}, headers=headers["alice"]
        ),
        cold.post(
            f"/v1/leases/{first}/release", json={"work_lost_records": -1}, headers=headers["alice"]
        ),
    )
    assert front.served >= 3


def test_the_hot_path_counts_its_requests_in_the_metrics(
    pair: tuple[Client, Client, Any], headers: Headers
) -> None:
    hot, _, _ = pair
    lease_id, token = _lease(hot, headers["alice"], "j1")
    hot.post(
        f"/v1/leases/{lease_id}/renew", json={"fencing_token": token + 1}, headers=headers["alice"]
    )
    text = hot.get("/metrics", headers=headers["admin"]).text
    assert 'route="/v1/leases",status="201"' in text
    assert 'route="/v1/leases/{lease_id}/renew",status="409"' in text


def test_a_repeated_header_counts_once_as_it_does_for_the_app(
    scheduler: Scheduler, tokens: TokenConfig, headers: Headers
) -> None:
    good = headers["alice"]["Authorization"]
    raw = b'{"job":"x","slots":1,"ttl":30}'
    # On real servers, so that both headers reach the app as the client sent them. The
    # first token is alice's: granted by the hot path, then the app finds the job taken.
    # The first token is bad: both refuse, whatever follows it.
    cases = (((good, "Bearer nope"), (201, 409)), (("Bearer nope", good), (401, 401)))
    with (
        BackgroundServer(create_app(scheduler, tokens)) as hot_server,
        BackgroundServer(create_app(scheduler, tokens, hot_path=False)) as cold_server,
        httpx.Client(base_url=hot_server.url) as hot,
        httpx.Client(base_url=cold_server.url) as cold,
    ):
        for (first, second), expected in cases:
            h = [
                ("Authorization", first),
                ("Authorization", second),
                ("Content-Type", "application/json"),
            ]
            a = hot.post("/v1/leases", content=raw, headers=h)
            b = cold.post("/v1/leases", content=raw, headers=h)
            assert (a.status_code, b.status_code) == expected, (a.text, b.text)
