"""A durable, verified, fenced checkpoint store in a directory (POSIX)."""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ._checkpoint import DIGEST_OFFSET, Checkpoint, EncodedCheckpoint, decode, encode
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
# The digest lives in the first page; writeback is started early for the rest only.
_PAGE = 4096
# Temporary file names: unique per process (the pid) and per commit (the counter).
# Uniqueness across crashes is not needed: leftovers are removed under the lock
# before a commit writes, and the file is opened with O_EXCL.
_TEMP_COUNTER = itertools.count()


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
        # The hot path joins plain strings, not Paths.
        self._dir = os.fspath(self.path)
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
        sequence, token = checkpoint.sequence, checkpoint.fencing_token
        final = f"{pipeline}.{sequence:020d}.{token:020d}.ckpt"
        with self._locked(pipeline):
            listing = self._list(pipeline)
            highest = listing.highest_token
            if token < highest:
                raise StaleFencingToken(pipeline, token, highest)
            for old_sequence, old_token, name in listing.checkpoints:
                if old_sequence < sequence:
                    break
                # A newer file that fails verification may be superseded.
                if self._is_valid(name, pipeline, old_sequence, old_token):
                    raise sequence_not_after(checkpoint, old_sequence)
            # Under the lock no other writer is mid-write: these are crash leftovers.
            for name in listing.temp_files:
                self._unlink(name)
            # A set: the new file may replace a corrupt one of the same name.
            fresh = (sequence, token, final)
            retired = self._retired(
                pipeline, final, sorted({fresh, *listing.checkpoints}, reverse=True)
            )
            # Retention while the new file is written and synced, not after it, when
            # that is safe. Every file in ``retired`` lies beyond the keep-th valid file,
            # counting the new one as valid and first (all valid stored files are older:
            # checked above). With keep >= 2 the keep-1 newest valid stored files stay,
            # the previous newest valid checkpoint among them. So a crash at any instant
            # (before the new file is durable, or after) leaves the previous or the new
            # checkpoint readable, whatever order the disk applies the unlinks and the
            # rename in. The new file's own name is never in ``retired`` (it is first),
            # and the lock excludes every other writer. If the commit then fails, the
            # retired files are gone anyway: the newest valid checkpoint still is not.
            # With keep == 1 the only file kept is the new one, so nothing may go before
            # the rename and the directory fsync have made it durable.
            early = retired if self.keep >= 2 else []
            temp = f"{self._dir}/.{pipeline}.{os.getpid()}-{next(_TEMP_COUNTER)}.tmp"
            try:
                unlink_error = self._write_synced(temp, encoded, early)
                os.replace(temp, f"{self._dir}/{final}")
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            # fsync the directory, or the rename may not survive a crash.
            self._fsync_directory()
            self._verified.add(final)
            for name in retired:
                self._verified.discard(name)
            if unlink_error is not None:
                raise unlink_error
            if not early:
                for name in retired:
                    self._unlink(name)

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
                f"{self._dir}/.{pipeline}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
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
        with os.scandir(self._dir) as entries:
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

    def _write_synced(
        self, path: str, encoded: EncodedCheckpoint, retire: list[str]
    ) -> OSError | None:
        """Write ``encoded`` to a new file at ``path`` and fsync it, digest included.

        The files named in ``retire`` are unlinked meanwhile, off the critical path;
        an error doing so is returned, not raised, for after the commit.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            if encoded.size < _OVERLAP_THRESHOLD:
                content = encoded.content()
                if not retire:
                    write_all(fd, content)
                    os.fsync(fd)
                    return None
                # The unlinks run on a helper thread while this one waits on the disk.
                job = HELPERS.start(partial(self._unlink_all, retire))
                try:
                    write_all(fd, content)
                    os.fsync(fd)
                finally:
                    error = job.wait()
                if error is not None:
                    raise error
                return job.result if isinstance(job.result, OSError) else None
            # Large state: a helper thread hashes while this one writes the data (with a
            # zeroed digest), starts its writeback, and does the retention unlinks. Then
            # the digest is patched in and ONE fsync makes data and digest durable. The
            # rename happens only after that fsync, so a crash never exposes a file
            # without its digest (nor a file that fails verification as the newest).
            job = HELPERS.start(encoded.digest)
            try:
                write_all(fd, encoded.head)
                for state in encoded.states:
                    write_all(fd, state)
                start_writeback(fd, _PAGE, encoded.size - _PAGE)
                unlink_error = self._unlink_all(retire)
            finally:
                error = job.wait()
            if error is not None:
                raise CheckpointError(f"computing the SHA-256 of {path!r} failed") from error
            digest = job.result
            if not isinstance(digest, bytes) or os.pwrite(fd, digest, DIGEST_OFFSET) != len(digest):
                raise CheckpointError(f"short write of the digest of {path!r}")
            os.fsync(fd)
            return unlink_error
        finally:
            os.close(fd)

    def _unlink_all(self, names: list[str]) -> OSError | None:
        error: OSError | None = None
        for name in names:
            try:
                os.unlink(f"{self._dir}/{name}")
            except FileNotFoundError:
                pass
            except OSError as exc:
                error = error or exc
        return error

    def _fsync_directory(self) -> None:
        fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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

    def _retired(
        self, pipeline: str, fresh: str, checkpoints: list[tuple[int, int, str]]
    ) -> list[str]:
        # Count valid files newest first, the one being committed (``fresh``, not yet
        # written) included; only what lies beyond the keep-th valid one goes, so the
        # newest valid checkpoint is never deleted.
        retired: list[str] = []
        valid = 0
        for sequence, token, name in checkpoints:
            if valid >= self.keep:
                retired.append(name)
            elif name == fresh or self._is_valid(name, pipeline, sequence, token):
                valid += 1
        return retired

    def _is_valid(self, name: str, pipeline: str, sequence: int, token: int) -> bool:
        return name in self._verified or self._read(name, pipeline, sequence, token) is not None

    def _unlink(self, name: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(f"{self._dir}/{name}")


def _is_natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Job:
    """One call run on a helper thread; ``wait`` returns the exception it raised, if any."""

    __slots__ = ("_done", "_fn", "_inbox", "error", "result")

    def __init__(self, fn: Callable[[], object], inbox: queue.SimpleQueue[_Job]) -> None:
        self._fn = fn
        self._inbox = inbox
        self.result: object = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the waiter
            self.error = exc
        finally:
            self._done.release()

    def wait(self) -> BaseException | None:
        """Block until the call has finished; its helper is then free again."""
        self._done.acquire()
        HELPERS.release(self._inbox)
        return self.error


class _Helpers:
    """Idle daemon threads, reused across commits: starting a thread per commit costs
    more than the work it takes off the critical path. A commit always waits for its
    job before it returns, so nothing runs on behalf of a commit after it."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[_Job]] = []
        # A forked child has none of the parent's threads.
        os.register_at_fork(after_in_child=self._idle.clear)

    def start(self, fn: Callable[[], object]) -> _Job:
        try:
            inbox = self._idle.pop()
        except IndexError:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=_serve, args=(inbox,), name="grafos-checkpoint-helper", daemon=True
            ).start()
        job = _Job(fn, inbox)
        inbox.put(job)
        return job

    def release(self, inbox: queue.SimpleQueue[_Job]) -> None:
        self._idle.append(inbox)


def _serve(inbox: queue.SimpleQueue[_Job]) -> None:
    while True:
        inbox.get().run()


HELPERS = _Helpers()


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range: list[Callable[[int, int, int, int], int] | None] = []
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range out now, without waiting for it.

    Only a hint (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``): it gives no
    durability at all, the fsync that follows does. It lets the disk work while the
    digest is computed, so that fsync has less left to wait for.
    """
    if length <= 0:
        return
    if not _sync_file_range:
        _sync_file_range.append(_load_sync_file_range())
    function = _sync_file_range[0]
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # errors: the fsync reports them
