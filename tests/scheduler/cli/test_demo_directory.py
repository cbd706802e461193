"""The demo claims only a new, empty or marked directory, and deletes only its own files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grafos_scheduler import Scheduler, SqliteStore, TokenConfig
from support.internals import MARKER, DemoConfig, DemoDirectoryRefused, claim_directory, run_demo

from .conftest import one_line_error, run_cli


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def test_a_live_looking_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    store_dir = tmp_path / "prod"
    store_dir.mkdir()
    with Scheduler(2, SqliteStore(store_dir / "scheduler.db"), autostart=False) as s:
        s.acquire("nightly", "worker-1", 0, 1, 60.0)
    TokenConfig.generate(["worker-1"]).dump(store_dir / "tokens.toml")
    tokens_before = (store_dir / "tokens.toml").read_bytes()
    db_before = (store_dir / "scheduler.db").read_bytes()
    before = _snapshot(store_dir)

    result = run_cli("demo", "--size", "small", "--dir", str(store_dir))

    line = one_line_error(result, 2, "not empty")
    assert "scheduler.db" in line
    assert "tokens.toml" in line
    assert MARKER in line
    assert _snapshot(store_dir) == before
    assert (store_dir / "tokens.toml").read_bytes() == tokens_before
    assert (store_dir / "scheduler.db").read_bytes() == db_before
    assert not (store_dir / MARKER).exists()
    assert result.stdout == ""


def test_a_directory_with_any_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoDirectoryRefused, match="not empty"):
        claim_directory(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_new_and_empty_directories_are_claimed_and_marked(tmp_path: Path) -> None:
    fresh = claim_directory(tmp_path / "new" / "deeper")
    assert (fresh / MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim_directory(empty) / MARKER).is_file()


def test_a_rerun_clears_only_what_the_demo_writes(tmp_path: Path) -> None:
    directory = claim_directory(tmp_path / "demo")
    written = [
        "scheduler.db",
        "scheduler.db-wal",
        "scheduler.db-shm",
        "scheduler.db.lock",
        "tokens.toml",
        "service.log",
        "worker-ingest-1.log",
    ]
    for name in written:
        (directory / name).write_text("old run")
    (directory / "checkpoints").mkdir()
    (directory / "checkpoints" / "x.ckpt").write_text("old run")
    (directory / "keep-me.txt").write_text("the user's")

    claim_directory(directory)

    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted([MARKER, "keep-me.txt"])
    assert (directory / "keep-me.txt").read_text() == "the user's"


def test_the_demo_refuses_before_it_writes_anything(tmp_path: Path) -> None:
    # run_demo itself (not only the command line) claims its directory first.
    (tmp_path / "scheduler.db").write_bytes(b"someone's data")
    with pytest.raises(DemoDirectoryRefused):
        run_demo(DemoConfig.for_size("small").with_overrides(directory=str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == ["scheduler.db"]
    assert (tmp_path / "scheduler.db").read_bytes() == b"someone's data"


def test_a_run_gives_the_callers_logging_back(tmp_path: Path) -> None:
    import logging

    logger = logging.getLogger("grafos_scheduler")
    before = (logger.level, logger.propagate, list(logger.handlers))
    config = DemoConfig.for_size("small").with_overrides(directory=str(tmp_path), timeout=0.5)
    assert run_demo(config) is False  # timed out, as meant: only the logging matters here
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
