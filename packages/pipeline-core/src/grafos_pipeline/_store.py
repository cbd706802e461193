"""The checkpoint store protocol and its in-memory implementation."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from ._checkpoint import Checkpoint
from ._errors import InvalidCheckpoint, StaleFencingToken


@runtime_checkable
class CheckpointStore(Protocol):
    """Where a pipeline's checkpoints are committed, fenced and read back.

    A store keeps, per pipeline, the highest fencing token it has seen, from a
    commit or from ``fence``. It must refuse (``StaleFencingToken``, writing nothing)
    a commit or fence whose token is lower, and the check and the write must be one
    atomic step. ``latest`` returns the newest checkpoint that verifies.
    """

    def commit(self, checkpoint: Checkpoint) -> None:
        """Durably store ``checkpoint``, or raise and store nothing."""

    def latest(self, pipeline: str) -> Checkpoint | None:
        """The newest valid checkpoint of ``pipeline``, or None if there is none."""

    def fence(self, pipeline: str, token: int) -> None:
        """Raise the pipeline's highest seen token to ``token``: older writers are refused."""


def sequence_not_after(checkpoint: Checkpoint, newest: int) -> InvalidCheckpoint:
    return InvalidCheckpoint(
        f"checkpoint sequence {checkpoint.sequence} of pipeline {checkpoint.pipeline!r} is "
        f"not after the newest stored sequence {newest}: resume() before checkpointing"
    )


def check_token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidCheckpoint(f"fencing token {token!r} is not a non-negative integer")
    return token


class MemoryCheckpointStore:
    """A ``CheckpointStore`` in process memory: for tests and pipelines that need no durability.

    It keeps every committed checkpoint; fencing and ordering behave exactly as in
    ``DirectoryCheckpointStore``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checkpoints: dict[str, list[Checkpoint]] = {}
        self._highest: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def commit(self, checkpoint: Checkpoint) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidCheckpoint(f"{checkpoint!r} is not a Checkpoint")
        pipeline = checkpoint.pipeline
        with self._lock:
            highest = self._highest.get(pipeline, 0)
            if checkpoint.fencing_token < highest:
                raise StaleFencingToken(pipeline, checkpoint.fencing_token, highest)
            history = self._checkpoints.setdefault(pipeline, [])
            if history and checkpoint.sequence <= history[-1].sequence:
                raise sequence_not_after(checkpoint, history[-1].sequence)
            self._highest[pipeline] = checkpoint.fencing_token
            history.append(checkpoint)

    def latest(self, pipeline: str) -> Checkpoint | None:
        with self._lock:
            history = self._checkpoints.get(pipeline)
            return history[-1] if history else None

    def fence(self, pipeline: str, token: int) -> None:
        check_token(token)
        with self._lock:
            highest = self._highest.get(pipeline, 0)
            if token < highest:
                raise StaleFencingToken(pipeline, token, highest)
            self._highest[pipeline] = token

    def history(self, pipeline: str) -> list[Checkpoint]:
        """Every checkpoint committed for ``pipeline``, oldest first."""
        with self._lock:
            return list(self._checkpoints.get(pipeline, ()))
