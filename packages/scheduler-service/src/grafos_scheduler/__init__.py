"""grafos_scheduler: leases with fencing tokens, bounded preemption, a hash-chained audit log.

Import everything from here; the ``_modules`` are private. Every public name presents
itself as ``grafos_scheduler``'s own (``grafos_scheduler.Lease`` in reprs, tracebacks
and docs), as httpx's do.
"""

import importlib
import inspect
import typing
from typing import TYPE_CHECKING, Any

from ._domain._audit import AuditKind as AuditKind
from ._domain._audit import AuditLog as AuditLog
from ._domain._audit import AuditRecord as AuditRecord
from ._domain._audit import AuditVerification as AuditVerification
from ._domain._change import Change as Change
from ._domain._clock import Clock as Clock
from ._domain._clock import ManualClock as ManualClock
from ._domain._clock import SystemClock as SystemClock
from ._domain._errors import CapacityExceeded as CapacityExceeded
from ._domain._errors import FencingTokenMismatch as FencingTokenMismatch
from ._domain._errors import InvalidRequest as InvalidRequest
from ._domain._errors import JobAlreadyLeased as JobAlreadyLeased
from ._domain._errors import LeaseExpired as LeaseExpired
from ._domain._errors import LeaseNotActive as LeaseNotActive
from ._domain._errors import NoHold as NoHold
from ._domain._errors import NotLeaseHolder as NotLeaseHolder
from ._domain._errors import SchedulerError as SchedulerError
from ._domain._errors import StoreClosed as StoreClosed
from ._domain._errors import StoreConflict as StoreConflict
from ._domain._errors import StoreError as StoreError
from ._domain._errors import StoreFailed as StoreFailed
from ._domain._errors import StoreSuperseded as StoreSuperseded
from ._domain._errors import TicketGranted as TicketGranted
from ._domain._errors import UnknownLease as UnknownLease
from ._domain._errors import UnknownTicket as UnknownTicket
from ._domain._lease import Hold as Hold
from ._domain._lease import Lease as Lease
from ._domain._lease import LeaseState as LeaseState
from ._domain._lease import Ticket as Ticket
from ._domain._lease_events import EventBatch as EventBatch
from ._domain._lease_events import LeaseEvent as LeaseEvent
from ._domain._lease_events import LeaseEventKind as LeaseEventKind
from ._domain._lease_events import LeaseEventLog as LeaseEventLog
from ._domain._observer import PreemptionFlushObserver as PreemptionFlushObserver
from ._domain._preemption import DuePreemption as DuePreemption
from ._domain._preemption import NonPreemptibleReason as NonPreemptibleReason
from ._domain._preemption import PendingPreemption as PendingPreemption
from ._domain._preemption import PreemptionDecision as PreemptionDecision
from ._domain._preemption import PreemptionManager as PreemptionManager
from ._domain._preemption import PreemptionOutcome as PreemptionOutcome
from ._domain._renewal import Renewal as Renewal
from ._domain._renewal import Renewed as Renewed
from ._domain._ticket_wait import TicketWait as TicketWait
from ._domain._ticket_wait import VictimLease as VictimLease
from ._domain._ticket_wait import WaitReason as WaitReason
from ._domain._work_lost import WorkLost as WorkLost
from ._remote._agent import RunOutcome as RunOutcome
from ._remote._agent import RunResult as RunResult
from ._remote._agent import StopRequested as StopRequested
from ._remote._agent import WorkerAgent as WorkerAgent
from ._remote._client import AuthenticationFailed as AuthenticationFailed
from ._remote._client import LeaseGone as LeaseGone
from ._remote._client import NotFound as NotFound
from ._remote._client import PermissionDenied as PermissionDenied
from ._remote._client import RequestRejected as RequestRejected
from ._remote._client import SchedulerClient as SchedulerClient
from ._remote._client import ServiceError as ServiceError
from ._remote._client import ServiceUnavailable as ServiceUnavailable
from ._remote._client import TokenConflict as TokenConflict
from ._remote._notices import Ec2SpotNotices as Ec2SpotNotices
from ._remote._notices import GcePreemptionNotice as GcePreemptionNotice
from ._remote._notices import NoticeKind as NoticeKind
from ._remote._notices import NoticeSource as NoticeSource
from ._remote._notices import PlatformNotice as PlatformNotice
from ._remote._notices import SignalNotices as SignalNotices
from ._remote._watch import LeaseWatch as LeaseWatch
from ._service._auth import Principal as Principal
from ._service._auth import TokenConfig as TokenConfig
from ._service._auth import TokenConfigError as TokenConfigError
from ._store._protocol import LeaseRow as LeaseRow
from ._store._protocol import SchedulerStore as SchedulerStore
from ._store._protocol import StoreTransaction as StoreTransaction
from ._store._protocol import TicketRow as TicketRow
from ._store._protocol import write_change as write_change

if TYPE_CHECKING:
    from ._scheduler._replica import Replica as Replica
    from ._scheduler._replica import ReplicaRole as ReplicaRole
    from ._scheduler._replica import ReplicaStatus as ReplicaStatus
    from ._scheduler._scheduler import Scheduler as Scheduler
    from ._service._app import create_app as create_app
    from ._service._metrics import SchedulerMetrics as SchedulerMetrics
    from ._service._server import BackgroundServer as BackgroundServer
    from ._store._postgres import LeadershipLost as LeadershipLost
    from ._store._postgres import PostgresStore as PostgresStore
    from ._store._sqlite import SqliteStore as SqliteStore

# The heavy half, loaded on first use: the scheduler and the SQLite store (sqlite3), the
# HTTP server (Litestar, uvicorn, anyio) and its metrics (prometheus-client). A worker
# process that only needs SchedulerClient and WorkerAgent loads none of them.
_LAZY = {
    "BackgroundServer": "._service._server",
    "Scheduler": "._scheduler._scheduler",
    "SchedulerMetrics": "._service._metrics",
    "SqliteStore": "._store._sqlite",
    "create_app": "._service._app",
    # PostgreSQL needs psycopg (the `postgres` extra); SQLite users never import it.
    "PostgresStore": "._store._postgres",
    "LeadershipLost": "._store._postgres",
    "Replica": "._scheduler._replica",
    "ReplicaRole": "._scheduler._replica",
    "ReplicaStatus": "._scheduler._replica",
}


def _present_as_ours(obj: Any) -> None:
    if isinstance(obj, type):
        # typing.get_type_hints reads a class's string annotations in the namespace of
        # sys.modules[cls.__module__]: resolve them in the defining module first.
        own = inspect.get_annotations(obj)
        if own and any(isinstance(v, str) for v in own.values()):
            hints = typing.get_type_hints(obj, include_extras=True)
            obj.__annotations__ = {name: hints[name] for name in own}
    obj.__module__ = __name__


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    _present_as_ours(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "AuthenticationFailed",
    "BackgroundServer",
    "CapacityExceeded",
    "Change",
    "Clock",
    "DuePreemption",
    "Ec2SpotNotices",
    "EventBatch",
    "FencingTokenMismatch",
    "GcePreemptionNotice",
    "Hold",
    "InvalidRequest",
    "JobAlreadyLeased",
    "LeadershipLost",
    "Lease",
    "LeaseEvent",
    "LeaseEventKind",
    "LeaseEventLog",
    "LeaseExpired",
    "LeaseGone",
    "LeaseNotActive",
    "LeaseRow",
    "LeaseState",
    "LeaseWatch",
    "ManualClock",
    "NoHold",
    "NonPreemptibleReason",
    "NotFound",
    "NotLeaseHolder",
    "NoticeKind",
    "NoticeSource",
    "PendingPreemption",
    "PermissionDenied",
    "PlatformNotice",
    "PostgresStore",
    "PreemptionDecision",
    "PreemptionFlushObserver",
    "PreemptionManager",
    "PreemptionOutcome",
    "Principal",
    "Renewal",
    "Renewed",
    "Replica",
    "ReplicaRole",
    "ReplicaStatus",
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
    "SignalNotices",
    "SqliteStore",
    "StopRequested",
    "StoreClosed",
    "StoreConflict",
    "StoreError",
    "StoreFailed",
    "StoreSuperseded",
    "StoreTransaction",
    "SystemClock",
    "Ticket",
    "TicketGranted",
    "TicketRow",
    "TicketWait",
    "TokenConfig",
    "TokenConfigError",
    "TokenConflict",
    "UnknownLease",
    "UnknownTicket",
    "VictimLease",
    "WaitReason",
    "WorkLost",
    "WorkerAgent",
    "create_app",
    "write_change",
]

for _name in __all__:
    if _name not in _LAZY:
        _present_as_ours(globals()[_name])
del _name
