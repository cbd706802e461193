"""The exceptions of grafos_pipeline: one base, and subclasses a caller can act on."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base of every error raised by grafos_pipeline.

    A failure inside a checkpoint flush surfaces as this (or a subclass), with the
    original exception as ``__cause__``.
    """


class StaleFencingToken(CheckpointError):
    """A commit or fence carried a token lower than the highest the store has seen.

    The writer has been superseded (its lease lapsed and a newer holder fenced the
    store); nothing was written.
    """

    def __init__(self, pipeline: str, token: int, highest: int) -> None:
        super().__init__(
            f"fencing token {token} for pipeline {pipeline!r} is stale: "
            f"the store has seen token {highest}"
        )
        self.pipeline = pipeline
        self.token = token
        self.highest = highest


class CorruptCheckpoint(CheckpointError):
    """Stored checkpoint bytes failed verification (header, length or SHA-256)."""


class InvalidCheckpoint(CheckpointError, ValueError):
    """A checkpoint's content is unusable: non-bytes stage state, unknown stage, bad field."""


class InvalidPipeline(CheckpointError, ValueError):
    """A pipeline was configured with bad input: duplicate stage names, bad name or token."""


class InvalidLeaseId(CheckpointError, ValueError):
    """A lease id that is not an unsigned 128-bit integer (an ``int``, not a ``bool``)."""

    def __init__(self, value: object) -> None:
        super().__init__(f"lease id {value!r} is not an unsigned 128-bit integer")
        self.value = value


class InvalidRecord(CheckpointError, ValueError):
    """A record that a sink cannot encode; nothing of the flush was committed."""


class InvalidSink(CheckpointError, ValueError):
    """A sink was configured with bad input: a bad table name, a non-callable encoder."""


class CorruptOutput(CheckpointError):
    """Stored output failed verification (header, length or SHA-256), or is inconsistent
    with the checkpoints that cover it."""


class OutputNotPublished(CheckpointError):
    """The checkpoint committed, but publishing its output failed.

    The output is pre-committed, so it is not lost: the next ``checkpoint()`` or a
    ``resume()`` publishes it. ``checkpoint`` is the checkpoint that committed.
    """

    def __init__(self, message: str, checkpoint: object) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
