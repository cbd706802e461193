"""The ``Sink`` protocol: where a pipeline's output goes, exactly once, fenced."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    """Receives a pipeline's output in a two-phase flush, so each record is committed once.

    A ``Pipeline`` wired with a sink keeps the last stage's output in memory and, in
    each ``checkpoint()``, between ``on_flush_start`` and ``on_flush_complete``:

    1. ``pre_commit`` makes the output since the last checkpoint durable under the next
       checkpoint's sequence and the pipeline's fencing token, invisible to readers;
    2. the checkpoint commits to the store;
    3. ``publish`` makes it visible to readers.

    ``Pipeline.resume()`` calls ``recover`` with the restored checkpoint's sequence.

    Obligations of an implementation:

    - ``pre_commit`` is atomic: after a crash at any instant the sequence's output is
      wholly pre-committed or not at all. A second ``pre_commit`` of a sequence that is
      not published replaces the first. Its token check and its write are one atomic
      step: a token lower than the highest the sink has seen for the pipeline raises
      ``StaleFencingToken`` and writes nothing; a higher one raises the highest seen.
    - ``publish`` is idempotent and never loses output. It is not fenced: it only ever
      publishes a sequence whose checkpoint the store has committed, and fencing has
      already judged that commit.
    - ``recover`` fences with ``token`` (as above), publishes, in sequence order, every
      pre-committed sequence up to ``sequence`` (the checkpoint covers them), and
      discards every one beyond it (no checkpoint covers them: their input is replayed).
      It must refuse, rather than duplicate, output published beyond ``sequence``.
    - Readers see published output only, in sequence order.
    """

    def pre_commit(self, pipeline: str, sequence: int, token: int, records: Sequence[Any]) -> None:
        """Durably stage ``records`` as ``sequence``'s output, fenced by ``token``."""

    def publish(self, pipeline: str, sequence: int) -> None:
        """Make ``sequence``'s pre-committed output visible; a no-op if it already is."""

    def recover(self, pipeline: str, sequence: int, token: int) -> None:
        """Fence with ``token``; publish what ``sequence`` covers; discard what lies beyond."""
