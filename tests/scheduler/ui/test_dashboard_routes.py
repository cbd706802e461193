"""The dashboard's routes without a browser: the page is open, the data is not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from grafos_scheduler import Scheduler, TokenConfig, create_app

from .conftest import ADMIN_TOKEN, WORKER_TOKENS

ASSETS = ("index.html", "app.js", "app.css")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(scheduler: Scheduler) -> Iterator[TestClient[Litestar]]:
    app = create_app(scheduler, TokenConfig(ADMIN_TOKEN, WORKER_TOKENS))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ],
)
def test_the_page_and_its_assets_need_no_token(
    client: TestClient[Litestar], path: str, media: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == f"{media}; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_unknown_asset_is_not_served(client: TestClient[Litestar]) -> None:
    assert client.get("/ui/../schema").status_code in (401, 404)
    answer = client.get("/ui/secrets.txt", headers=bearer(ADMIN_TOKEN))
    assert answer.status_code == 404
    assert "secrets.txt" in answer.json()["message"]


def test_the_assets_load_nothing_from_elsewhere() -> None:
    folder = resources.files("grafos_scheduler._service").joinpath("_ui")
    for name in ASSETS:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        # Any absolute URL would be a CDN or another host; the page uses its own paths.
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), name
        assert "url(http" not in text, name
    page = folder.joinpath("index.html").read_text(encoding="utf-8")
    assert "<script>" not in page  # no inline script: the policy would refuse it
    script = folder.joinpath("app.js").read_text(encoding="utf-8")
    assert ".innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "console." not in script  # nothing is logged, the token least of all
    assert "localStorage" not in script  # the token stays in this tab (sessionStorage)


def test_whoami_names_the_principal(client: TestClient[Litestar]) -> None:
    assert client.get("/v1/whoami", headers=bearer(ADMIN_TOKEN)).json() == {
        "principal": "admin",
        "admin": True,
    }
    assert client.get("/v1/whoami", headers=bearer(WORKER_TOKENS["bob"])).json() == {
        "principal": "bob",
        "admin": False,
    }
    refused = client.get("/v1/whoami", headers=bearer("no-such-token-at-all"))
    assert refused.status_code == 401
    assert refused.json()["message"] == "invalid bearer token"


def test_capacity_by_priority_for_the_admin_only(
    client: TestClient[Litestar], scheduler: Scheduler
) -> None:
    scheduler.acquire("low-a", "alice", 1, 1, 60.0)
    scheduler.acquire("low-b", "bob", 1, 1, 60.0)
    scheduler.acquire("high", "bob", 9, 2, 60.0)
    scheduler.acquire("waits", "alice", 0, 3, 60.0)  # 4 slots, all taken: a ticket
    answer = client.get("/v1/capacity", headers=bearer(ADMIN_TOKEN))
    assert answer.status_code == 200
    assert answer.json() == {
        "capacity": 4,
        "used": 4,
        "free": 0,
        "by_priority": [
            {"priority": 9, "leases": 1, "slots": 2},
            {"priority": 1, "leases": 2, "slots": 2},
        ],
        "tickets_pending": 1,
        "tickets_slots": 3,
    }
    refused = client.get("/v1/capacity", headers=bearer(WORKER_TOKENS["alice"]))
    assert refused.status_code == 403
    assert refused.json()["message"] == "principal 'alice' is not the admin"
    assert client.get("/v1/capacity").status_code == 401


def test_the_routes_are_in_the_schema(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json", headers=bearer(ADMIN_TOKEN)).json()["paths"]
    assert "/v1/capacity" in paths
    assert "/v1/whoami" in paths
    assert not any(p.startswith("/ui") for p in paths)
