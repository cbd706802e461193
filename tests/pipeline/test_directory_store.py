"""DirectoryCheckpointStore: atomic, verified, fenced, with retention; and bad input."""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from grafos_pipeline import (
    Checkpoint,
    CheckpointError,
    DirectoryCheckpointStore,
    InvalidCheckpoint,
    InvalidPipeline,
    Pipeline,
    StaleFencingToken,
)

DIGEST_OFFSET = 14  # after b"GRAFOSCP", a u16 version and a u32 header length
BODY_OFFSET = DIGEST_OFFSET + 32


def make(
    sequence: int,
    *,
    token: int = 1,
    pipeline: str = "p",
    states: dict[str, bytes] | None = None,
    position: int | None = None,
    lease_id: int | None = None,
) -> Checkpoint:
    return Checkpoint(
        pipeline=pipeline,
        sequence=sequence,
        fencing_token=token,
        lease_id=lease_id,
        position=sequence * 10 if position is None else position,
        stage_states={"s": f"state {sequence}".encode()} if states is None else states,
        created_at=1_700_000_000.5 + sequence,
    )


def file_name(pipeline: str, sequence: int, token: int) -> str:
    return f"{pipeline}.{sequence:020d}.{token:020d}.ckpt"


def listing(directory: Path) -> dict[str, bytes]:
    """Every file in ``directory`` (the lock file aside) with its content."""
    return {
        name: (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
        if not name.endswith(".lock")
    }


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "grafos_pipeline" and r.levelno == logging.ERROR
    ]


class Recorder:
    """A stage that remembers every record; its state is their comma-joined list."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.records: list[str] = []

    def process(self, record: Any) -> Iterable[Any]:
        self.records.append(str(record))
        return (record,)

    def snapshot(self) -> bytes:
        return ",".join(self.records).encode()

    def restore(self, state: bytes) -> None:
        self.records = state.decode().split(",") if state else []


# -- round trip and layout ---------------------------------------------------------


def test_commit_then_latest_round_trips_every_field(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    states = {"parse": b"", "agg": bytes(range(256)) * 4, "ünïcode stage": b"\x00\xff"}
    original = make(7, token=3, states=states, position=123, lease_id=2**128 - 1)
    store.commit(original)
    again = DirectoryCheckpointStore(tmp_path).latest("p")
    assert again == original
    assert again is not None
    assert list(again.stage_states) == ["parse", "agg", "ünïcode stage"]


def test_latest_of_an_empty_or_unknown_pipeline_is_none(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path / "not-yet-there")
    assert store.latest("p") is None
    store.commit(make(1, pipeline="other"))
    assert store.latest("p") is None


def test_files_are_named_pipeline_sequence_token(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1, token=4))
    store.commit(make(2, token=9))
    store.fence("p", 12)
    names = sorted(os.listdir(tmp_path))
    assert names == [
        ".p.lock",
        "p.00000000000000000001.00000000000000000004.ckpt",
        "p.00000000000000000002.00000000000000000009.ckpt",
        "p.00000000000000000012.fence",
    ]
    assert store.files("p") == [tmp_path / file_name("p", 2, 9), tmp_path / file_name("p", 1, 4)]
    content = (tmp_path / file_name("p", 2, 9)).read_bytes()
    assert content[:8] == b"GRAFOSCP"
    assert struct.unpack(">H", content[8:10]) == (1,)


def test_pipeline_checkpoint_and_resume_through_the_directory(tmp_path: Path) -> None:
    first = Pipeline("words", [Recorder()], DirectoryCheckpointStore(tmp_path), fencing_token=1)
    assert first.resume() is None
    first.process(["a", "b"])
    first.checkpoint()
    first.process(["c"])
    first.checkpoint()

    stage = Recorder()
    second = Pipeline("words", [stage], DirectoryCheckpointStore(tmp_path), fencing_token=2)
    restored = second.resume()
    assert restored is not None
    assert (restored.sequence, second.position, second.sequence) == (2, 3, 2)
    assert stage.records == ["a", "b", "c"]


# -- verification ------------------------------------------------------------------


def flip_a_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def corrupt_flip_state(path: Path) -> None:
    flip_a_byte(path, path.stat().st_size - 1)


def corrupt_flip_header(path: Path) -> None:
    flip_a_byte(path, BODY_OFFSET + 3)


def corrupt_flip_digest(path: Path) -> None:
    flip_a_byte(path, DIGEST_OFFSET)


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def corrupt_truncate_to_nothing(path: Path) -> None:
    path.write_bytes(b"")


def corrupt_magic(path: Path) -> None:
    path.write_bytes(b"NOTGRAFO" + path.read_bytes()[8:])


def corrupt_version(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8] + struct.pack(">H", 2) + data[10:])


def corrupt_extra_bytes(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\x00")


CORRUPTIONS = {
    "flipped state byte": (corrupt_flip_state, "SHA-256 mismatch"),
    "flipped header byte": (corrupt_flip_header, "SHA-256 mismatch"),
    "flipped digest byte": (corrupt_flip_digest, "SHA-256 mismatch"),
    "truncated": (corrupt_truncate, "SHA-256 mismatch"),
    "empty": (corrupt_truncate_to_nothing, "shorter than the header"),
    "wrong magic": (corrupt_magic, "bad magic"),
    "unsupported version": (corrupt_version, "unsupported format version 2"),
    "trailing byte": (corrupt_extra_bytes, "SHA-256 mismatch"),
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_corrupt_newest_file_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    corrupt, reason = CORRUPTIONS[how]
    writer = DirectoryCheckpointStore(tmp_path)
    for sequence in (1, 2, 3):
        writer.commit(make(sequence, states={"s": bytes([sequence]) * 2048}))
    newest = tmp_path / file_name("p", 3, 1)
    corrupt(newest)

    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    latest = DirectoryCheckpointStore(tmp_path).latest("p")
    assert latest == make(2, states={"s": bytes([2]) * 2048})
    [message] = errors(caplog)
    assert str(newest) in message
    assert reason in message


def test_latest_skips_every_corrupt_file_down_to_the_newest_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = DirectoryCheckpointStore(tmp_path, keep=5)
    for sequence in range(1, 6):
        writer.commit(make(sequence))
    for sequence in (3, 4, 5):
        corrupt_flip_state(tmp_path / file_name("p", sequence, 1))
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(2)
    assert len(errors(caplog)) == 3
    for sequence in (1, 2):
        corrupt_flip_state(tmp_path / file_name("p", sequence, 1))
    assert DirectoryCheckpointStore(tmp_path).latest("p") is None


def test_a_file_whose_content_disagrees_with_its_name_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1))
    store.commit(make(2))
    # A verified file renamed to look newer (and from a higher token) is not trusted.
    os.rename(tmp_path / file_name("p", 2, 1), tmp_path / file_name("p", 5, 1))
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(1)
    [message] = errors(caplog)
    assert "does not match its file name" in message


def test_a_commit_may_supersede_a_corrupt_newer_file(tmp_path: Path) -> None:
    DirectoryCheckpointStore(tmp_path).commit(make(1))
    DirectoryCheckpointStore(tmp_path).commit(make(2))
    corrupt_flip_state(tmp_path / file_name("p", 2, 1))
    store = DirectoryCheckpointStore(tmp_path)
    resumed = store.latest("p")
    assert resumed == make(1)
    store.commit(make(2, states={"s": b"redone"}))
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(2, states={"s": b"redone"})


def test_the_store_that_wrote_a_file_stops_trusting_it_once_it_fails(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    pipeline = Pipeline("p", [Recorder("s")], store, fencing_token=1)
    for record in ("a", "b"):
        pipeline.process([record])
        pipeline.checkpoint()
    corrupt_flip_state(tmp_path / file_name("p", 2, 1))
    again = Pipeline("p", [Recorder("s")], store, fencing_token=1)
    restored = again.resume()
    assert restored is not None
    assert restored.sequence == 1
    again.process(["c"])
    assert again.checkpoint().sequence == 2


# -- retention ---------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 2, 3, 5])
def test_retention_keeps_the_newest_keep_checkpoints(tmp_path: Path, keep: int) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep=keep)
    for sequence in range(1, 9):
        store.commit(make(sequence))
        expected = list(range(sequence, max(0, sequence - keep), -1))
        assert store.files("p") == [tmp_path / file_name("p", s, 1) for s in expected]


def test_retention_never_deletes_the_newest_valid_behind_corrupt_newer_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    DirectoryCheckpointStore(tmp_path, keep=5).commit(make(1))
    DirectoryCheckpointStore(tmp_path, keep=5).commit(make(2))
    # Three newer files that do not verify (say, bit rot), written by another store.
    for sequence in (3, 4, 5):
        DirectoryCheckpointStore(tmp_path, keep=5).commit(make(sequence))
        corrupt_flip_state(tmp_path / file_name("p", sequence, 1))
    # A later commit from a fresh store with keep=2: retention counts only valid files.
    store = DirectoryCheckpointStore(tmp_path, keep=2)
    store.commit(make(6))
    remaining = [p.name for p in store.files("p")]
    # Valid: 6 and 2 (the two newest valid); the corrupt 3-5 lie between and stay.
    assert remaining == [file_name("p", s, 1) for s in (6, 5, 4, 3, 2)]
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(6)


def test_superseding_a_corrupt_file_of_the_same_name_keeps_the_new_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    for sequence in (1, 2):
        DirectoryCheckpointStore(tmp_path).commit(make(sequence))
    corrupt_flip_state(tmp_path / file_name("p", 2, 1))
    store = DirectoryCheckpointStore(tmp_path, keep=1)
    assert store.latest("p") == make(1)
    store.commit(make(2, states={"s": b"again"}))  # replaces the corrupt file in place
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(2, states={"s": b"again"})
    assert [p.name for p in store.files("p")] == [file_name("p", 2, 1)]


def test_retention_keeps_the_only_valid_file_when_all_newer_are_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    DirectoryCheckpointStore(tmp_path, keep=5).commit(make(1))
    for sequence in (2, 3):
        DirectoryCheckpointStore(tmp_path, keep=5).commit(make(sequence))
        corrupt_flip_state(tmp_path / file_name("p", sequence, 1))
    # A commit that fails still must not have deleted anything; a stale one writes nothing.
    store = DirectoryCheckpointStore(tmp_path, keep=1)
    store.fence("p", 2)
    with pytest.raises(StaleFencingToken):
        store.commit(make(4, token=1))
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(1)
    assert (tmp_path / file_name("p", 1, 1)).exists()


# -- fencing -----------------------------------------------------------------------


def test_a_commit_below_a_previous_commits_token_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1, token=5))
    before = listing(tmp_path)
    with pytest.raises(StaleFencingToken) as caught:
        store.commit(make(2, token=4))
    assert (caught.value.pipeline, caught.value.token, caught.value.highest) == ("p", 4, 5)
    assert "4" in str(caught.value)
    assert "5" in str(caught.value)
    assert listing(tmp_path) == before
    store.commit(make(2, token=5))  # an equal token is the same holder: accepted


def test_a_commit_below_a_fence_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1, token=1))
    store.fence("p", 3)
    before = listing(tmp_path)
    for token in (0, 1, 2):
        with pytest.raises(StaleFencingToken):
            store.commit(make(2, token=token))
    assert listing(tmp_path) == before
    assert isinstance(StaleFencingToken("p", 1, 2), CheckpointError)
    store.commit(make(2, token=3))
    assert store.latest("p") == make(2, token=3)


def test_the_highest_token_survives_a_restart(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep=1)
    store.commit(make(1, token=2))
    store.fence("p", 7)
    store.fence("p", 7)  # idempotent
    restarted = DirectoryCheckpointStore(tmp_path, keep=1)
    assert restarted.highest_token("p") == 7
    with pytest.raises(StaleFencingToken):
        restarted.commit(make(2, token=6))
    restarted.commit(make(2, token=8))
    # Retention deleted the token-2 file; the token-8 one now carries the highest.
    again = DirectoryCheckpointStore(tmp_path)
    assert again.highest_token("p") == 8
    with pytest.raises(StaleFencingToken):
        again.fence("p", 7)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".fence")] == [
        "p.00000000000000000007.fence"
    ]


def test_fence_below_the_highest_token_is_refused(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.fence("p", 5)
    before = listing(tmp_path)
    with pytest.raises(StaleFencingToken) as caught:
        store.fence("p", 4)
    assert (caught.value.token, caught.value.highest) == (4, 5)
    assert listing(tmp_path) == before
    store.fence("p", 9)
    # Older fence files are replaced, not accumulated.
    assert [n for n in os.listdir(tmp_path) if n.endswith(".fence")] == [
        "p.00000000000000000009.fence"
    ]


@pytest.mark.parametrize("token", [-1, True, 1.0, "2", None])
def test_fence_with_a_bad_token_names_it(tmp_path: Path, token: Any) -> None:
    with pytest.raises(InvalidCheckpoint, match=repr(token).replace(".", r"\.")):
        DirectoryCheckpointStore(tmp_path).fence("p", token)


def test_resume_fences_before_it_reads(tmp_path: Path) -> None:
    old = Pipeline("p", [Recorder("s")], DirectoryCheckpointStore(tmp_path), fencing_token=1)
    old.resume()
    old.process(["a"])
    old.checkpoint()
    new = Pipeline("p", [Recorder("s")], DirectoryCheckpointStore(tmp_path), fencing_token=2)
    assert new.resume() is not None
    before = listing(tmp_path)
    old.process(["b"])
    with pytest.raises(StaleFencingToken):
        old.checkpoint()
    with pytest.raises(StaleFencingToken):
        old.resume()
    assert listing(tmp_path) == before
    assert old.sequence == 1  # the refused flush did not advance it


# -- temp files --------------------------------------------------------------------


def test_temp_file_leftovers_are_cleaned_on_the_next_commit(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1))
    leftovers = [".p.0123456789abcdef.tmp", ".p.deadbeefdeadbeef.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    other = tmp_path / ".p.b.0123456789abcdef.tmp"  # pipeline "p.b"'s, not ours
    other.write_bytes(b"not ours")
    assert store.latest("p") == make(1)  # reading ignores them
    store.commit(make(2))
    names = os.listdir(tmp_path)
    assert not set(leftovers) & set(names)
    assert other.name in names
    assert not [n for n in names if n.startswith(".p.") and n.count(".") == 3]


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x", "", "a/b", ".hidden", "x" * 200, "-dash", "a\x00b", "a b", "ü"]
)
def test_unsafe_pipeline_names_are_refused_naming_the_value(tmp_path: Path, name: str) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    before = listing(tmp_path)
    for call in (store.latest, store.files, store.highest_token):
        with pytest.raises(InvalidPipeline) as caught:
            call(name)
        assert repr(name) in str(caught.value)
    with pytest.raises(InvalidPipeline, match="pipeline name"):
        store.fence(name, 1)
    if name:  # an empty name is already refused by Checkpoint itself
        with pytest.raises(InvalidPipeline) as caught:
            store.commit(make(1, pipeline=name))
        assert repr(name) in str(caught.value)
    assert listing(tmp_path) == before
    assert not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("name", [None, 3, b"p", ["p"]])
def test_non_string_pipeline_names_are_refused_naming_the_value(tmp_path: Path, name: Any) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    with pytest.raises(InvalidPipeline, match=repr(name).replace("[", r"\[").replace("]", r"\]")):
        store.latest(name)
    with pytest.raises(InvalidCheckpoint):
        make(1, pipeline=name)


def test_the_longest_safe_name_is_accepted(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    name = "a" + "b.-_9" * 25 + "xy"
    assert len(name) == 128
    store.commit(make(1, pipeline=name))
    assert store.latest(name) == make(1, pipeline=name)
    with pytest.raises(InvalidPipeline):
        store.latest(name + "z")


@pytest.mark.parametrize("keep", [0, -1, True, False, 1.0, "3", None])
def test_keep_must_be_a_positive_integer(tmp_path: Path, keep: Any) -> None:
    with pytest.raises(InvalidPipeline) as caught:
        DirectoryCheckpointStore(tmp_path, keep=keep)
    assert f"keep {keep!r}" in str(caught.value)


@pytest.mark.parametrize("state", ["text", bytearray(b"x"), memoryview(b"x"), None, 1])
def test_stage_state_that_is_not_bytes_is_refused_naming_the_stage(state: Any) -> None:
    with pytest.raises(InvalidCheckpoint) as caught:
        make(1, states={"agg": state})
    assert "'agg'" in str(caught.value)
    assert type(state).__name__ in str(caught.value)


def test_a_stage_snapshot_that_is_not_bytes_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    class Texty(Recorder):
        def snapshot(self) -> bytes:
            return "oops"  # type: ignore[return-value]

    pipeline = Pipeline("p", [Texty("agg")], DirectoryCheckpointStore(tmp_path))
    with pytest.raises(InvalidCheckpoint, match=r"'agg'.*str"):
        pipeline.checkpoint()
    assert listing(tmp_path) == {}


def test_duplicate_stage_names_are_refused_naming_the_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidPipeline, match="duplicate stage name 'agg'"):
        Pipeline(
            "p",
            [Recorder("agg"), Recorder("x"), Recorder("agg")],
            DirectoryCheckpointStore(tmp_path),
        )


def test_resuming_a_checkpoint_with_a_stage_the_pipeline_lacks_names_it(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1, states={"parse": b"", "legacy": b"x"}))
    stage = Recorder("parse")
    pipeline = Pipeline("p", [stage], DirectoryCheckpointStore(tmp_path), fencing_token=1)
    with pytest.raises(InvalidCheckpoint, match="'legacy'"):
        pipeline.resume()
    assert pipeline.position == 0
    assert store.latest("p") == make(1, states={"parse": b"", "legacy": b"x"})


def test_a_commit_not_after_the_newest_stored_sequence_is_refused(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(5))
    before = listing(tmp_path)
    for sequence in (5, 4, 1):
        with pytest.raises(
            InvalidCheckpoint, match=f"sequence {sequence} .* newest stored sequence 5"
        ):
            DirectoryCheckpointStore(tmp_path).commit(make(sequence, states={"s": b"other"}))
    assert listing(tmp_path) == before
    with pytest.raises(InvalidCheckpoint, match="not a Checkpoint"):
        store.commit("a checkpoint")  # type: ignore[arg-type]


# -- large states ------------------------------------------------------------------


@pytest.mark.parametrize("size", [256 * 1024 - 1, 256 * 1024, 1024 * 1024 + 7, 3 * 1024 * 1024])
def test_large_states_take_the_overlapped_path_and_round_trip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    caplog.set_level(logging.ERROR, logger="grafos_pipeline")
    big = os.urandom(size)
    states = {"small": b"abc", "big": big, "empty": b""}
    store = DirectoryCheckpointStore(tmp_path)
    store.commit(make(1, states=states))
    assert DirectoryCheckpointStore(tmp_path).latest("p") == make(1, states=states)
    # The digest patched in after the data verifies: flipping any data byte breaks it.
    corrupt_flip_state(tmp_path / file_name("p", 1, 1))
    assert DirectoryCheckpointStore(tmp_path).latest("p") is None
    assert len(errors(caplog)) == 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# -- concurrency -------------------------------------------------------------------


def test_two_stores_on_one_directory_interleave_commits_safely(tmp_path: Path) -> None:
    # Two store instances stand for two processes: each has its own thread lock, so
    # only the lock file orders them. Each commits the next sequence it can.
    stores = [DirectoryCheckpointStore(tmp_path, keep=4) for _ in range(2)]
    committed: list[list[int]] = [[], []]
    refused = [0, 0]
    barrier = threading.Barrier(2)

    def writer(index: int) -> None:
        store = stores[index]
        barrier.wait()
        while len(committed[0]) + len(committed[1]) < 120:
            newest = store.latest("p")
            sequence = 1 if newest is None else newest.sequence + 1
            try:
                store.commit(make(sequence, states={"s": f"{index}:{sequence}".encode()}))
            except InvalidCheckpoint:
                refused[index] += 1  # the other one got there first
            else:
                committed[index].append(sequence)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    both = sorted(committed[0] + committed[1])
    assert both == list(range(1, len(both) + 1)), "a sequence was lost or doubled"
    latest = DirectoryCheckpointStore(tmp_path).latest("p")
    assert latest is not None
    assert latest.sequence == both[-1]
    owner = 0 if both[-1] in committed[0] else 1
    assert latest.stage_states["s"] == f"{owner}:{both[-1]}".encode()
    assert len(DirectoryCheckpointStore(tmp_path).files("p")) == 4


def test_a_fence_from_another_store_is_seen_at_once(tmp_path: Path) -> None:
    old, new = DirectoryCheckpointStore(tmp_path), DirectoryCheckpointStore(tmp_path)
    old.commit(make(1, token=1))
    new.fence("p", 2)
    with pytest.raises(StaleFencingToken):
        old.commit(make(2, token=1))


def test_pipelines_whose_names_prefix_each_other_are_isolated(tmp_path: Path) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep=1)
    names = ["a", "a.b", "a.b.c", "a.00000000000000000003", "ab", "a-b"]
    for round_ in (1, 2, 3):
        for index, name in enumerate(names):
            store.commit(make(round_, pipeline=name, token=index, states={"s": name.encode()}))
    store.fence("a.b", 50)
    # Leftovers of "a.b" are not "a"'s to clean.
    (tmp_path / ".a.b.0123456789abcdef.tmp").write_bytes(b"")
    store.commit(make(4, pipeline="a", token=0, states={"s": b"a"}))
    assert (tmp_path / ".a.b.0123456789abcdef.tmp").exists()
    for index, name in enumerate(names):
        latest = DirectoryCheckpointStore(tmp_path).latest(name)
        assert latest is not None
        assert latest.stage_states["s"] == name.encode()
        assert latest.pipeline == name
        assert len(store.files(name)) == 1
        expected = 50 if name == "a.b" else index
        assert store.highest_token(name) == expected


# -- retention overlapped with the write -------------------------------------------


@pytest.mark.parametrize("size", [10, 300 * 1024])
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_a_commit_that_fails_to_sync_never_loses_the_newest_valid_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, keep: int
) -> None:
    # Retention may run while the new file is written (keep >= 2): a commit that then
    # fails must still leave the previous checkpoint readable, and no temp file.
    store = DirectoryCheckpointStore(tmp_path, keep=keep)
    for sequence in range(1, 5):
        store.commit(make(sequence, states={"s": os.urandom(size)}))
    previous = DirectoryCheckpointStore(tmp_path).latest("p")
    assert previous is not None
    assert previous.sequence == 4

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "injected EIO")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="injected EIO"):
        store.commit(make(5, states={"s": os.urandom(size)}))
    monkeypatch.undo()
    assert DirectoryCheckpointStore(tmp_path).latest("p") == previous
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(store.files("p")) >= max(1, keep - 1)
    # The next commit works and retention is back to exactly ``keep``.
    store.commit(make(5))
    assert [p.name for p in store.files("p")] == [
        file_name("p", s, 1) for s in range(5, 5 - keep, -1)
    ]
