"""schemathesis against /schema: no 5xx, and every answer conforms to the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from grafos_scheduler import Scheduler, SqliteStore, TokenConfig, create_app

ADMIN_TOKEN = "admin-token-for-fuzzing-01"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "scheduler.db"
    with Scheduler(4, SqliteStore(db), max_defer=5.0) as scheduler:
        scheduler.start()
        app = create_app(scheduler, TokenConfig(ADMIN_TOKEN, {"w": "worker-token-fuzzing-1"}))
        yield schemathesis.openapi.from_asgi("/schema/openapi.json", app, headers=AUTH)


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_route_is_in_the_schema(api_schema: Any) -> None:
    labels = {op.label for op in operations(api_schema)}
    assert "POST /v1/leases/{lease_id}/renew" in labels
    assert len(labels) >= 12


def _bound_the_wait(case: Any) -> None:
    # A watch with nothing to say waits its whole timeout (up to 60 s, 30 by default):
    # a valid timeout is cut to 50 ms, so the fuzz stays bounded; invalid ones stay.
    query = dict(case.query or {})
    try:
        valid = 0 <= float(query.get("timeout", 30)) <= 60
    except (TypeError, ValueError):
        valid = False
    if valid:
        query["timeout"] = 0.05
        case.query = query


def test_api_conforms_to_its_schema(api_schema: Any) -> None:
    """A bounded number of generated requests per route: no 5xx, answers conform."""
    for operation in operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            if case.path == "/v1/watch":
                _bound_the_wait(case)
            case.call_and_validate(
                headers=AUTH,
                checks=[
                    checks.not_a_server_error,
                    checks.status_code_conformance,
                    checks.content_type_conformance,
                    checks.response_schema_conformance,
                ],
            )

        check()
