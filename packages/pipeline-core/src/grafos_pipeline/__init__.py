"""grafos_pipeline: pipelines of stages with a durable, verified, fenced checkpoint flush.

The dependency-free core of grafos. It defines ``CheckpointFlushObserver``, which a
scheduler implements to keep a lease non-preemptible while its checkpoint flushes, and
``Sink``, through which a pipeline's output is committed exactly once (``DirectorySink``,
``SqliteSink``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint as Checkpoint
from ._directory_sink import DirectorySink as DirectorySink
from ._directory_store import DirectoryCheckpointStore as DirectoryCheckpointStore
from ._errors import CheckpointError as CheckpointError
from ._errors import CorruptCheckpoint as CorruptCheckpoint
from ._errors import CorruptOutput as CorruptOutput
from ._errors import InvalidCheckpoint as InvalidCheckpoint
from ._errors import InvalidLeaseId as InvalidLeaseId
from ._errors import InvalidPipeline as InvalidPipeline
from ._errors import InvalidRecord as InvalidRecord
from ._errors import InvalidSink as InvalidSink
from ._errors import OutputNotPublished as OutputNotPublished
from ._errors import StaleFencingToken as StaleFencingToken
from ._observer import CheckpointFlushObserver as CheckpointFlushObserver
from ._observer import validate_lease_id as validate_lease_id
from ._pipeline import Pipeline as Pipeline
from ._pipeline import Stage as Stage
from ._sink import Sink as Sink
from ._store import CheckpointStore as CheckpointStore
from ._store import MemoryCheckpointStore as MemoryCheckpointStore

if TYPE_CHECKING:
    from ._sqlite_sink import SqliteSink as SqliteSink

# SqliteSink loads sqlite3 on first use: a worker that imports the core for its
# Pipeline should not pay for it (the scheduler's remote side is held to that).
_LAZY = {"SqliteSink": "._sqlite_sink"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointFlushObserver",
    "CheckpointStore",
    "CorruptCheckpoint",
    "CorruptOutput",
    "DirectoryCheckpointStore",
    "DirectorySink",
    "InvalidCheckpoint",
    "InvalidLeaseId",
    "InvalidPipeline",
    "InvalidRecord",
    "InvalidSink",
    "MemoryCheckpointStore",
    "OutputNotPublished",
    "Pipeline",
    "Sink",
    "SqliteSink",
    "Stage",
    "StaleFencingToken",
    "validate_lease_id",
]

__version__ = "0.1.0"
