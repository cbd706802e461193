"""A durable, verified, fenced checkpoint store in a directory (POSIX)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ._checkpoint import BODY_OFFSET, DIGEST_OFFSET, Checkpoint, EncodedCheckpoint, decode, encode
from ._errors import (
    CheckpointError,
    CorruptCheckpoint,
    InvalidCheckpoint,
    InvalidPipeline,
    StaleFencingToken,
)
from ._store import check_token, sequence_not_after

logger = logging.getLogger("grafos_pipeline")

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Below this size a single sequential pass is cheapest; above it the SHA-256 runs on
# another thread while the data is written and synced (hashlib releases the GIL).
_OVERLAP_THRESHOLD = 256 * 1024


def check_pipeline_name(name: object) -> str:
    if not isinstance(name, str) or _SAFE_NAME.fullmatch(name) is None:
        raise InvalidPipeline(
            f"pipeline name {name!r} cannot be a safe file name: use 1 to 128 letters, "
            "digits, '.', '_' or '-', starting with a letter or a digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class _Listing:
    """What the directory holds for one pipeline, newest checkpoint first."""

    checkpoints: list[tuple[int, int, str]]  # (sequence, token, file name)
    fence_token: int
    fence_files: list[str]  # all of them, the highest included
    temp_files: list[str]

    @property
    def highest_token(self) -> int:
        tokens = [token for _, token, _ in self.checkpoints]
        return max([self.fence_token, *tokens])


class DirectoryCheckpointStore:
    """Checkpoints as self-verifying files in one directory.

    - A commit writes a temporary file in the directory, fsyncs it, renames it onto
      its final name and fsyncs the directory: a crash at any instant leaves the
      newest readable checkpoint either the previous one or the new one.
    - Every file carries a versioned header and a SHA-256 over its content;
      ``latest`` skips files that fail verification (logged at ERROR).
    - The highest fencing token seen per pipeline is carried in the file names
      (``<pipeline>.<sequence>.<token>.ckpt`` and ``<pipeline>.<token>.fence``), so it
      survives restarts. The token check and the write happen under an exclusive lock
      file, one atomic step across processes.
    - Retention keeps the newest ``keep`` valid checkpoints per pipeline and never
      deletes the newest valid one.
    """

    def __init__(self, path: str | os.PathLike[str], keep: int = 3) -> None:
        if not _is_natural(keep) or keep < 1:
            raise InvalidPipeline(f"keep {keep!r} is not a positive integer")
        self.path = Path(path)
        self.keep = keep
        self.path.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._thread_locks: dict[str, threading.Lock] = {}
        # File names this store wrote or has read back intact. Files are immutable
        # once renamed into place, so a name verified once stays verified.
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return f"DirectoryCheckpointStore({str(self.path)!r}, keep={self.keep})"

    # -- the protocol -------------------------------------------------------------

    def commit(self, checkpoint: Checkpoint) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise InvalidCheckpoint(f"{checkpoint!r} is not a Checkpoint")
        pipeline = check_pipeline_name(checkpoint.pipeline)
        encoded = encode(checkpoint)
        final = f"{pipeline}.{checkpoint.sequence:020d}.{checkpoint.fencing_token:020d}.ckpt"
        with self._locked(pipeline):
            listing = self._list(pipeline)
            highest = listing.highest_token
            if checkpoint.fencing_token < highest:
                raise StaleFencingToken(pipeline, checkpoint.fencing_token, highest)
            for sequence, token, name in listing.checkpoints:
                if sequence < checkpoint.sequence:
                    break
                # A newer file that fails verification may be superseded.
                if self._is_valid(name, pipeline, sequence, token):
                    raise sequence_not_after(checkpoint, sequence)
            # Under the lock no other writer is mid-write: these are crash leftovers.
            for name in listing.temp_files:
                self._unlink(name)
            temp = f".{pipeline}.{secrets.token_hex(8)}.tmp"
            try:
                self._write_synced(temp, encoded)
                os.replace(self.path / temp, self.path / final)
            except BaseException:
                self._unlink(temp)
                raise
            # fsync the directory, or the rename may not survive a crash.
            self._fsync_directory()
            self._verified.add(final)
            # A set: the new file may have replaced a corrupt one of the same name.
            fresh = (checkpoint.sequence, checkpoint.fencing_token, final)
            self._retain(pipeline, sorted({fresh, *listing.checkpoints}, reverse=True))

    def latest(self, pipeline: str) -> Checkpoint | None:
        check_pipeline_name(pipeline)
        with self._locked(pipeline):
            for sequence, token, name in self._list(pipeline).checkpoints:
                checkpoint = self._read(name, pipeline, sequence, token)
                if checkpoint is not None:
                    return checkpoint
        return None

    def fence(self, pipeline: str, token: int) -> None:
        check_pipeline_name(pipeline)
        check_token(token)
        with self._locked(pipeline):
            listing = self._list(pipeline)
            highest = listing.highest_token
            if token < highest:
                raise StaleFencingToken(pipeline, token, highest)
            if token == highest:
                return
            fd = os.open(
                self.path / f"{pipeline}.{token:020d}.fence",
                os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                0o644,
            )
            os.close(fd)
            self._fsync_directory()
            for name in listing.fence_files:
                self._unlink(name)

    # -- inspection ---------------------------------------------------------------

    def highest_token(self, pipeline: str) -> int:
        """The highest fencing token this store has seen for ``pipeline``."""
        check_pipeline_name(pipeline)
        with self._locked(pipeline):
            return self._list(pipeline).highest_token

    def files(self, pipeline: str) -> list[Path]:
        """The pipeline's checkpoint files, newest first (valid or not)."""
        check_pipeline_name(pipeline)
        with self._locked(pipeline):
            return [self.path / name for _, _, name in self._list(pipeline).checkpoints]

    # -- internals ----------------------------------------------------------------

    @contextmanager
    def _locked(self, pipeline: str) -> Iterator[None]:
        with self._guard:
            thread_lock = self._thread_locks.setdefault(pipeline, threading.Lock())
        # flock excludes other processes; the thread lock excludes other threads of
        # this one, which flock on separate descriptors would also do, but cheaper.
        with thread_lock:
            fd = os.open(
                self.path / f".{pipeline}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def _list(self, pipeline: str) -> _Listing:
        checkpoints: list[tuple[int, int, str]] = []
        fence_token = 0
        fence_files: list[str] = []
        temp_files: list[str] = []
        prefix = f"{pipeline}."
        temp_prefix = f".{pipeline}."
        with os.scandir(self.path) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(prefix):
                    parts = name.rsplit(".", 3)
                    if len(parts) == 4 and parts[0] == pipeline and parts[3] == "ckpt":
                        if parts[1].isdigit() and parts[2].isdigit():
                            checkpoints.append((int(parts[1]), int(parts[2]), name))
                        continue
                    parts = name.rsplit(".", 2)
                    if (
                        len(parts) == 3
                        and parts[0] == pipeline
                        and parts[2] == "fence"
                        and parts[1].isdigit()
                    ):
                        fence_token = max(fence_token, int(parts[1]))
                        fence_files.append(name)
                elif name.startswith(temp_prefix) and name.endswith(".tmp"):
                    parts = name.rsplit(".", 2)
                    if parts[0] == f".{pipeline}":
                        temp_files.append(name)
        checkpoints.sort(reverse=True)
        return _Listing(checkpoints, fence_token, fence_files, temp_files)

    def _write_synced(self, name: str, encoded: EncodedCheckpoint) -> None:
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if encoded.size < _OVERLAP_THRESHOLD:
                digest = encoded.digest()
                head = encoded.head
                _write_all(
                    fd,
                    b"".join((head[:DIGEST_OFFSET], digest, head[BODY_OFFSET:], *encoded.states)),
                )
                os.fsync(fd)
                return
            # Large state: hash on a helper thread while this one writes and syncs the
            # data, then patch the digest in and sync once more. The rename happens
            # only after that second fsync, so a crash never exposes a file without it.
            digest_box: list[bytes] = []
            hasher = threading.Thread(
                target=lambda: digest_box.append(encoded.digest()),
                name="grafos-checkpoint-digest",
            )
            hasher.start()
            try:
                _write_all(fd, encoded.head)
                for state in encoded.states:
                    _write_all(fd, state)
                os.fdatasync(fd)
            finally:
                hasher.join()
            if not digest_box:
                raise CheckpointError(f"computing the SHA-256 of {name!r} failed")
            if os.pwrite(fd, digest_box[0], DIGEST_OFFSET) != len(digest_box[0]):
                raise CheckpointError(f"short write of the digest of {name!r}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fsync_directory(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self, name: str, pipeline: str, sequence: int, token: int) -> Checkpoint | None:
        path = self.path / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            checkpoint = decode(data, origin=str(path))
            if (checkpoint.pipeline, checkpoint.sequence, checkpoint.fencing_token) != (
                pipeline,
                sequence,
                token,
            ):
                raise CorruptCheckpoint(
                    f"{path}: content is pipeline {checkpoint.pipeline!r} sequence "
                    f"{checkpoint.sequence} token {checkpoint.fencing_token}, "
                    "which does not match its file name"
                )
        except CorruptCheckpoint as exc:
            # Files can rot after we wrote or read them: stop trusting this one.
            self._verified.discard(name)
            logger.error("skipping checkpoint that fails verification: %s", exc)
            return None
        self._verified.add(name)
        return checkpoint

    def _retain(self, pipeline: str, checkpoints: list[tuple[int, int, str]]) -> None:
        # Count valid files newest first; only what lies beyond the keep-th valid one
        # goes, so the newest valid checkpoint is never deleted.
        valid = 0
        for sequence, token, name in checkpoints:
            if valid >= self.keep:
                self._unlink(name)
                self._verified.discard(name)
            elif self._is_valid(name, pipeline, sequence, token):
                valid += 1

    def _is_valid(self, name: str, pipeline: str, sequence: int, token: int) -> bool:
        return name in self._verified or self._read(name, pipeline, sequence, token) is not None

    def _unlink(self, name: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.path / name)


def _is_natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
