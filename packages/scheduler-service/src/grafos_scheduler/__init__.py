"""grafos_scheduler: leases with fencing tokens, bounded preemption, a hash-chained audit log.

Import everything from here; the ``_modules`` are private.
"""

from ._audit import AuditKind as AuditKind
from ._audit import AuditLog as AuditLog
from ._audit import AuditRecord as AuditRecord
from ._audit import AuditVerification as AuditVerification
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
from ._sqlite_store import StoreClosed as StoreClosed
from ._store import LeaseRow as LeaseRow
from ._store import SchedulerStore as SchedulerStore
from ._store import StoreTransaction as StoreTransaction
from ._store import TicketRow as TicketRow

__all__ = [
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "AuditVerification",
    "CapacityExceeded",
    "Clock",
    "DuePreemption",
    "FencingTokenMismatch",
    "InvalidRequest",
    "JobAlreadyLeased",
    "Lease",
    "LeaseExpired",
    "LeaseNotActive",
    "LeaseRow",
    "LeaseState",
    "ManualClock",
    "NonPreemptibleReason",
    "PendingPreemption",
    "PreemptionDecision",
    "PreemptionFlushObserver",
    "PreemptionManager",
    "PreemptionOutcome",
    "Scheduler",
    "SchedulerError",
    "SchedulerStore",
    "SqliteStore",
    "StoreClosed",
    "StoreTransaction",
    "SystemClock",
    "Ticket",
    "TicketRow",
    "UnknownLease",
    "UnknownTicket",
]
