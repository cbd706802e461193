"""Authentication (401) and authorisation (403): none, wrong, another worker's, admin."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from grafos_scheduler import Principal, TokenConfig, TokenConfigError
from support.servers import Client, Headers, granted


@pytest.fixture
def alice_lease(client: Client, headers: Headers) -> str:
    r = client.post(
        "/v1/leases", json={"job": "job-a", "slots": 1, "ttl": 30}, headers=headers["alice"]
    )
    lease_id: str = r.json()["lease"]["lease_id"]
    return lease_id


def routes(lease_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", "/v1/leases", None),
        ("POST", "/v1/leases", {"job": "job-z", "slots": 1, "ttl": 5}),
        ("GET", f"/v1/leases/{lease_id}", None),
        ("POST", f"/v1/leases/{lease_id}/renew", {"fencing_token": 1}),
        ("POST", f"/v1/leases/{lease_id}/preempt", {"cause": "x"}),
        ("POST", f"/v1/leases/{lease_id}/fence", None),
        ("POST", f"/v1/leases/{lease_id}/release", None),
        ("GET", f"/v1/tickets/{'0' * 32}", None),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/audit/head", None),
        ("GET", "/v1/audit/verify", None),
        ("GET", "/metrics", None),
        ("GET", "/schema/openapi.json", None),
    ]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-wrong-token",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer admin-token-for-tests-000",  # a prefix of the admin token
        "Bearer admin-token-for-tests-0001x",
        "Bearer \u00e9\u00e9\u00e9".encode().decode("latin-1"),  # non-ASCII bytes on the wire
    ],
)
def test_missing_or_wrong_token_is_401_everywhere(
    client: Client, alice_lease: str, authorization: str | None
) -> None:
    h = {} if authorization is None else {b"Authorization": authorization.encode("latin-1")}
    for method, path, body in routes(alice_lease):
        r = client.request(method, path, json=body, headers=h)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_unknown_routes_are_404_in_the_shared_shape(client: Client) -> None:
    # Routing runs before authentication: there is nothing behind an unknown path.
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert set(r.json()) == {"status", "error", "message", "field"}


def test_another_workers_lease_is_403(client: Client, headers: Headers, alice_lease: str) -> None:
    bob = headers["bob"]
    url = f"/v1/leases/{alice_lease}"
    assert client.get(url, headers=bob).status_code == 403
    assert client.post(f"{url}/renew", json={"fencing_token": 1}, headers=bob).status_code == 403
    assert client.post(f"{url}/release", headers=bob).status_code == 403
    assert client.get("/v1/leases", headers=bob).json()["leases"] == []
    # The lease is untouched by bob's attempts.
    assert client.get(url, headers=headers["alice"]).json()["state"] == "active"


def test_admin_only_routes_are_403_for_workers(
    client: Client, headers: Headers, alice_lease: str
) -> None:
    alice = headers["alice"]
    url = f"/v1/leases/{alice_lease}"
    for method, path, body in [
        ("POST", f"{url}/preempt", {"cause": "x"}),
        ("POST", f"{url}/fence", None),
        ("GET", "/v1/audit", None),
        ("GET", "/v1/audit/head", None),
        ("GET", "/v1/audit/verify", None),
    ]:
        r = client.request(method, path, json=body, headers=alice)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"] == "forbidden"


def test_admin_may_act_on_any_lease(client: Client, headers: Headers, alice_lease: str) -> None:
    admin = headers["admin"]
    url = f"/v1/leases/{alice_lease}"
    assert client.get(url, headers=admin).status_code == 200
    r = client.post(f"{url}/renew", json={"fencing_token": 1}, headers=admin)
    assert r.status_code == 200
    assert client.post(f"{url}/release", headers=admin).json()["state"] == "released"


def test_tokens_never_reach_logs_or_reprs(
    client: Client, headers: Headers, tokens: TokenConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/v1/leases", headers={"Authorization": "Bearer wrong-token-wrong-token"})
    client.get("/v1/leases", headers=headers["alice"])
    text = caplog.text + repr(tokens) + "".join(repr(r.__dict__) for r in caplog.records)
    for token in [tokens.admin_token, *tokens.worker_tokens.values(), "wrong-token-wrong-token"]:
        assert token not in text


def test_authenticate_resolves_each_principal(tokens: TokenConfig) -> None:
    assert tokens.authenticate(f"Bearer {tokens.admin_token}") == Principal("admin", True)
    assert tokens.authenticate(f"bearer {tokens.worker_tokens['bob']}") == Principal("bob", False)
    assert tokens.authenticate(None) is None
    assert tokens.authenticate(f"Token {tokens.admin_token}") is None


def test_token_file_round_trip(tmp_path: Path) -> None:
    config = TokenConfig.generate(["w-1", "w-2"])
    path = tmp_path / "tokens.toml"
    config.dump(path)
    assert path.stat().st_mode & 0o077 == 0  # owner only
    loaded = TokenConfig.load(path)
    assert loaded.admin_token == config.admin_token
    assert dict(loaded.worker_tokens) == dict(config.worker_tokens)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "admin"),
        ("admin = 3", "admin"),
        ('admin = "short"', "admin"),
        ('admin = "x-long-enough-token-1"\nextra = 1', "unknown keys"),
        ('admin = "x-long-enough-token-1"\nworkers = 3', "workers"),
        ('admin = "x-long-enough-token-1"\n[workers]\nw = 5', "workers.w"),
        ('admin = "x-long-enough-token-1"\n[workers]\nw = "x-long-enough-token-1"', "unique"),
        ('admin = "x-long-enough-token-1"\n[workers]\nadmin = "y-long-enough-token-1"', "admin"),
        ('admin = "x-long-enough-token-1"\n[workers]\n"a b" = "y-long-enough-token-1"', "a b"),
        ("admin = [", "TOML"),
    ],
)
def test_bad_token_files_are_refused_without_echoing_tokens(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(TokenConfigError) as info:
        TokenConfig.load(path)
    assert needle in str(info.value)
    assert "long-enough-token" not in str(info.value)


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(TokenConfigError, match="cannot read"):
        TokenConfig.load(tmp_path / "absent.toml")


def test_workers_may_report_only_checkpoint_in_progress(client: Client, headers: Headers) -> None:
    lease = granted(client, headers["alice"])
    url = f"/v1/leases/{lease['lease_id']}/renew"
    body = {"fencing_token": lease["fencing_token"], "reasons": ["operator_hold"]}
    r = client.post(url, json=body, headers=headers["alice"])
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "reasons[0]"
    body["reasons"] = ["checkpoint_in_progress"]
    assert client.post(url, json=body, headers=headers["alice"]).status_code == 200
