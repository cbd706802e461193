"""Whether a server has the server side of issue 10 (``GET /v1/watch``, grace windows)."""

from __future__ import annotations

import httpx


def server_has_watch(url: str, token: str) -> bool:
    response = httpx.get(
        f"{url}/v1/watch",
        params={"timeout": 0},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5.0,
    )
    return response.status_code != 404
