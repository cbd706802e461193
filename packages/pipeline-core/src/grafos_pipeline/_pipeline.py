"""Pipelines of stages, and the checkpoint flush."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from ._checkpoint import Checkpoint
from ._errors import (
    CheckpointError,
    InvalidCheckpoint,
    InvalidPipeline,
    OutputNotPublished,
    StaleFencingToken,
)
from ._observer import CheckpointFlushObserver, log_observer_failure, validate_lease_id
from ._sink import Sink
from ._store import CheckpointStore


@runtime_checkable
class Stage(Protocol):
    """One step of a pipeline: it transforms records and can save and restore its state.

    ``process`` may emit zero, one or many records per input. ``snapshot`` returns the
    whole state as bytes; ``restore`` replaces the state with one that ``snapshot``
    returned. A stage's ``name`` is unique within its pipeline and keys its state in
    a checkpoint.
    """

    name: str

    def process(self, record: Any) -> Iterable[Any]:
        """Consume one record; return the records it emits."""

    def snapshot(self) -> bytes:
        """The stage's whole state, as bytes."""

    def restore(self, state: bytes) -> None:
        """Replace the stage's state with ``state`` from an earlier ``snapshot``."""


def _check_fencing_token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidPipeline(f"fencing token {token!r} is not a non-negative integer")
    return token


class Pipeline:
    """An ordered list of stages over an input stream, with durable checkpoints.

    ``process`` feeds records through the stages and advances ``position``.
    ``checkpoint`` captures every stage's state and the position and commits them
    to ``store`` under the pipeline's fencing token. ``resume`` fences the store with
    that token first, then restores the newest valid checkpoint, so once a new holder
    has resumed, an older one can never commit again.

    With a ``sink``, the last stage's output goes to the sink instead of being returned
    by ``process``: each checkpoint pre-commits the output since the last one under the
    next sequence and the fencing token, commits the checkpoint, then publishes the
    output (see ``Sink``); ``resume`` has the sink publish what the restored checkpoint
    covers and discard what lies beyond it. So every input record's output is
    committed exactly once across crashes, and a zombie's output is refused like its
    checkpoint. Stage state stays free of output: a checkpoint does not grow with it.

    When both an ``observer`` and a ``lease_id`` are wired, each checkpoint flush is
    bracketed by ``observer.on_flush_start`` and ``observer.on_flush_complete`` (see
    ``CheckpointFlushObserver`` for the contract). ``observer``, ``lease_id`` and
    ``fencing_token`` can be re-wired at any time, from any thread.

    ``process``, ``checkpoint`` and ``resume`` on one pipeline are serialised, so a
    checkpoint always sees stage states and a position that agree.
    """

    def __init__(
        self,
        name: str,
        stages: Sequence[Stage],
        store: CheckpointStore,
        *,
        sink: Sink | None = None,
        observer: CheckpointFlushObserver | None = None,
        lease_id: int | None = None,
        fencing_token: int = 0,
    ) -> None:
        given: object = name
        if not isinstance(given, str) or not given:
            raise InvalidPipeline(f"pipeline name {given!r} is not a non-empty string")
        stages = tuple(stages)
        seen: set[str] = set()
        for stage in stages:
            stage_name = getattr(stage, "name", None)
            if not isinstance(stage_name, str) or not stage_name:
                raise InvalidPipeline(f"stage {stage!r} has no non-empty string name")
            if stage_name in seen:
                raise InvalidPipeline(
                    f"duplicate stage name {stage_name!r} in pipeline {name!r}: "
                    "a stage's name keys its state in a checkpoint"
                )
            seen.add(stage_name)
        self.name = name
        self.stages: tuple[Stage, ...] = stages
        self.store = store
        if sink is not None and not isinstance(sink, Sink):
            raise InvalidPipeline(
                f"sink {sink!r} does not implement Sink (pre_commit, publish and recover)"
            )
        self.sink = sink
        # Output since the last committed checkpoint, and the committed sequences whose
        # output is pre-committed but not yet published (in order).
        self._output: list[Any] = []
        self._unpublished: list[int] = []
        # A checkpoint whose commit raised, so it may or may not have committed, and how
        # many buffered records its pre-commit staged: settled by the next flush.
        self._in_doubt: tuple[Checkpoint, int] | None = None
        self._fencing_token = _check_fencing_token(fencing_token)
        # Observer and lease id live in one tuple, replaced whole, so that a flush
        # reads a consistent pair with a single attribute load.
        self._wiring: tuple[CheckpointFlushObserver | None, int | None] = (
            self._check_observer(observer),
            None if lease_id is None else validate_lease_id(lease_id),
        )
        self._wiring_lock = threading.Lock()
        self._lock = threading.Lock()
        self._position = 0
        self._sequence = 0

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stages={[s.name for s in self.stages]})"

    # -- wiring -------------------------------------------------------------------

    @property
    def observer(self) -> CheckpointFlushObserver | None:
        return self._wiring[0]

    @observer.setter
    def observer(self, observer: CheckpointFlushObserver | None) -> None:
        self._check_observer(observer)
        with self._wiring_lock:
            self._wiring = (observer, self._wiring[1])

    @property
    def lease_id(self) -> int | None:
        return self._wiring[1]

    @lease_id.setter
    def lease_id(self, lease_id: int | None) -> None:
        if lease_id is not None:
            validate_lease_id(lease_id)
        with self._wiring_lock:
            self._wiring = (self._wiring[0], lease_id)

    @property
    def fencing_token(self) -> int:
        return self._fencing_token

    @fencing_token.setter
    def fencing_token(self, token: int) -> None:
        self._fencing_token = _check_fencing_token(token)

    @staticmethod
    def _check_observer(observer: object) -> CheckpointFlushObserver | None:
        if observer is not None and not isinstance(observer, CheckpointFlushObserver):
            raise InvalidPipeline(
                f"observer {observer!r} does not implement CheckpointFlushObserver "
                "(on_flush_start and on_flush_complete)"
            )
        return observer

    # -- state --------------------------------------------------------------------

    @property
    def position(self) -> int:
        """How many input records have been consumed (restored by ``resume``)."""
        return self._position

    @property
    def sequence(self) -> int:
        """The sequence of the last checkpoint committed or resumed; 0 if none."""
        return self._sequence

    def process(self, records: Iterable[Any]) -> list[Any]:
        """Feed ``records`` through the stages in order; return what the last one emits.

        With a sink, the output is kept for the next checkpoint's flush instead, and
        the list returned is empty.
        """
        with self._lock:
            out: list[Any] = [] if self.sink is None else self._output
            for record in records:
                batch: list[Any] = [record]
                for stage in self.stages:
                    batch = [emitted for item in batch for emitted in stage.process(item)]
                out.extend(batch)
                self._position += 1
        return out if self.sink is None else []

    # -- checkpoints --------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Capture every stage's state and the position, and commit them.

        Raises ``CheckpointError`` (or a subclass such as ``StaleFencingToken``) when
        the flush fails, with the original exception as ``__cause__``; nothing is
        committed then. A ``KeyboardInterrupt`` propagates unchanged.
        """
        observer, lease_id = self._wiring
        if observer is None or lease_id is None:
            return self._flush(lease_id)
        # The one guard that pairs the notifications: start inside the try, so even an
        # interrupt raised in on_flush_start is followed by its on_flush_complete.
        try:
            try:
                observer.on_flush_start(lease_id)
            except Exception:
                log_observer_failure(lease_id, "on_flush_start")
            return self._flush(lease_id)
        finally:
            try:
                observer.on_flush_complete(lease_id)
            except Exception:
                log_observer_failure(lease_id, "on_flush_complete")

    def _flush(self, lease_id: int | None) -> Checkpoint:
        with self._lock:
            if self._in_doubt is not None:
                self._settle_doubt()
            states: dict[str, bytes] = {}
            for stage in self.stages:
                try:
                    state = stage.snapshot()
                except Exception as exc:
                    raise CheckpointError(
                        f"stage {stage.name!r} of pipeline {self.name!r} failed to snapshot: "
                        f"{exc!r}"
                    ) from exc
                if not isinstance(state, bytes):
                    raise InvalidCheckpoint(
                        f"stage {stage.name!r} of pipeline {self.name!r} returned "
                        f"{type(state).__name__} from snapshot(), not bytes"
                    )
                states[stage.name] = state
            checkpoint = Checkpoint(
                pipeline=self.name,
                sequence=self._sequence + 1,
                fencing_token=self._fencing_token,
                lease_id=lease_id,
                position=self._position,
                stage_states=states,
                created_at=time.time(),
            )
            sink = self.sink
            staged = 0
            if sink is not None and self._output:
                # Phase one: the output, durable but invisible, under the next sequence.
                staged = len(self._output)
                try:
                    sink.pre_commit(
                        self.name, checkpoint.sequence, self._fencing_token, tuple(self._output)
                    )
                except CheckpointError:
                    raise
                except Exception as exc:
                    raise CheckpointError(
                        f"pre-committing the output of checkpoint {checkpoint.sequence} of "
                        f"pipeline {self.name!r} to {sink!r} failed: {exc!r}"
                    ) from exc
            try:
                self.store.commit(checkpoint)
            except BaseException as exc:
                # A refusal wrote nothing; any other failure may have struck after the
                # write. Then re-staging more output under this sequence could let a
                # recovery publish records the checkpoint does not cover: the next flush
                # asks the store first.
                if sink is not None and not isinstance(exc, StaleFencingToken | InvalidCheckpoint):
                    self._in_doubt = (checkpoint, staged)
                if isinstance(exc, CheckpointError) or not isinstance(exc, Exception):
                    raise
                raise CheckpointError(
                    f"committing checkpoint {checkpoint.sequence} of pipeline {self.name!r} "
                    f"to {self.store!r} failed: {exc!r}"
                ) from exc
            self._sequence = checkpoint.sequence
            if sink is not None:
                if self._output:
                    self._unpublished.append(checkpoint.sequence)
                    self._output = []
                # Phase two: the checkpoint covers the output, so it may be seen.
                self._publish(sink, checkpoint)
            return checkpoint

    def _settle_doubt(self) -> None:
        assert self._in_doubt is not None
        doubtful, staged = self._in_doubt
        try:
            latest = self.store.latest(self.name)
        except Exception as exc:
            raise CheckpointError(
                f"checking whether checkpoint {doubtful.sequence} of pipeline {self.name!r} "
                f"committed in {self.store!r} failed: {exc!r}"
            ) from exc
        if latest == doubtful:
            # It did commit: its sequence is taken and its staged output is covered.
            self._sequence = doubtful.sequence
            if staged:
                self._unpublished.append(doubtful.sequence)
                del self._output[:staged]
        self._in_doubt = None

    def _publish(self, sink: Sink, checkpoint: Checkpoint) -> None:
        # In sequence order, earlier ones first (left over by a failed publication),
        # so readers never see a gap.
        while self._unpublished:
            sequence = self._unpublished[0]
            try:
                sink.publish(self.name, sequence)
            except Exception as exc:
                raise OutputNotPublished(
                    f"checkpoint {checkpoint.sequence} of pipeline {self.name!r} committed, "
                    f"but publishing the output of sequence {sequence} to {sink!r} failed: "
                    f"{exc!r}; it is pre-committed, and the next checkpoint() or resume() "
                    "publishes it",
                    checkpoint,
                ) from exc
            del self._unpublished[0]

    def resume(self) -> Checkpoint | None:
        """Fence the store with this pipeline's token, then restore the newest checkpoint.

        With a sink, the sink is fenced with the token too; it publishes the output
        that the restored checkpoint covers and discards what lies beyond it.

        Returns the checkpoint restored, or None on a fresh start (nothing stored).
        Raises ``StaleFencingToken`` if a newer holder has already fenced the store,
        and ``InvalidCheckpoint`` if the checkpoint's stages do not match this
        pipeline's.
        """
        with self._lock:
            try:
                self.store.fence(self.name, self._fencing_token)
                checkpoint = self.store.latest(self.name)
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(
                    f"recovering pipeline {self.name!r} from {self.store!r} failed: {exc!r}"
                ) from exc
            if checkpoint is not None:
                self._check_stages(checkpoint)
            sink = self.sink
            if sink is not None:
                # After the store's fence: whatever a zombie pre-commits from here on is
                # refused, and what it pre-committed before lies beyond the checkpoint.
                covered = 0 if checkpoint is None else checkpoint.sequence
                try:
                    sink.recover(self.name, covered, self._fencing_token)
                except CheckpointError:
                    raise
                except Exception as exc:
                    raise CheckpointError(
                        f"recovering the output of pipeline {self.name!r} from {sink!r} "
                        f"failed: {exc!r}"
                    ) from exc
                self._unpublished = []
            self._in_doubt = None
            if checkpoint is None:
                return None
            # Output buffered past the checkpoint is replayed from its input.
            self._output = []
            for stage in self.stages:
                try:
                    stage.restore(checkpoint.stage_states[stage.name])
                except Exception as exc:
                    raise CheckpointError(
                        f"stage {stage.name!r} of pipeline {self.name!r} failed to restore "
                        f"checkpoint {checkpoint.sequence}: {exc!r}"
                    ) from exc
            self._position = checkpoint.position
            self._sequence = checkpoint.sequence
            return checkpoint

    def _check_stages(self, checkpoint: Checkpoint) -> None:
        ours = {stage.name for stage in self.stages}
        theirs = set(checkpoint.stage_states)
        if theirs != ours:
            raise InvalidCheckpoint(
                f"checkpoint {checkpoint.sequence} of pipeline {self.name!r} does not "
                f"match its stages: it names {sorted(theirs - ours)} that the pipeline "
                f"does not have, and lacks {sorted(ours - theirs)}"
            )
