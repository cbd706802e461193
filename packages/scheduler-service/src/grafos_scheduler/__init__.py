"""grafos_scheduler: leases with fencing tokens, bounded preemption, a hash-chained audit log.

Import everything from here; the ``_modules`` are private.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._agent import RunOutcome as RunOutcome
from ._agent import RunResult as RunResult
from ._agent import WorkerAgent as WorkerAgent
from ._audit import AuditKind as AuditKind
from ._audit import AuditLog as AuditLog
from ._audit import AuditRecord as AuditRecord
from ._audit import AuditVerification as AuditVerification
from ._auth import Principal as Principal
from ._auth import TokenConfig as TokenConfig
from ._auth import TokenConfigError as TokenConfigError
from ._client import AuthenticationFailed as AuthenticationFailed
from ._client import LeaseGone as LeaseGone
from ._client import NotFound as NotFound
from ._client import PermissionDenied as PermissionDenied
from ._client import RequestRejected as RequestRejected
from ._client import SchedulerClient as SchedulerClient
from ._client import ServiceError as ServiceError
from ._client import ServiceUnavailable as ServiceUnavailable
from ._client import TokenConflict as TokenConflict
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import SystemClock as SystemClock
from ._errors import CapacityExceeded as CapacityExceeded
from ._errors import FencingTokenMismatch as FencingTokenMismatch
from ._errors import InvalidRequest as InvalidRequest
from ._errors import JobAlreadyLeased as JobAlreadyLeased
from ._errors import LeaseExpired as LeaseExpired
from ._errors import LeaseNotActive as LeaseNotActive
from ._errors import SchedulerError as SchedulerError
from ._errors import StoreClosed as StoreClosed
from ._errors import StoreError as StoreError
from ._errors import StoreSuperseded as StoreSuperseded
from ._errors import TicketGranted as TicketGranted
from ._errors import UnknownLease as UnknownLease
from ._errors import UnknownTicket as UnknownTicket
from ._lease import Lease as Lease
from ._lease import LeaseState as LeaseState
from ._lease import Ticket as Ticket
from ._observer import PreemptionFlushObserver as PreemptionFlushObserver
from ._preemption import DuePreemption as DuePreemption
from ._preemption import NonPreemptibleReason as NonPreemptibleReason
from ._preemption import PendingPreemption as PendingPreemption
from ._preemption import PreemptionDecision as PreemptionDecision
from ._preemption import PreemptionManager as PreemptionManager
from ._preemption import PreemptionOutcome as PreemptionOutcome
from ._scheduler import Scheduler as Scheduler
from ._sqlite_store import SqliteStore as SqliteStore
from ._store import LeaseRow as LeaseRow
from ._store import SchedulerStore as SchedulerStore
from ._store import StoreTransaction as StoreTransaction
from ._store import TicketRow as TicketRow

if TYPE_CHECKING:
    from ._http import BackgroundServer as BackgroundServer
    from ._http import create_app as create_app
    from ._metrics import SchedulerMetrics as SchedulerMetrics

# The HTTP server and metrics pull in Litestar, uvicorn and prometheus-client;
# workers that only need SchedulerClient should not pay for importing them.
_LAZY = {
    "BackgroundServer": "._http",
    "create_app": "._http",
    "SchedulerMetrics": "._metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grafos_scheduler' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "AuthenticationFailed",
    "BackgroundServer",
    "CapacityExceeded",
    "Clock",
    "DuePreemption",
    "FencingTokenMismatch",
    "InvalidRequest",
    "JobAlreadyLeased",
    "Lease",
    "LeaseExpired",
    "LeaseGone",
    "LeaseNotActive",
    "LeaseRow",
    "LeaseState",
    "ManualClock",
    "NonPreemptibleReason",
    "NotFound",
    "PendingPreemption",
    "PermissionDenied",
    "PreemptionDecision",
    "PreemptionFlushObserver",
    "PreemptionManager",
    "PreemptionOutcome",
    "Principal",
    "RequestRejected",
    "RunOutcome",
    "RunResult",
    "Scheduler",
    "SchedulerClient",
    "SchedulerError",
    "SchedulerMetrics",
    "SchedulerStore",
    "ServiceError",
    "ServiceUnavailable",
    "SqliteStore",
    "StoreClosed",
    "StoreError",
    "StoreSuperseded",
    "StoreTransaction",
    "SystemClock",
    "Ticket",
    "TicketGranted",
    "TicketRow",
    "TokenConfig",
    "TokenConfigError",
    "TokenConflict",
    "UnknownLease",
    "UnknownTicket",
    "WorkerAgent",
    "create_app",
]
