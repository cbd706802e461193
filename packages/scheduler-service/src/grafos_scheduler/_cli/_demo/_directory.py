"""The demo's directory: claimed only when new, empty or already the demo's own.

The demo writes the same names that ``serve`` is shown with (``scheduler.db``,
``tokens.toml``), so it must never run in a directory that holds someone's real store.
It marks each directory it claims with :data:`MARKER`; it refuses a directory that is
neither empty nor marked, before touching anything, and on a rerun it removes only the
files it writes itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MARKER", "DemoDirectoryRefused", "claim_directory"]

MARKER = ".grafos-demo"
# Everything a run writes; a rerun clears these and nothing else.
_FILES = (
    "scheduler.db",
    "scheduler.db-wal",
    "scheduler.db-shm",
    "scheduler.db.lock",
    "tokens.toml",
    "service.log",
)
_TREES = ("checkpoints", "output")
_LOG_GLOB = "worker-*.log"


class DemoDirectoryRefused(Exception):
    """The directory is not the demo's to use; the message says why and what to do."""


def claim_directory(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` a fresh demo directory, or raise :class:`DemoDirectoryRefused`."""
    directory = Path(path)
    shown = str(path)
    if directory.exists() and not directory.is_dir():
        raise DemoDirectoryRefused(f"--dir {shown!r} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoDirectoryRefused(f"--dir {shown!r} cannot be created: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DemoDirectoryRefused(f"--dir {shown!r} is not writable")
    marker = directory / MARKER
    entries = sorted(p.name for p in directory.iterdir())
    if entries and not marker.is_file():
        listed = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise DemoDirectoryRefused(
            f"--dir {shown!r} is not empty ({listed}) and not a demo directory (no {MARKER} "
            "file): the demo would overwrite what is there. Give a new or empty directory"
        )
    for name in _FILES:
        (directory / name).unlink(missing_ok=True)
    for log in directory.glob(_LOG_GLOB):
        log.unlink(missing_ok=True)
    for name in _TREES:
        shutil.rmtree(directory / name, ignore_errors=True)
    marker.write_text(
        "This directory belongs to `grafos-scheduler demo`, which may clear it on its next run.\n",
        encoding="utf-8",
    )
    return directory
