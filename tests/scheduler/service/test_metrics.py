"""/metrics: request latencies are counted under their real status, errors included."""

from __future__ import annotations

from support.servers import Client, Headers


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
