"""``ServiceContext``: what the HTTP handlers share, and how a decided call is answered.

A hot lease call is decided at once (:mod:`._decisions`) and answered once everything
it may reveal is durable: :meth:`ServiceContext.answer` awaits that, for a coroutine;
:meth:`ServiceContext.answer_soon` calls back, for the HTTP protocol's own door.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from .._domain._clock import Clock
from .._domain._errors import StoreFailed
from .._domain._lease import Lease, LeaseState, Ticket
from .._scheduler._scheduler import Scheduler
from .._wire._models import AcquireResult, LeaseView
from ._durability import DurabilityWaiter
from ._metrics import SchedulerMetrics
from ._views import Now, acquire_result, lease_view, ticket_view

__all__ = ["Decision", "ServiceContext", "context_of", "context_state"]

_STATE_KEY = "grafos"
_T = TypeVar("_T")

#: A hot call decided: the scheduler was called (its change written, maybe not yet
#: durable), and this builds the answer once everything it may reveal is durable.
Decision = Callable[[], _T]


@attrs.define
class ServiceContext:
    """What the handlers share: the scheduler, its clock and the metrics."""

    scheduler: Scheduler
    clock: Clock
    metrics: SchedulerMetrics
    durability: DurabilityWaiter

    def now(self) -> Now:
        return Now.read(self.clock)

    def lease_view(self, lease: Lease, now: Now | None = None) -> LeaseView:
        """``lease`` with its markers and pending preemption, if ACTIVE.

        Those live in memory in the preemption manager (no store, not the scheduler's
        lock): the request's one scheduler call is the one that produced ``lease``.
        """
        now = self.now() if now is None else now
        if lease.state is not LeaseState.ACTIVE:
            return lease_view(lease, now)
        manager = self.scheduler.manager
        return lease_view(
            lease,
            now,
            reasons=manager.reasons(lease.lease_id),
            pending=manager.pending(lease.lease_id),
        )

    def result(self, outcome: Lease | Ticket) -> AcquireResult:
        if isinstance(outcome, Lease):
            return acquire_result(self.lease_view(outcome))
        return acquire_result(ticket_view(outcome, self.now()))

    async def answer(self, decide: Callable[[], Decision[_T]]) -> _T:
        """Decide, wait until that is durable (a refusal too: it may reveal a change
        not yet durable, as an expiry), then build the answer."""
        try:
            finish = decide()
        finally:
            await self.durability.wait()
        return finish()

    def answer_soon(
        self, decide: Callable[[], Decision[_T]], done: Callable[[_T | Exception], None]
    ) -> None:
        """:meth:`answer` without a coroutine: ``done`` gets the answer, or the error
        that refused it, once durable; at once, in this call, when nothing waits."""
        try:
            finish = decide()
        except Exception as exc:
            finish = _raising(exc)

        def complete(failure: BaseException | None) -> None:
            try:
                if failure is not None:
                    raise failure  # as in answer(): the wait's failure wins
                answer = finish()
            except Exception as exc:
                done(exc)
                return
            except BaseException as exc:  # the wait ended some other way: still answer
                done(RuntimeError(f"the wait for durability ended with {exc!r}"))
                return
            done(answer)

        def settled(future: asyncio.Future[None]) -> None:
            complete(asyncio.CancelledError() if future.cancelled() else future.exception())

        try:
            future = self.durability.when_durable()
        except StoreFailed as exc:
            complete(exc)
            return
        if future is None:
            complete(None)
        else:
            future.add_done_callback(settled)


def _raising(exc: Exception) -> Decision[Any]:
    def finish() -> Any:
        raise exc

    return finish


def context_state(context: ServiceContext) -> dict[str, Any]:
    """The app state that carries ``context`` to the handlers."""
    return {_STATE_KEY: context}


def context_of(state: Mapping[str, Any]) -> ServiceContext:
    """The context that :func:`context_state` put in an app's state."""
    ctx: ServiceContext = state[_STATE_KEY]
    return ctx
