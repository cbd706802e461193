"""The v1 HTTP API on Litestar: :func:`create_app` wires the routes to a scheduler.

Every request except ``GET /healthz`` needs ``Authorization: Bearer <token>``. A worker
may act only on the leases it holds; the admin may act on any, and alone may preempt,
fence and read the audit log (:mod:`._policy`). Every error, whatever raised it, is one
:class:`ErrorBody` (:mod:`._errors`).
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from .._domain._clock import Clock, SystemClock
from .._scheduler._scheduler import Scheduler
from ._audit_tail import AuditLogger
from ._auth import Authenticator
from ._body import parse_request_body
from ._context import ServiceContext, context_state
from ._dashboard import dashboard_routes
from ._durability import DurabilityWaiter
from ._errors import ON_STORE_FAILED, handle_exception
from ._hot_path import HotPath
from ._metrics import SchedulerMetrics
from ._middleware import Authentication, Latency
from ._openapi import document
from ._routes import ROUTES
from ._watch import WatchHub, watch, watch_state

__all__ = ["create_app"]

# A batch renewal of 1000 leases, each with both reasons, is about 100 KiB.
MAX_BODY = 256 * 1024


def create_app(
    scheduler: Scheduler,
    tokens: Authenticator,
    *,
    clock: Clock | None = None,
    metrics: SchedulerMetrics | None = None,
    on_store_failed: Callable[[], None] | None = None,
    hot_path: bool = True,
) -> Litestar:
    """The v1 API over ``scheduler``, authenticating with ``tokens``.

    ``clock`` must be the scheduler's own (to turn its monotonic times into wall times);
    by default it is the scheduler's ``clock`` attribute if it has one, else the system
    clock. The caller starts and closes the scheduler. ``on_store_failed`` is called
    when a request meets a failed fsync (the scheduler then refuses everything): the
    server runner passes what stops the server. ``hot_path=False`` sends every request
    through Litestar, the hot lease calls too (the tests compare the two).
    """
    if clock is None:
        clock = getattr(scheduler, "clock", None) or SystemClock()
    if metrics is None:
        metrics = SchedulerMetrics(scheduler)
    durability = DurabilityWaiter(scheduler)
    context = ServiceContext(
        scheduler=scheduler, clock=clock, metrics=metrics, durability=durability
    )
    audit_logger = AuditLogger(scheduler)
    hub = WatchHub(scheduler.events, clock)
    app = Litestar(
        route_handlers=[*ROUTES, watch, *dashboard_routes(scheduler)],
        state=State(
            {**context_state(context), **watch_state(hub), ON_STORE_FAILED: on_store_failed}
        ),
        on_startup=[audit_logger.start, hub.start],
        on_shutdown=[hub.stop, audit_logger.stop, durability.stop],
        middleware=[DefineMiddleware(Authentication, tokens=tokens)],
        before_request=parse_request_body,
        exception_handlers={Exception: handle_exception},
        openapi_config=OpenAPIConfig(
            title="grafos-scheduler",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", description="token")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
        logging_config=None,
        request_max_body_size=MAX_BODY,
    )
    document(app)
    # Time every request around the app's own exception handling, not per route: so a
    # 401 from the authentication middleware and a 404/405 for a path or method no
    # route serves are counted with the status the client got.
    app.asgi_handler = Latency(app.asgi_handler, metrics)
    if hot_path:
        # In front of it all: the hot lease calls skip Litestar (see _hot_path).
        app.asgi_handler = HotPath(
            app.asgi_handler,
            context,
            tokens,
            max_body=MAX_BODY,
            on_store_failed=on_store_failed,
        )
    return app
