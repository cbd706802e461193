"""Pipeline behaviour: processing, positions, resume, and bad configuration."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from grafos_pipeline import (
    Checkpoint,
    InvalidCheckpoint,
    InvalidPipeline,
    MemoryCheckpointStore,
    Pipeline,
    Stage,
    StaleFencingToken,
)


class Splitter:
    """Emits one record per word: zero, one or many outputs per input."""

    name = "split"

    def process(self, record: Any) -> Iterable[Any]:
        return str(record).split()

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        assert state == b""


class WordCount:
    name = "count"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def process(self, record: Any) -> Iterable[Any]:
        self.counts[record] = self.counts.get(record, 0) + 1
        return [(record, self.counts[record])]

    def snapshot(self) -> bytes:
        return json.dumps(self.counts, sort_keys=True).encode()

    def restore(self, state: bytes) -> None:
        self.counts = json.loads(state)


LINES = ["a b", "", "b c c", "a", "c"]


def test_stages_satisfy_the_protocol() -> None:
    assert isinstance(Splitter(), Stage)
    assert isinstance(WordCount(), Stage)


def test_process_runs_stages_in_order_and_counts_input_records() -> None:
    pipeline = Pipeline("words", [Splitter(), WordCount()], MemoryCheckpointStore())
    out = pipeline.process(LINES[:3])
    assert out == [("a", 1), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    assert pipeline.position == 3, "position counts input records, including the empty line"


def test_resume_restores_states_and_position_and_continues_the_sequence() -> None:
    store = MemoryCheckpointStore()
    first = Pipeline("words", [Splitter(), WordCount()], store, fencing_token=1)
    assert first.resume() is None, "a fresh start has nothing to restore"
    first.process(LINES[:3])
    first.checkpoint()
    first.process(LINES[3:4])
    saved = first.checkpoint()
    assert (saved.sequence, saved.position) == (2, 4)

    counter = WordCount()
    second = Pipeline("words", [Splitter(), counter], store, fencing_token=2)
    restored = second.resume()
    assert restored == saved
    assert second.position == 4
    assert second.sequence == 2
    assert counter.counts == {"a": 2, "b": 2, "c": 2}
    assert second.process(LINES[4:]) == [("c", 3)]
    assert second.checkpoint().sequence == 3
    # The first holder has been fenced by the resume.
    with pytest.raises(StaleFencingToken, match="fencing token 1"):
        first.checkpoint()


def test_resume_with_a_stale_token_is_refused() -> None:
    store = MemoryCheckpointStore()
    store.fence("words", 5)
    pipeline = Pipeline("words", [WordCount()], store, fencing_token=4)
    with pytest.raises(StaleFencingToken) as caught:
        pipeline.resume()
    assert (caught.value.token, caught.value.highest) == (4, 5)


def test_resume_refuses_a_checkpoint_naming_an_unknown_stage() -> None:
    store = MemoryCheckpointStore()
    store.commit(
        Checkpoint("words", 1, 0, None, 3, {"count": b"{}", "ghost": b"x"}, created_at=0.0)
    )
    pipeline = Pipeline("words", [WordCount()], store)
    with pytest.raises(InvalidCheckpoint, match="ghost"):
        pipeline.resume()
    assert pipeline.position == 0, "nothing was restored"


def test_checkpoint_states_are_a_private_read_only_copy() -> None:
    states = {"count": b"{}"}
    checkpoint = Checkpoint("words", 1, 0, None, 0, states, created_at=0.0)
    states["count"] = b"changed"
    assert checkpoint.stage_states["count"] == b"{}"
    with pytest.raises(TypeError):
        checkpoint.stage_states["count"] = b"x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "pipeline name ''"),
        ({"name": 7}, "pipeline name 7"),
        ({"stages": [WordCount(), WordCount()]}, "duplicate stage name 'count'"),
        ({"fencing_token": -1}, "fencing token -1"),
        ({"fencing_token": True}, "fencing token True"),
        ({"observer": object()}, "does not implement CheckpointFlushObserver"),
    ],
)
def test_bad_configuration_is_refused_with_the_value_named(
    kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {
        "name": "words",
        "stages": [WordCount()],
        "store": MemoryCheckpointStore(),
    }
    args.update(kwargs)
    with pytest.raises(InvalidPipeline, match=match):
        Pipeline(**args)


@pytest.mark.parametrize(
    ("field", "value"),
    [("sequence", -1), ("position", "3"), ("fencing_token", 1.5), ("created_at", float("nan"))],
)
def test_checkpoint_fields_are_validated(field: str, value: object) -> None:
    fields: dict[str, Any] = {
        "pipeline": "words",
        "sequence": 1,
        "fencing_token": 0,
        "lease_id": None,
        "position": 0,
        "stage_states": {},
        "created_at": 0.0,
    }
    fields[field] = value
    with pytest.raises(InvalidCheckpoint, match=field):
        Checkpoint(**fields)


def test_a_commit_that_does_not_advance_the_sequence_is_refused() -> None:
    store = MemoryCheckpointStore()
    store.commit(Checkpoint("words", 3, 0, None, 0, {}, created_at=0.0))
    with pytest.raises(InvalidCheckpoint, match=r"sequence 3 .* newest stored sequence 3"):
        store.commit(Checkpoint("words", 3, 0, None, 0, {}, created_at=0.0))
    assert store.latest("words") is not None
    assert [c.sequence for c in store.history("words")] == [3]
