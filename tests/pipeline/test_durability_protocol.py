"""The order of the durable commit: temp file in the same directory, fsync, rename,
fsync of the directory. A killed process cannot show a missing fsync (the page
cache survives it), so this records the real system calls, which still run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from grafos_pipeline import Checkpoint, DirectoryCheckpointStore


class SyscallLog:
    """Wraps os.open/fsync/replace/close to record what they touched, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        self.paths: dict[int, str] = {}
        real_open, real_fsync, real_replace, real_close = os.open, os.fsync, os.replace, os.close

        def spy_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            fd = real_open(path, flags, *args, **kwargs)
            self.paths[fd] = os.fspath(path)
            return fd

        def spy_fsync(fd: int) -> None:
            real_fsync(fd)
            self.events.append(("fsync", self.paths.get(fd, "?")))

        def spy_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            real_replace(src, dst, *args, **kwargs)
            self.events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))

        def spy_close(fd: int) -> None:
            self.paths.pop(fd, None)
            real_close(fd)

        monkeypatch.setattr(os, "open", spy_open)
        monkeypatch.setattr(os, "fsync", spy_fsync)
        monkeypatch.setattr(os, "replace", spy_replace)
        monkeypatch.setattr(os, "close", spy_close)


@pytest.mark.parametrize("size", [1024, 1 << 20], ids=["small", "large-overlapped-hash"])
def test_commit_syncs_the_file_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    store = DirectoryCheckpointStore(tmp_path, keep=3)
    checkpoint = Checkpoint("p", 1, 1, None, 0, {"s": os.urandom(size)}, created_at=0.0)
    log = SyscallLog(monkeypatch)
    store.commit(checkpoint)
    monkeypatch.undo()

    replaces = [i for i, (op, _) in enumerate(log.events) if op == "replace"]
    assert len(replaces) == 1, log.events
    at = replaces[0]
    source, _, target = log.events[at][1].partition(" -> ")
    assert Path(target) == tmp_path / f"p.{1:020d}.{1:020d}.ckpt"
    assert Path(source).parent == tmp_path, "the temp file lives in the same directory"
    # The temp file's contents are on disk before the rename makes them visible...
    assert ("fsync", source) in log.events[:at], log.events
    # ...and the rename itself is on disk before commit returns.
    assert ("fsync", str(tmp_path)) in log.events[at + 1 :], log.events
    assert store.latest("p") == checkpoint
