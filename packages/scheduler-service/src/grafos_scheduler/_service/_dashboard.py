"""The dashboard at ``/ui``: a page for people, and the two read-only routes it needs.

The page (``_ui/index.html``, ``app.js``, ``app.css``, shipped inside the wheel) is
open like ``/healthz``: it holds no data. Everything it shows comes from the
authenticated JSON API, with the bearer token the person signs in with. Its
Content-Security-Policy allows nothing but this origin, so it can load nothing from a
CDN even by mistake.

Two routes exist for it: ``GET /v1/whoami`` (any principal: who the token belongs to)
and ``GET /v1/capacity`` (the admin: capacity used and total, by priority).
"""

from __future__ import annotations

from collections import defaultdict
from importlib import resources
from typing import Annotated, Any

import attrs
from litestar import Request, Response, get
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter

from .._domain._lease import LeaseState
from .._scheduler._scheduler import Scheduler
from .._service._auth import Principal

__all__ = ["DASHBOARD_PATHS", "CapacityView", "PriorityUsage", "WhoAmI", "dashboard_routes"]

# Litestar adds "; charset=utf-8" to text types.
# Served without authentication: the page and its assets only, never data.
_ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
DASHBOARD_PATHS = frozenset({"/ui", "/ui/", *(f"/ui/{name}" for name in _ASSETS)})

# Nothing from anywhere but this origin; no inline script, no framing.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@attrs.frozen
class WhoAmI:
    """The principal a bearer token belongs to."""

    principal: str
    admin: bool


@attrs.frozen
class PriorityUsage:
    """Slots held by the ACTIVE leases of one priority."""

    priority: int
    leases: int
    slots: int


@attrs.frozen
class CapacityView:
    """Capacity used and total, by priority (highest first), and what waits for it."""

    capacity: int
    used: int
    free: int
    by_priority: list[PriorityUsage]
    tickets_pending: int
    tickets_slots: int  # slots the pending tickets ask for, together


def _asset(name: str) -> bytes:
    return (
        resources.files(__package__ or "grafos_scheduler._service")
        .joinpath("_ui", name)
        .read_bytes()
    )


def _principal(request: Request[Any, Any, Any]) -> Principal:
    principal: Principal = request.scope["user"]
    return principal


def dashboard_routes(scheduler: Scheduler) -> list[HTTPRouteHandler]:
    """The route handlers of the dashboard, over ``scheduler``."""
    # Read once: the assets are package data and do not change while serving.
    page = _asset("index.html")
    assets = {name: (_asset(name), media) for name, media in _ASSETS.items()}

    @get(["/ui", "/ui/"], include_in_schema=False, sync_to_thread=False)
    def ui_page() -> Response[bytes]:
        return Response(page, media_type="text/html", headers=_HEADERS)

    @get("/ui/{name:str}", include_in_schema=False, sync_to_thread=False)
    def ui_asset(name: Annotated[str, PathParameter()]) -> Response[bytes]:
        found = assets.get(name)
        if found is None:
            raise NotFoundException(f"the dashboard has no asset {name!r}")
        body, media = found
        return Response(body, media_type=media, headers=_HEADERS)

    @get(
        "/v1/whoami",
        summary="The principal this bearer token belongs to",
        sync_to_thread=False,
    )
    def whoami(request: Request[Any, Any, Any]) -> WhoAmI:
        principal = _principal(request)
        return WhoAmI(principal=principal.name, admin=principal.is_admin)

    @get(
        "/v1/capacity",
        summary="Capacity used and total, by priority, and the tickets waiting (admin)",
        sync_to_thread=True,
    )
    def capacity(request: Request[Any, Any, Any]) -> CapacityView:
        principal = _principal(request)
        if not principal.is_admin:
            raise PermissionDeniedException(f"principal {principal.name!r} is not the admin")
        leases = scheduler.leases(LeaseState.ACTIVE)
        tickets = scheduler.tickets()
        count: defaultdict[int, int] = defaultdict(int)
        slots: defaultdict[int, int] = defaultdict(int)
        for lease in leases:
            count[lease.priority] += 1
            slots[lease.priority] += lease.slots
        used = sum(slots.values())
        return CapacityView(
            capacity=scheduler.capacity,
            used=used,
            free=scheduler.capacity - used,
            by_priority=[
                PriorityUsage(priority=p, leases=count[p], slots=slots[p])
                for p in sorted(count, reverse=True)
            ],
            tickets_pending=len(tickets),
            tickets_slots=sum(t.slots for t in tickets),
        )

    return [ui_page, ui_asset, whoami, capacity]
