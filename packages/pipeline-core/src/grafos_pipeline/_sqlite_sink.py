"""A two-phase, fenced sink into an SQLite table: a transactional outbox on stdlib sqlite3."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._directory_sink import check_covered_sequence, check_sequence
from ._errors import (
    CheckpointError,
    CorruptOutput,
    InvalidPipeline,
    InvalidRecord,
    InvalidSink,
    StaleFencingToken,
)
from ._store import check_token

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_BUSY_TIMEOUT_MS = 30_000

# Every statement, with the table name filled in once. The name is checked against
# _TABLE (a plain identifier) before use and quoted; values always travel as parameters.
_STATEMENTS = {
    "create_rows": (
        'CREATE TABLE IF NOT EXISTS "{t}" (pipeline TEXT NOT NULL, '
        "sequence INTEGER NOT NULL, idx INTEGER NOT NULL, record TEXT NOT NULL, "
        "fencing_token INTEGER NOT NULL, PRIMARY KEY (pipeline, sequence, idx)) "
        "WITHOUT ROWID"
    ),
    "create_commits": (
        'CREATE TABLE IF NOT EXISTS "{t}_commits" (pipeline TEXT PRIMARY KEY, '
        "fencing_token INTEGER NOT NULL, published INTEGER NOT NULL)"
    ),
    "create_view": (
        'CREATE VIEW IF NOT EXISTS "{t}_committed" AS SELECT o.pipeline, '
        'o.sequence, o.idx, o.record FROM "{t}" AS o JOIN "{t}_commits" AS c '
        "ON o.pipeline = c.pipeline WHERE o.sequence <= c.published"
    ),
    "delete_from": 'DELETE FROM "{t}" WHERE pipeline = ? AND sequence >= ?',
    "delete_beyond": 'DELETE FROM "{t}" WHERE pipeline = ? AND sequence > ?',
    "insert": (
        'INSERT INTO "{t}" (pipeline, sequence, idx, record, fencing_token) VALUES (?, ?, ?, ?, ?)'
    ),
    "staged": 'SELECT 1 FROM "{t}" WHERE pipeline = ? AND sequence = ? LIMIT 1',
    "marker": 'SELECT fencing_token, published FROM "{t}_commits" WHERE pipeline = ?',
    "new_marker": (
        'INSERT INTO "{t}_commits" (pipeline, fencing_token, published) VALUES (?, ?, 0)'
    ),
    "set_token": 'UPDATE "{t}_commits" SET fencing_token = ? WHERE pipeline = ?',
    "set_published": 'UPDATE "{t}_commits" SET published = ? WHERE pipeline = ?',
    "read": 'SELECT record FROM "{t}_committed" WHERE pipeline = ? ORDER BY sequence, idx',
}


def json_text(record: Any) -> str:
    """The default encoder: compact JSON text."""
    return _JSON.encode(record)


class SqliteSink:
    """A pipeline's output as rows of an SQLite table, committed exactly once.

    Three objects in the database, named after ``table`` (``output`` by default):

    - ``output(pipeline, sequence, idx, record, fencing_token)``: one row per record;
      ``record`` is the encoded record (JSON text by default), ``idx`` its place in
      its sequence's output.
    - ``output_commits(pipeline, fencing_token, published)``: the sink's commit marker,
      one row per pipeline: the highest fencing token seen and the highest published
      sequence.
    - ``output_committed``: a view of the committed rows only.

    A row is committed when its ``sequence`` is at most its pipeline's ``published``.
    Rows beyond it are pre-committed: written, not yet covered by a checkpoint, and
    possibly discarded by a recovery. Other programs read committed output with::

        SELECT record FROM output_committed WHERE pipeline = ? ORDER BY sequence, idx

    A pre-commit writes its rows and raises the marker's token in one transaction
    (``BEGIN IMMEDIATE``, WAL, ``synchronous=FULL``): a crash leaves all of them or none.
    Publication moves ``published`` forward; recovery fences, publishes and deletes the
    rows beyond the restored checkpoint in one transaction. A token lower than the
    highest seen raises ``StaleFencingToken`` and writes nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str = "output",
        *,
        encode: Callable[[Any], str] = json_text,
        decode: Callable[[str], Any] = json.loads,
    ) -> None:
        given: object = table
        if (
            not isinstance(given, str)
            or _TABLE.fullmatch(given) is None
            or given.startswith("sqlite_")
        ):
            raise InvalidSink(
                f"table name {given!r} is not a plain SQL identifier: use 1 to 63 letters, "
                "digits or '_', not starting with a digit or 'sqlite_'"
            )
        for role, function in (("encode", encode), ("decode", decode)):
            if not callable(function):
                raise InvalidSink(f"{role} {function!r} is not callable")
        self.path = Path(path)
        self.table = table
        self._encode = encode
        self._decode = decode
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            os.fspath(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._sql = {name: sql.format(t=table) for name, sql in _STATEMENTS.items()}
        # Only a new database needs the write lock, so that opening a sink never waits
        # for a writer (a frozen one, say) in the middle of its transaction.
        names = (table, f"{table}_commits", f"{table}_committed")
        found = self._db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name IN (?, ?, ?)", names
        ).fetchone()
        if found[0] != len(names):
            with self._transaction() as db:
                for name in ("create_rows", "create_commits", "create_view"):
                    db.execute(self._sql[name])

    def __repr__(self) -> str:
        return f"SqliteSink({str(self.path)!r}, table={self.table!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the protocol -------------------------------------------------------------

    def pre_commit(self, pipeline: str, sequence: int, token: int, records: Sequence[Any]) -> None:
        _check_pipeline(pipeline)
        check_sequence(sequence)
        check_token(token)
        with self._transaction() as db:
            published = self._fence(db, pipeline, token)
            if sequence <= published:
                raise CheckpointError(
                    f"output of pipeline {pipeline!r} for sequence {sequence} is already "
                    "published: resume() before checkpointing"
                )
            # Anything at or beyond this sequence is an earlier attempt's: no checkpoint
            # covers it.
            db.execute(self._sql["delete_from"], (pipeline, sequence))
            # Rows are encoded as they are inserted: a bad record rolls all of them back.
            db.executemany(self._sql["insert"], self._rows(pipeline, sequence, token, records))

    def publish(self, pipeline: str, sequence: int) -> None:
        _check_pipeline(pipeline)
        check_sequence(sequence)
        with self._transaction() as db:
            row = db.execute(self._sql["marker"], (pipeline,)).fetchone()
            if row is not None and row[1] >= sequence:
                return  # published already (by a recovery, or an earlier call)
            staged: object = db.execute(self._sql["staged"], (pipeline, sequence)).fetchone()
            if staged is None:
                raise CheckpointError(
                    f"pipeline {pipeline!r} has no pre-committed output for sequence "
                    f"{sequence} in {self!r}"
                )
            db.execute(self._sql["set_published"], (sequence, pipeline))

    def recover(self, pipeline: str, sequence: int, token: int) -> None:
        _check_pipeline(pipeline)
        check_token(token)
        check_covered_sequence(sequence)
        with self._transaction() as db:
            published = self._fence(db, pipeline, token)
            if published > sequence:
                raise CorruptOutput(
                    f"output of pipeline {pipeline!r} is published up to sequence "
                    f"{published}, beyond the restored checkpoint {sequence}: the "
                    "checkpoints that cover it are missing, and replaying would duplicate it"
                )
            db.execute(self._sql["delete_beyond"], (pipeline, sequence))
            db.execute(self._sql["set_published"], (sequence, pipeline))

    # -- beyond the protocol ------------------------------------------------------

    def fence(self, pipeline: str, token: int) -> None:
        """Raise the pipeline's highest seen token to ``token``: older writers are refused."""
        _check_pipeline(pipeline)
        check_token(token)
        with self._transaction() as db:
            self._fence(db, pipeline, token)

    def highest_token(self, pipeline: str) -> int:
        """The highest fencing token this sink has seen for ``pipeline``."""
        _check_pipeline(pipeline)
        with self._lock:
            row = self._db.execute(self._sql["marker"], (pipeline,)).fetchone()
        return 0 if row is None else int(row[0])

    def read(self, pipeline: str) -> list[Any]:
        """Every committed record of ``pipeline``, in order (never a pre-committed one)."""
        _check_pipeline(pipeline)
        with self._lock:
            rows = self._db.execute(self._sql["read"], (pipeline,)).fetchall()
        try:
            return [self._decode(record) for (record,) in rows]
        except Exception as exc:
            raise CorruptOutput(f"{self!r}: a committed record does not decode: {exc!r}") from exc

    # -- internals ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            # IMMEDIATE takes the write lock first: the fence check and the write are
            # one atomic step across processes.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _fence(self, db: sqlite3.Connection, pipeline: str, token: int) -> int:
        """Check ``token`` against the marker and raise it; return the published sequence."""
        row = db.execute(self._sql["marker"], (pipeline,)).fetchone()
        if row is None:
            db.execute(self._sql["new_marker"], (pipeline, token))
            return 0
        highest, published = int(row[0]), int(row[1])
        if token < highest:
            raise StaleFencingToken(pipeline, token, highest)
        if token > highest:
            db.execute(self._sql["set_token"], (token, pipeline))
        return published

    def _rows(
        self, pipeline: str, sequence: int, token: int, records: Sequence[Any]
    ) -> Iterator[tuple[str, int, int, str, int]]:
        encode = self._encode
        for index, record in enumerate(records):
            try:
                text = encode(record)
            except Exception as exc:
                raise InvalidRecord(
                    f"record {index} of the output of pipeline {pipeline!r} for sequence "
                    f"{sequence} is a {type(record).__name__}, which cannot be encoded: {exc}"
                ) from exc
            if not isinstance(text, str):
                raise InvalidRecord(
                    f"record {index} of the output of pipeline {pipeline!r} for sequence "
                    f"{sequence} is a {type(record).__name__} whose encoding is a "
                    f"{type(text).__name__}, not str"
                )
            yield (pipeline, sequence, index, text, token)


def _check_pipeline(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidPipeline(f"pipeline name {name!r} is not a non-empty string")
    return name
