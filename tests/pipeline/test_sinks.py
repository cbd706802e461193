"""Sinks: the two-phase flush, recovery, fencing, encoding and verification, for both sinks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from grafos_pipeline import (
    Checkpoint,
    CheckpointError,
    CorruptOutput,
    DirectoryCheckpointStore,
    DirectorySink,
    InvalidPipeline,
    InvalidRecord,
    InvalidSink,
    MemoryCheckpointStore,
    OutputNotPublished,
    Pipeline,
    Sink,
    SqliteSink,
    StaleFencingToken,
)

AnySink = DirectorySink | SqliteSink
MakeSink = Callable[..., AnySink]


class Numbering:
    """Emits ``[record, how many records so far]``: output depends on restored state."""

    name = "numbering"

    def __init__(self) -> None:
        self.count = 0

    def process(self, record: Any) -> Iterable[Any]:
        self.count += 1
        return [[record, self.count]]

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, state: bytes) -> None:
        self.count = int(state)


def expected(stop: int, start: int = 0) -> list[Any]:
    return [[i, i + 1] for i in range(start, stop)]


class FaultySink:
    """A real sink, with a fault that can be armed before or after one of its phases."""

    def __init__(self, inner: AnySink) -> None:
        self.inner = inner
        self.fail: dict[str, BaseException] = {}
        self.calls: list[str] = []

    def _maybe(self, when: str) -> None:
        fault = self.fail.pop(when, None)
        if fault is not None:
            raise fault

    def pre_commit(self, pipeline: str, sequence: int, token: int, records: Sequence[Any]) -> None:
        self.calls.append("pre_commit")
        self._maybe("before pre_commit")
        self.inner.pre_commit(pipeline, sequence, token, records)
        self._maybe("after pre_commit")

    def publish(self, pipeline: str, sequence: int) -> None:
        self.calls.append("publish")
        self._maybe("before publish")
        self.inner.publish(pipeline, sequence)
        self._maybe("after publish")

    def recover(self, pipeline: str, sequence: int, token: int) -> None:
        self.calls.append("recover")
        self.inner.recover(pipeline, sequence, token)


class FaultyStore(MemoryCheckpointStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_before: BaseException | None = None
        self.fail_after: BaseException | None = None

    def commit(self, checkpoint: Checkpoint) -> None:
        if self.fail_before is not None:
            fault, self.fail_before = self.fail_before, None
            raise fault
        super().commit(checkpoint)
        if self.fail_after is not None:
            fault, self.fail_after = self.fail_after, None
            raise fault


def pipeline_on(sink: Any, store: Any, token: int = 1, name: str = "jobs") -> Pipeline:
    return Pipeline(name, [Numbering()], store, sink=sink, fencing_token=token)


# -- the protocol and the happy path --------------------------------------------------


def test_both_sinks_implement_the_protocol(make_sink: MakeSink) -> None:
    assert isinstance(make_sink(), Sink)


def test_a_pipeline_refuses_a_sink_that_is_not_one() -> None:
    with pytest.raises(InvalidPipeline, match="does not implement Sink"):
        Pipeline("jobs", [Numbering()], MemoryCheckpointStore(), sink=object())  # type: ignore[arg-type]


def test_output_goes_to_the_sink_and_is_read_back_in_order(make_sink: MakeSink) -> None:
    sink = make_sink()
    pipeline = pipeline_on(sink, MemoryCheckpointStore())
    assert pipeline.resume() is None
    assert pipeline.process(range(5)) == [], "with a sink, process() returns nothing"
    assert sink.read("jobs") == [], "output is not visible before its checkpoint"
    pipeline.checkpoint()
    assert sink.read("jobs") == expected(5)
    pipeline.process(range(5, 7))
    pipeline.checkpoint()
    pipeline.checkpoint()  # no new output: nothing to stage, nothing changes
    assert sink.read("jobs") == expected(7)
    # Another process (a fresh sink object) sees the same committed output.
    assert make_sink().read("jobs") == expected(7)


def test_pipelines_sharing_a_sink_do_not_see_each_others_output(make_sink: MakeSink) -> None:
    sink = make_sink()
    a = pipeline_on(sink, MemoryCheckpointStore(), name="left")
    b = pipeline_on(sink, MemoryCheckpointStore(), name="right")
    a.process(["a"])
    b.process(["b", "c"])
    a.checkpoint()
    b.checkpoint()
    assert sink.read("left") == [["a", 1]]
    assert sink.read("right") == [["b", 1], ["c", 2]]


def test_without_a_sink_process_returns_the_output_as_before() -> None:
    pipeline = Pipeline("jobs", [Numbering()], MemoryCheckpointStore())
    assert pipeline.process(range(3)) == expected(3)
    assert pipeline.sink is None


# -- the two phases and recovery ------------------------------------------------------


def test_resume_publishes_what_the_checkpoint_covers(make_sink: MakeSink) -> None:
    sink = FaultySink(make_sink())
    store = MemoryCheckpointStore()
    first = pipeline_on(sink, store)
    first.process(range(3))
    sink.fail["before publish"] = OSError("EIO while publishing")
    with pytest.raises(OutputNotPublished) as caught:
        first.checkpoint()
    # The checkpoint committed; its output is staged but not visible yet.
    assert isinstance(caught.value.checkpoint, Checkpoint)
    assert caught.value.checkpoint.sequence == 1
    assert store.latest("jobs") == caught.value.checkpoint
    assert isinstance(caught.value.__cause__, OSError)
    assert sink.inner.read("jobs") == []
    second = pipeline_on(make_sink(), store, token=2)
    assert second.resume() == caught.value.checkpoint
    assert sink.inner.read("jobs") == expected(3)


def test_a_failed_publication_is_finished_by_the_next_checkpoint_in_order(
    make_sink: MakeSink,
) -> None:
    sink = FaultySink(make_sink())
    pipeline = pipeline_on(sink, MemoryCheckpointStore())
    pipeline.process(range(2))
    sink.fail["before publish"] = OSError("EIO")
    with pytest.raises(OutputNotPublished):
        pipeline.checkpoint()
    assert pipeline.sequence == 1
    pipeline.process(range(2, 4))
    pipeline.checkpoint()
    assert sink.inner.read("jobs") == expected(4)
    assert sink.calls == ["pre_commit", "publish", "pre_commit", "publish", "publish"]


def test_resume_discards_output_beyond_the_checkpoint(make_sink: MakeSink) -> None:
    sink = make_sink()
    store = FaultyStore()
    first = pipeline_on(sink, store)
    first.process(range(3))
    first.checkpoint()
    first.process(range(3, 6))
    store.fail_before = OSError("EIO")
    with pytest.raises(CheckpointError):
        first.checkpoint()  # pre-committed, never covered by a checkpoint
    second = pipeline_on(make_sink(), store, token=2)
    restored = second.resume()
    assert restored is not None
    assert restored.position == 3
    assert sink.read("jobs") == expected(3)
    second.process(range(3, 6))
    second.checkpoint()
    assert sink.read("jobs") == expected(6), "no duplicate, no loss"


def test_a_commit_that_raised_after_committing_is_settled_by_the_next_flush(
    make_sink: MakeSink,
) -> None:
    # The store wrote the checkpoint, then raised (a retention unlink failing, say).
    sink = make_sink()
    store = FaultyStore()
    pipeline = pipeline_on(sink, store)
    pipeline.process(range(3))
    store.fail_after = OSError("EIO after the write")
    with pytest.raises(CheckpointError):
        pipeline.checkpoint()
    assert sink.read("jobs") == []
    pipeline.process(range(3, 5))
    checkpoint = pipeline.checkpoint()
    assert checkpoint.sequence == 2
    assert sink.read("jobs") == expected(5)
    # And a recovery agrees: exactly the covered output, once.
    third = pipeline_on(make_sink(), store, token=2)
    third.resume()
    assert sink.read("jobs") == expected(5)


def test_a_retried_pre_commit_replaces_the_failed_attempt(make_sink: MakeSink) -> None:
    sink = FaultySink(make_sink())
    pipeline = pipeline_on(sink, MemoryCheckpointStore())
    pipeline.process(range(2))
    sink.fail["after pre_commit"] = OSError("the reply was lost")
    with pytest.raises(CheckpointError):
        pipeline.checkpoint()
    pipeline.process(range(2, 3))
    pipeline.checkpoint()
    assert sink.inner.read("jobs") == expected(3)


# -- fencing --------------------------------------------------------------------------


def snapshot_of(sink: AnySink) -> object:
    if isinstance(sink, DirectorySink):
        return {
            str(p.relative_to(sink.path)): p.read_bytes()
            for p in sorted(sink.path.rglob("*"))
            if p.is_file() and p.name != "lock"
        }
    with sqlite3.connect(sink.path) as db:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
            for table in ("output", "output_commits")
        ]


def test_a_zombie_pre_commit_is_refused_and_writes_nothing(make_sink: MakeSink) -> None:
    sink = make_sink()
    store = MemoryCheckpointStore()
    old = pipeline_on(sink, store, token=1)
    old.process(range(2))
    old.checkpoint()
    new = pipeline_on(make_sink(), store, token=2)
    new.resume()
    before = snapshot_of(sink)
    old.process(range(2, 4))
    with pytest.raises(StaleFencingToken) as caught:
        old.checkpoint()
    assert (caught.value.token, caught.value.highest) == (1, 2)
    assert snapshot_of(sink) == before
    with pytest.raises(StaleFencingToken):
        sink.pre_commit("jobs", 2, 1, [["late", 0]])
    assert snapshot_of(sink) == before
    assert sink.highest_token("jobs") == 2


def test_fence_and_recover_refuse_a_lower_token(make_sink: MakeSink) -> None:
    sink = make_sink()
    sink.fence("jobs", 5)
    sink.fence("jobs", 5)  # the same token again is fine
    with pytest.raises(StaleFencingToken):
        sink.fence("jobs", 4)
    with pytest.raises(StaleFencingToken):
        sink.recover("jobs", 0, 4)
    assert make_sink().highest_token("jobs") == 5, "the fence survives a restart"


def test_a_higher_token_in_a_pre_commit_raises_the_fence(make_sink: MakeSink) -> None:
    sink = make_sink()
    sink.pre_commit("jobs", 1, 7, [1])
    assert sink.highest_token("jobs") == 7
    with pytest.raises(StaleFencingToken):
        sink.pre_commit("jobs", 1, 6, [1])


def test_pre_committing_a_published_sequence_is_refused(make_sink: MakeSink) -> None:
    sink = make_sink()
    sink.pre_commit("jobs", 1, 1, [1])
    sink.publish("jobs", 1)
    sink.publish("jobs", 1)  # idempotent
    with pytest.raises(CheckpointError, match="already published"):
        sink.pre_commit("jobs", 1, 1, [2])
    assert sink.read("jobs") == [1]


def test_publishing_what_was_never_staged_is_an_error(make_sink: MakeSink) -> None:
    with pytest.raises(CheckpointError, match="no pre-committed output for sequence 3"):
        make_sink().publish("jobs", 3)


def test_output_published_beyond_the_restored_checkpoint_is_refused(make_sink: MakeSink) -> None:
    # The checkpoints that covered it were lost: replaying would duplicate it.
    sink = make_sink()
    sink.pre_commit("jobs", 1, 1, [1])
    sink.publish("jobs", 1)
    with pytest.raises(CorruptOutput, match="beyond the restored checkpoint 0"):
        pipeline_on(sink, MemoryCheckpointStore(), token=2).resume()
    assert sink.read("jobs") == [1]


# -- encoding -------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize("bad", [Opaque(), {1, 2}, float("nan")], ids=["object", "set", "nan"])
def test_an_unencodable_record_names_its_type_and_commits_nothing(
    make_sink: MakeSink, bad: object
) -> None:
    sink = make_sink()
    store = MemoryCheckpointStore()
    pipeline = Pipeline("jobs", [Passthrough()], store, sink=sink)
    pipeline.process([0])
    first = pipeline.checkpoint()
    pipeline.process([1, bad, 3])
    before = snapshot_of(sink)
    with pytest.raises(InvalidRecord, match=rf"record 1 .* is a {type(bad).__name__}\b"):
        pipeline.checkpoint()
    assert store.latest("jobs") == first, "the checkpoint did not commit either"
    assert snapshot_of(sink) == before
    assert sink.read("jobs") == [0]
    # The pipeline resumes from its last checkpoint, and goes on.
    pipeline.resume()
    pipeline.process([1, 3])
    pipeline.checkpoint()
    assert sink.read("jobs") == [0, 1, 3]


class Passthrough:
    name = "pass"

    def process(self, record: Any) -> Iterable[Any]:
        return [record]

    def snapshot(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


def test_a_directory_sink_takes_its_own_encoding(tmp_path: Path) -> None:
    sink = DirectorySink(
        tmp_path,
        encode=lambda r: r.hex().encode(),
        decode=lambda line: bytes.fromhex(line.decode()),
    )
    sink.pre_commit("blobs", 1, 1, [b"\x00\n\xff", b""])
    sink.publish("blobs", 1)
    assert sink.read("blobs") == [b"\x00\n\xff", b""]
    with pytest.raises(InvalidRecord, match=r"record 0 .* is a bytes whose encoding holds a newl"):
        DirectorySink(tmp_path, encode=lambda r: r).pre_commit("raw", 1, 1, [b"a\nb"])
    with pytest.raises(InvalidRecord, match="is not bytes"):
        DirectorySink(tmp_path, encode=repr).pre_commit("raw", 1, 1, [1])  # type: ignore[arg-type]


def test_a_directory_segment_is_json_lines_after_its_header(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    sink.pre_commit("jobs", 1, 3, [{"a": 1}, [1, "x"], "text"])
    sink.publish("jobs", 1)
    [(sequence, path)] = sink.segments("jobs")
    assert sequence == 1
    head, *lines = path.read_bytes().decode().splitlines()
    assert head.startswith("GRAFOSSG 1 ")
    header = json.loads(head.split(" ", 3)[3])
    assert header == {
        "pipeline": "jobs",
        "sequence": 1,
        "fencing_token": 3,
        "records": 3,
        "bytes": 23,
    }
    assert [json.loads(line) for line in lines] == [{"a": 1}, [1, "x"], "text"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"encode": 3}, "encode 3 is not callable"),
        ({"decode": "json"}, "decode 'json' is not callable"),
    ],
)
def test_bad_sink_options_are_refused(
    sink_kind: str, tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    kind: Any = DirectorySink if sink_kind == "directory" else SqliteSink
    with pytest.raises(InvalidSink, match=match):
        kind(tmp_path / "o", **options)


@pytest.mark.parametrize("table", ["", "1abc", "a b", 'x"; DROP TABLE y; --', "sqlite_x", 7])
def test_a_bad_table_name_is_refused(tmp_path: Path, table: object) -> None:
    with pytest.raises(InvalidSink, match=rf"table name {table!r}"):
        SqliteSink(tmp_path / "o.db", table=table)  # type: ignore[arg-type]


def test_a_bad_pipeline_name_is_refused_by_the_directory_sink(tmp_path: Path) -> None:
    with pytest.raises(InvalidPipeline, match="safe file name"):
        DirectorySink(tmp_path).pre_commit("../escape", 1, 1, [1])


# -- verification ---------------------------------------------------------------------


def test_a_corrupt_published_segment_is_refused_not_skipped(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    for sequence in (1, 2):
        sink.pre_commit("jobs", sequence, 1, [sequence])
        sink.publish("jobs", sequence)
    path = sink.segments("jobs")[0][1]
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptOutput, match="SHA-256 mismatch"):
        sink.read("jobs")


def test_a_corrupt_pending_segment_is_not_published_by_recovery(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    sink.pre_commit("jobs", 1, 1, [1, 2])
    pending = tmp_path / "jobs" / f"{1:020d}.pending"
    pending.write_bytes(pending.read_bytes().replace(b"[", b"{", 1) + b"x")
    with pytest.raises(CorruptOutput):
        sink.recover("jobs", 1, 2)
    assert sink.read("jobs") == []


def test_a_segment_renamed_to_another_sequence_is_refused(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    sink.pre_commit("jobs", 1, 1, [1])
    sink.publish("jobs", 1)
    directory = tmp_path / "jobs"
    os.rename(directory / f"{1:020d}.seg", directory / f"{2:020d}.seg")
    with pytest.raises(CorruptOutput, match="not what its name says"):
        sink.read("jobs")


def test_recovery_removes_temporary_leftovers(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path)
    sink.fence("jobs", 1)
    leftover = tmp_path / "jobs" / ".123-0.tmp"
    leftover.write_bytes(b"half a segment")
    sink.recover("jobs", 0, 1)
    assert not leftover.exists()


# -- the SQL table, for other programs ------------------------------------------------


def test_other_programs_query_committed_rows_through_the_view(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "out.db", table="events")
    sink.pre_commit("jobs", 1, 1, [{"n": 1}, {"n": 2}])
    sink.publish("jobs", 1)
    sink.pre_commit("jobs", 2, 1, [{"n": 3}])  # staged, not committed
    query = (
        "import json, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1])\n"
        "rows = db.execute(\"SELECT record FROM events_committed WHERE pipeline = 'jobs' "
        'ORDER BY sequence, idx").fetchall()\n'
        "staged = db.execute('SELECT count(*) FROM events e JOIN events_commits c "
        "USING (pipeline) WHERE e.sequence > c.published').fetchone()[0]\n"
        "print(json.dumps([json.loads(r) for (r,) in rows]), staged)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", query, str(tmp_path / "out.db")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.rsplit(" ", 1)
    assert json.loads(out[0]) == [{"n": 1}, {"n": 2}]
    assert int(out[1]) == 1
    assert sink.read("jobs") == [{"n": 1}, {"n": 2}]


def test_sqlite_sinks_with_different_tables_share_a_file(tmp_path: Path) -> None:
    a = SqliteSink(tmp_path / "out.db", table="a")
    b = SqliteSink(tmp_path / "out.db", table="b")
    a.pre_commit("jobs", 1, 1, ["a"])
    a.publish("jobs", 1)
    assert b.read("jobs") == []
    assert a.read("jobs") == ["a"]


# -- checkpoint size ------------------------------------------------------------------


def test_checkpoint_size_does_not_grow_with_the_output(make_sink: MakeSink, tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "checkpoints", keep=1)
    pipeline = pipeline_on(make_sink(), store)
    sizes: list[int] = []
    states: list[int] = []
    for batch in (10, 100, 1000, 5000):
        pipeline.process(range(pipeline.position, pipeline.position + batch))
        checkpoint = pipeline.checkpoint()
        sizes.append(store.files("jobs")[0].stat().st_size)
        states.append(sum(len(s) for s in checkpoint.stage_states.values()))
    assert len(pipeline.sink.read("jobs")) == 6110  # type: ignore[union-attr]
    # Only the decimal digits of the counters grow: a handful of bytes, not the output.
    assert max(states) <= 4
    assert max(sizes) - min(sizes) <= 8, sizes
