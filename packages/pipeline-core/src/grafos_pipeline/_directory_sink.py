"""A durable, verified, fenced two-phase sink of segment files in a directory (POSIX)."""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ._directory_store import HELPERS, check_pipeline_name, start_writeback, write_all
from ._errors import CheckpointError, CorruptOutput, InvalidRecord, InvalidSink, StaleFencingToken
from ._store import check_token

# Segment layout, version 1: one header line, then one line per record.
#   b"GRAFOSSG 1 " + 64 hex digits of SHA-256 + b" " + header JSON + b"\n" + body
# The digest covers the header JSON, its newline and the body. Each record's encoding
# is followed by b"\n"; with the default encoder the body is JSON lines.
MAGIC = b"GRAFOSSG"
VERSION = 1
_PREFIX = MAGIC + b" 1 "
_DIGEST_LEN = 64
_HEAD_LEN = len(_PREFIX) + _DIGEST_LEN + 1
_PLACEHOLDER = b"0" * _DIGEST_LEN
# Above this size the SHA-256 runs on a helper thread while the data is written.
_OVERLAP_THRESHOLD = 256 * 1024
_TEMP_COUNTER = itertools.count()
_PAGE = 4096
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def json_line(record: Any) -> bytes:
    """The default encoder: compact JSON (ASCII, so it never holds a raw newline)."""
    return _JSON.encode(record).encode("ascii")


def json_record(data: bytes) -> Any:
    """The default decoder: one JSON document. Tuples come back as lists."""
    return json.loads(data)


def check_sequence(sequence: object) -> int:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise CheckpointError(f"sequence {sequence!r} is not a positive integer")
    return sequence


def check_covered_sequence(sequence: object) -> int:
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise CheckpointError(f"sequence {sequence!r} is not a non-negative integer")
    return sequence


def encode_records(
    pipeline: str, sequence: int, records: Sequence[Any], encode: Callable[[Any], bytes]
) -> bytes:
    """Every record's encoding, each followed by a newline; ``InvalidRecord`` naming the
    first record that cannot be encoded (its index and type)."""
    if not records:
        return b""
    try:
        # The fast path, in C: map, check and join into one buffer. (No ``body + b"\n"``
        # and no ``body.count``: each is a pass over the whole output, and a second
        # large buffer costs fresh pages.) A failure of any kind takes the slow path,
        # which finds and names the record.
        if encode is json_line:
            return "\n".join([*map(_JSON.encode, records), ""]).encode("ascii")
        pieces = [*map(encode, records), b""]
        # One memchr over the joined pieces finds a stray newline faster than a test
        # of each piece.
        if all(map(bytes.__instancecheck__, pieces)) and b"".join(pieces).find(b"\n") < 0:
            return b"\n".join(pieces)
    except Exception as exc:
        _find_unencodable(pipeline, sequence, records, encode)
        raise InvalidRecord(
            f"the output of pipeline {pipeline!r} for sequence {sequence} cannot be "
            f"encoded: {exc!r}"
        ) from exc
    _find_unencodable(pipeline, sequence, records, encode)
    raise InvalidRecord(
        f"the output of pipeline {pipeline!r} for sequence {sequence} holds a newline"
    )


def _find_unencodable(
    pipeline: str, sequence: int, records: Sequence[Any], encode: Callable[[Any], bytes]
) -> None:
    for index, record in enumerate(records):
        try:
            piece: object = encode(record)
        except Exception as exc:
            raise InvalidRecord(
                f"record {index} of the output of pipeline {pipeline!r} for sequence "
                f"{sequence} is a {type(record).__name__}, which cannot be encoded: {exc}"
            ) from exc
        if encode is not json_line and (not isinstance(piece, bytes) or b"\n" in piece):
            what = "holds a newline" if isinstance(piece, bytes) else "is not bytes"
            raise InvalidRecord(
                f"record {index} of the output of pipeline {pipeline!r} for sequence "
                f"{sequence} is a {type(record).__name__} whose encoding {what}: an encoder "
                "must return one line of bytes"
            )


def segment_head(pipeline: str, sequence: int, token: int, count: int, size: int) -> bytes:
    header = json.dumps(
        {
            "pipeline": pipeline,
            "sequence": sequence,
            "fencing_token": token,
            "records": count,
            "bytes": size,
        },
        separators=(",", ":"),
    ).encode()
    return header + b"\n"


def decode_segment(
    data: bytes, origin: str, pipeline: str, sequence: int, decode: Callable[[bytes], Any]
) -> list[Any]:
    """Verify a segment's bytes and decode its records; ``CorruptOutput`` naming ``origin``."""
    if len(data) < _HEAD_LEN or not data.startswith(_PREFIX):
        raise CorruptOutput(f"{origin}: not a version {VERSION} output segment")
    digest = data[len(_PREFIX) : len(_PREFIX) + _DIGEST_LEN]
    view = memoryview(data)[_HEAD_LEN:]
    if hashlib.sha256(view).hexdigest().encode() != digest:
        raise CorruptOutput(f"{origin}: SHA-256 mismatch")
    try:
        end = data.index(b"\n", _HEAD_LEN)
        header = json.loads(data[_HEAD_LEN:end])
        body = data[end + 1 :]
        if (header["pipeline"], header["sequence"]) != (pipeline, sequence):
            raise CorruptOutput(
                f"{origin}: holds pipeline {header['pipeline']!r} sequence "
                f"{header['sequence']}, not what its name says"
            )
        if header["bytes"] != len(body):
            raise CorruptOutput(f"{origin}: {len(body)} bytes of records, header says {header}")
        lines = body.split(b"\n")
        if lines.pop() != b"" or len(lines) != header["records"]:
            raise CorruptOutput(f"{origin}: {len(lines)} records, header says {header}")
    except CorruptOutput:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptOutput(f"{origin}: malformed header: {exc}") from exc
    try:
        return [decode(line) for line in lines]
    except Exception as exc:
        raise CorruptOutput(f"{origin}: a record does not decode: {exc!r}") from exc


class DirectorySink:
    """A pipeline's output as self-verifying segment files, one per checkpoint sequence.

    Layout: ``<path>/<pipeline>/`` holds ``<sequence>.pending`` (pre-committed, not yet
    visible), ``<sequence>.seg`` (published), ``fence`` (the highest fencing token seen)
    and ``lock``.

    - Every write is atomic: a temporary file in the same directory, fsync, rename,
      then a directory fsync. Publication is a rename of the pending file onto its
      ``.seg`` name. It needs no fsync of its own: the checkpoint already covers the
      output and the pending file is durable, so if a power loss undoes the rename,
      ``recover`` (run by ``resume()``) publishes the segment again, byte for byte the
      same; the next pre-commit's directory fsync also makes it durable.
    - Every segment carries a header line and a SHA-256 over its content; ``read``
      refuses one that fails verification with ``CorruptOutput`` rather than skip output.
    - Fencing follows ``DirectoryCheckpointStore``: a pre-commit or recovery with a
      token lower than the highest seen raises ``StaleFencingToken`` and writes nothing.
      The check and the write happen under an exclusive lock file, one atomic step
      across processes.
    - ``encode`` turns a record into one line of bytes (no newline), ``decode`` turns
      it back; the default is compact JSON, so a segment's body is JSON lines.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encode: Callable[[Any], bytes] = json_line,
        decode: Callable[[bytes], Any] = json_record,
    ) -> None:
        for role, function in (("encode", encode), ("decode", decode)):
            if not callable(function):
                raise InvalidSink(f"{role} {function!r} is not callable")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._root = os.fspath(self.path)
        self._encode = encode
        self._decode = decode
        self._guard = threading.Lock()
        self._thread_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"DirectorySink({self._root!r})"

    # -- the protocol -------------------------------------------------------------

    def pre_commit(self, pipeline: str, sequence: int, token: int, records: Sequence[Any]) -> None:
        check_pipeline_name(pipeline)
        check_sequence(sequence)
        check_token(token)
        # Encode before taking the lock: a bad record fails with nothing written.
        body = encode_records(pipeline, sequence, records, self._encode)
        head = segment_head(pipeline, sequence, token, len(records), len(body))
        # A large body's SHA-256 starts now, on a helper thread (hashlib releases the
        # GIL), so it runs while the lock is taken, the fence checked and the data written.
        digest = _Digest(head, body)
        try:
            self._pre_commit(pipeline, sequence, token, head, body, digest)
        finally:
            digest.wait()

    def _pre_commit(
        self, pipeline: str, sequence: int, token: int, head: bytes, body: bytes, digest: _Digest
    ) -> None:
        with self._locked(pipeline) as directory:
            self._check_fence(directory, pipeline, token)
            if os.path.exists(f"{directory}/{sequence:020d}.seg"):
                raise CheckpointError(
                    f"output of pipeline {pipeline!r} for sequence {sequence} is already "
                    "published: resume() before checkpointing"
                )
            temp = f"{directory}/.{os.getpid()}-{next(_TEMP_COUNTER)}.tmp"
            try:
                self._write_segment(temp, head, body, digest)
                os.replace(temp, f"{directory}/{sequence:020d}.pending")
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            # fsync the directory, or the rename may not survive a crash.
            _fsync_directory(directory)

    def publish(self, pipeline: str, sequence: int) -> None:
        check_pipeline_name(pipeline)
        check_sequence(sequence)
        with self._locked(pipeline) as directory:
            final = f"{directory}/{sequence:020d}.seg"
            try:
                os.rename(f"{directory}/{sequence:020d}.pending", final)
            except FileNotFoundError:
                if os.path.exists(final):
                    return  # published already (by a recovery, or an earlier call)
                raise CheckpointError(
                    f"pipeline {pipeline!r} has no pre-committed output for sequence "
                    f"{sequence} in {self._root!r}"
                ) from None
            # No directory fsync here: the checkpoint already covers this output, and
            # the pending file is durable. A crash of the process cannot undo the
            # rename; a power loss can, and then recover() redoes it. The next
            # pre-commit's directory fsync makes it durable anyway, at no extra cost.

    def recover(self, pipeline: str, sequence: int, token: int) -> None:
        check_pipeline_name(pipeline)
        check_token(token)
        check_covered_sequence(sequence)
        with self._locked(pipeline) as directory:
            self._check_fence(directory, pipeline, token)
            pending, published, temps = _list(directory)
            beyond = [s for s in published if s > sequence]
            if beyond:
                raise CorruptOutput(
                    f"output of pipeline {pipeline!r} is published up to sequence "
                    f"{max(beyond)}, beyond the restored checkpoint {sequence}: the "
                    "checkpoints that cover it are missing, and replaying would duplicate it"
                )
            # Under the lock no other writer is mid-write: these are crash leftovers.
            for name in temps:
                _unlink(f"{directory}/{name}")
            changed = bool(temps)
            for pending_sequence in sorted(pending):
                name = f"{directory}/{pending_sequence:020d}.pending"
                if pending_sequence > sequence:
                    _unlink(name)
                else:
                    # Covered by a committed checkpoint: it must be intact to be published.
                    decode_segment(
                        Path(name).read_bytes(), name, pipeline, pending_sequence, self._decode
                    )
                    os.rename(name, f"{directory}/{pending_sequence:020d}.seg")
                changed = True
            if changed:
                _fsync_directory(directory)

    # -- beyond the protocol ------------------------------------------------------

    def fence(self, pipeline: str, token: int) -> None:
        """Raise the pipeline's highest seen token to ``token``: older writers are refused."""
        check_pipeline_name(pipeline)
        check_token(token)
        with self._locked(pipeline) as directory:
            self._check_fence(directory, pipeline, token)

    def highest_token(self, pipeline: str) -> int:
        """The highest fencing token this sink has seen for ``pipeline``."""
        check_pipeline_name(pipeline)
        with self._locked(pipeline) as directory:
            return _read_fence(directory)

    def read(self, pipeline: str) -> list[Any]:
        """Every published record of ``pipeline``, in order. Pre-committed output is not
        included. Raises ``CorruptOutput`` if a published segment fails verification."""
        records: list[Any] = []
        for sequence, path in self.segments(pipeline):
            records.extend(
                decode_segment(path.read_bytes(), str(path), pipeline, sequence, self._decode)
            )
        return records

    def segments(self, pipeline: str) -> list[tuple[int, Path]]:
        """The published segment files of ``pipeline``: (sequence, path), oldest first."""
        check_pipeline_name(pipeline)
        directory = self.path / pipeline
        if not directory.is_dir():
            return []
        _, published, _ = _list(os.fspath(directory))
        return [(s, directory / f"{s:020d}.seg") for s in sorted(published)]

    # -- internals ----------------------------------------------------------------

    @contextmanager
    def _locked(self, pipeline: str) -> Iterator[str]:
        with self._guard:
            thread_lock = self._thread_locks.get(pipeline)
            if thread_lock is None:
                thread_lock = self._thread_locks[pipeline] = threading.Lock()
                directory = self.path / pipeline
                if not directory.is_dir():
                    directory.mkdir(exist_ok=True)
                    # A new directory is durable only once its parent is synced.
                    _fsync_directory(self._root)
        directory_name = f"{self._root}/{pipeline}"
        # flock excludes other processes; the thread lock, other threads of this one.
        with thread_lock:
            fd = os.open(f"{directory_name}/lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield directory_name
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def _check_fence(self, directory: str, pipeline: str, token: int) -> None:
        highest = _read_fence(directory)
        if token < highest:
            raise StaleFencingToken(pipeline, token, highest)
        if token > highest:
            _write_durably(directory, "fence", f"{token}\n".encode())

    def _write_segment(self, path: str, head: bytes, body: bytes, digest: _Digest) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if not digest.overlapped:
                write_all(fd, b"".join((_PREFIX, digest.wait(path), b" ", head, body)))
            else:
                # The digest is patched in before the one fsync, and the rename comes
                # after it, so no file without its digest is ever visible.
                write_all(fd, b"".join((_PREFIX, _PLACEHOLDER, b" ", head)))
                write_all(fd, body)
                # The disk works while the digest is computed; only the first page
                # is written again.
                start_writeback(fd, _PAGE, len(body))
                patch = digest.wait(path)
                if os.pwrite(fd, patch, len(_PREFIX)) != len(patch):
                    raise CheckpointError(f"short write of the digest of {path!r}")
            os.fsync(fd)
        finally:
            os.close(fd)


class _Digest:
    """A segment's SHA-256 (hex), computed on a helper thread for a large body."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self._head = head
        self._body = body
        self._value: bytes | None = None
        self.overlapped = len(body) >= _OVERLAP_THRESHOLD
        self._job = HELPERS.start(self._compute) if self.overlapped else None

    def _compute(self) -> bytes:
        h = hashlib.sha256(self._head)
        h.update(self._body)
        return h.hexdigest().encode()

    def wait(self, path: str = "") -> bytes:
        """The digest; idempotent, and always frees the helper thread."""
        if self._value is not None:
            return self._value
        job, self._job = self._job, None
        if job is None:
            self._value = self._compute()
            return self._value
        error = job.wait()
        result = job.result
        if error is not None or not isinstance(result, bytes):
            raise CheckpointError(f"computing the SHA-256 of {path!r} failed") from error
        self._value = result
        return result


def _list(directory: str) -> tuple[set[int], set[int], list[str]]:
    pending: set[int] = set()
    published: set[int] = set()
    temps: list[str] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            stem, _, suffix = entry.name.partition(".")
            if stem.isdigit() and suffix == "seg":
                published.add(int(stem))
            elif stem.isdigit() and suffix == "pending":
                pending.add(int(stem))
            elif not stem and entry.name.endswith(".tmp"):
                temps.append(entry.name)
    return pending, published, temps


def _read_fence(directory: str) -> int:
    try:
        with open(f"{directory}/fence", "rb") as file:
            text = file.read()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError:
        raise CorruptOutput(f"{directory}/fence: {text!r} is not a fencing token") from None


def _write_durably(directory: str, name: str, data: bytes) -> None:
    temp = f"{directory}/.{os.getpid()}-{next(_TEMP_COUNTER)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, f"{directory}/{name}")
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
