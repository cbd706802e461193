"""SqliteStore: the embedded default SchedulerStore, on the standard library's sqlite3."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import msgspec

from .._domain._audit import GENESIS_HASH, AuditRecord
from .._domain._change import Change
from .._domain._errors import (
    SchedulerError,
    StoreClosed,
    StoreError,
    StoreFailed,
    StoreSuperseded,
)
from .._domain._ids import id_from_hex, id_hex
from .._domain._lease import LeaseState
from .._domain._rows import LeaseRow, TicketRow
from .._store._group_sync import GroupSync
from .._store._protocol import write_change

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    lease_id TEXT PRIMARY KEY,
    ticket_id TEXT UNIQUE,
    job TEXT NOT NULL,
    holder TEXT NOT NULL,
    priority INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    ttl REAL NOT NULL,
    fencing_token INTEGER NOT NULL,
    state TEXT NOT NULL,
    epoch TEXT NOT NULL,
    granted_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    granted_wall REAL NOT NULL,
    expires_wall REAL NOT NULL,
    ended_wall REAL,
    preempt_cause TEXT,
    preempt_requested_wall REAL,
    preempt_deadline_wall REAL,
    end_cause TEXT,
    hold_reason TEXT,
    hold_set_wall REAL,
    hold_expires_at REAL,
    hold_expires_wall REAL,
    grace REAL NOT NULL DEFAULT 0,
    checkpoint_wall REAL,
    work_lost_records INTEGER,
    work_lost_seconds REAL
);
-- Every write of a lease row writes each of its indexes too. leases_by_state was
-- the leading column of leases_by_state_grant, which serves its queries: gone.
DROP INDEX IF EXISTS leases_by_state;
-- Keyset pages of the lease list in grant order: all, by state, by holder.
CREATE INDEX IF NOT EXISTS leases_by_grant ON leases (granted_wall, lease_id);
CREATE INDEX IF NOT EXISTS leases_by_state_grant ON leases (state, granted_wall, lease_id);
CREATE INDEX IF NOT EXISTS leases_by_holder_grant ON leases (holder, granted_wall, lease_id);
-- Belt and braces for "at most one ACTIVE lease per job".
CREATE UNIQUE INDEX IF NOT EXISTS one_active_lease_per_job ON leases (job) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS fencing_tokens (
    job TEXT PRIMARY KEY,
    last_token INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tickets (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id TEXT NOT NULL UNIQUE,
    job TEXT NOT NULL,
    holder TEXT NOT NULL,
    priority INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    ttl REAL NOT NULL,
    epoch TEXT NOT NULL,
    requested_at REAL NOT NULL,
    requested_wall REAL NOT NULL,
    grace REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    lease_id TEXT,
    job TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

_LEASE_COLUMNS = (
    "lease_id, ticket_id, job, holder, priority, slots, ttl, fencing_token, state, epoch, "
    "granted_at, expires_at, granted_wall, expires_wall, ended_wall, preempt_cause, "
    "preempt_requested_wall, preempt_deadline_wall, end_cause, hold_reason, hold_set_wall, "
    "hold_expires_at, hold_expires_wall, grace, checkpoint_wall, work_lost_records, "
    "work_lost_seconds"
)
# Columns added after schema version 1 was first written, as (table, column, type):
# nullable or with a default, so a writer adds them to an older file when it opens it
# (no version change).
_ADDED_COLUMNS = (
    ("leases", "end_cause", "TEXT"),
    ("leases", "hold_reason", "TEXT"),
    ("leases", "hold_set_wall", "REAL"),
    ("leases", "hold_expires_at", "REAL"),
    ("leases", "hold_expires_wall", "REAL"),
    ("leases", "grace", "REAL NOT NULL DEFAULT 0"),
    ("leases", "checkpoint_wall", "REAL"),
    ("leases", "work_lost_records", "INTEGER"),
    ("leases", "work_lost_seconds", "REAL"),
    ("tickets", "grace", "REAL NOT NULL DEFAULT 0"),
)
_TICKET_COLUMNS = (
    "position, ticket_id, job, holder, priority, slots, ttl, epoch, requested_at, "
    "requested_wall, grace"
)
_AUDIT_COLUMNS = "seq, time, kind, lease_id, job, data, prev_hash, hash"


def _sql(template: str) -> str:
    # Only module constants are substituted, never a caller's value.
    return template.format(
        lease=_LEASE_COLUMNS,
        ticket=_TICKET_COLUMNS,
        audit=_AUDIT_COLUMNS,
        lease_marks=", ".join("?" * 27),
    )


_INSERT_LEASE = _sql("INSERT INTO leases ({lease}) VALUES ({lease_marks})")
_SELECT_ACTIVE = _sql("SELECT {lease} FROM leases WHERE state = 'active' ORDER BY granted_wall")
_SELECT_TICKETS = _sql("SELECT {ticket} FROM tickets ORDER BY priority DESC, position")
_INSERT_AUDIT = _sql("INSERT INTO audit ({audit}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT_LEASE = _sql("SELECT {lease} FROM leases WHERE lease_id = ?")
_SELECT_LEASE_OF_TICKET = _sql("SELECT {lease} FROM leases WHERE ticket_id = ?")
_SELECT_LEASES = _sql("SELECT {lease} FROM leases ORDER BY granted_wall, rowid")
_SELECT_LEASES_IN = _sql("SELECT {lease} FROM leases WHERE state = ? ORDER BY granted_wall, rowid")
_SELECT_AUDIT = _sql("SELECT {audit} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?")
_COUNT_BY_STATE = "SELECT state, COUNT(*) FROM leases GROUP BY state"
_SELECT_HEAD = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
_SELECT_COUNTER = "SELECT last_token FROM fencing_tokens WHERE job = ?"
# The counter moves only forward: the WHERE leaves a lower or equal token unwritten
# (no row changes), so the check and the write are one statement.
_ADVANCE_COUNTER = (
    "INSERT INTO fencing_tokens (job, last_token) VALUES (?1, ?2) "
    "ON CONFLICT (job) DO UPDATE SET last_token = excluded.last_token "
    "WHERE excluded.last_token > fencing_tokens.last_token"
)
_SELECT_CURSOR = "SELECT granted_wall, lease_id FROM leases WHERE lease_id = ?"


_PAGE_TEMPLATE = (
    "SELECT {lease} FROM leases WHERE {where} ORDER BY granted_wall, lease_id LIMIT :limit"
)


def _page_sql(*, state: bool, holder: bool, after: bool) -> str:
    """The keyset query for one page; only constant fragments are joined, never values."""
    clauses = ["1"]
    if state:
        clauses.append("state = :state")
    if holder:
        clauses.append("holder = :holder")
    if after:
        clauses.append("(granted_wall, lease_id) > (:after_wall, :after_id)")
    return _PAGE_TEMPLATE.format(lease=_LEASE_COLUMNS, where=" AND ".join(clauses))


_SELECT_PAGE = {
    (state, holder, after): _page_sql(state=state, holder=holder, after=after)
    for state in (False, True)
    for holder in (False, True)
    for after in (False, True)
}


__all__ = ["SCHEMA_VERSION", "SqliteStore", "StoreClosed", "StoreError", "StoreFailed"]

try:
    import fcntl

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover - not POSIX: no owner lock
    _HAVE_FLOCK = False


def _store_error(path: str, exc: BaseException) -> StoreError:
    return StoreError(f"store {path!r}: {type(exc).__name__}: {exc}", path)


def _is_memory(path: str) -> bool:
    return path == ":memory:" or path == "" or path.startswith("file::memory:")


def _lock_owner(path: str) -> IO[bytes] | None:
    """Take the exclusive owner lock ``<path>.lock``; StoreError if another holds it.

    ``flock`` locks belong to the open file, so a second store in the same process is
    refused just like one in another process. The lock goes with the file's close
    (or the process's end): it cannot be left stale.
    """
    if not _HAVE_FLOCK or _is_memory(path):
        return None
    lock_path = path + ".lock"
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 - held for the store's lifetime
    except OSError as exc:
        raise StoreError(
            f"store {path!r}: cannot open its lock file {lock_path!r}: {exc}", path
        ) from exc
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreError(
            f"store {path!r} is in use by another scheduler (it holds {lock_path!r}); "
            "one scheduler process owns a SQLite store",
            path,
        ) from None
    return handle


# The store that owns each database file in this process. A newer store on the same
# file takes the owner lock over (a restart within one process, e.g. in tests, may not
# have closed the old one); the older store is superseded and may no longer write.
_OWNERS: weakref.WeakValueDictionary[str, SqliteStore] = weakref.WeakValueDictionary()
_OWNERS_LOCK = threading.Lock()


def _lease_params(row: LeaseRow) -> tuple[Any, ...]:
    return (
        id_hex(row.lease_id),
        None if row.ticket_id is None else id_hex(row.ticket_id),
        row.job,
        row.holder,
        row.priority,
        row.slots,
        row.ttl,
        row.fencing_token,
        row.state.value,
        row.epoch,
        row.granted_at,
        row.expires_at,
        row.granted_wall,
        row.expires_wall,
        row.ended_wall,
        row.preempt_cause,
        row.preempt_requested_wall,
        row.preempt_deadline_wall,
        row.end_cause,
        row.hold_reason,
        row.hold_set_wall,
        row.hold_expires_at,
        row.hold_expires_wall,
        row.grace,
        row.checkpoint_wall,
        row.work_lost_records,
        row.work_lost_seconds,
    )


def _lease_row(r: tuple[Any, ...]) -> LeaseRow:
    return LeaseRow(
        lease_id=id_from_hex(r[0]),
        ticket_id=None if r[1] is None else id_from_hex(r[1]),
        job=r[2],
        holder=r[3],
        priority=r[4],
        slots=r[5],
        ttl=r[6],
        fencing_token=r[7],
        state=LeaseState(r[8]),
        epoch=r[9],
        granted_at=r[10],
        expires_at=r[11],
        granted_wall=r[12],
        expires_wall=r[13],
        ended_wall=r[14],
        preempt_cause=r[15],
        preempt_requested_wall=r[16],
        preempt_deadline_wall=r[17],
        end_cause=r[18],
        hold_reason=r[19],
        hold_set_wall=r[20],
        hold_expires_at=r[21],
        hold_expires_wall=r[22],
        grace=r[23],
        checkpoint_wall=r[24],
        work_lost_records=r[25],
        work_lost_seconds=r[26],
    )


def _ticket_row(r: tuple[Any, ...]) -> TicketRow:
    return TicketRow(
        position=r[0],
        ticket_id=id_from_hex(r[1]),
        job=r[2],
        holder=r[3],
        priority=r[4],
        slots=r[5],
        ttl=r[6],
        epoch=r[7],
        requested_at=r[8],
        requested_wall=r[9],
        grace=r[10],
    )


def _audit_record(r: tuple[Any, ...]) -> AuditRecord:
    # A tampered row must still come back as a record, so verify() can name its seq.
    try:
        data = json.loads(r[5])
        if not isinstance(data, dict):
            data = {"unparseable": r[5]}
    except (TypeError, ValueError):
        data = {"unparseable": r[5]}
    try:
        lease_id = None if r[3] is None else id_from_hex(str(r[3]))
    except ValueError:
        lease_id = None
        data = {"unparseable_lease_id": str(r[3]), "data": data}
    return AuditRecord(r[0], r[1], str(r[2]), lease_id, r[4], data, str(r[6]), str(r[7]))


def _canonical_data(data: Mapping[str, Any]) -> str:
    # Stored text, read back with json.loads: the chain hashes the domain's own encoding.
    return _encode_sorted(data).decode()


_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def _lacking_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The added columns a file written before them lacks."""
    present = {
        table: {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        for table in {t for t, _, _ in _ADDED_COLUMNS}
    }
    return [c for c in _ADDED_COLUMNS if c[1] not in present[c[0]]]


def _add_columns(conn: sqlite3.Connection) -> None:
    """Add the columns a file written before them lacks."""
    for table, name, kind in _lacking_columns(conn):
        # Names and types are module constants, never a caller's value.
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class _SqliteTransaction:
    """StoreTransaction on one connection, valid only inside its ``with`` block."""

    __slots__ = ("_conn", "head", "open")

    def __init__(self, conn: sqlite3.Connection, head: tuple[int, str] | None = None) -> None:
        self._conn = conn
        self.open = True
        # The head the open transaction wrote last, if it wrote one: nobody else can
        # write while it holds the write lock, so that is what a read would return.
        self.head = head

    def _c(self) -> sqlite3.Connection:
        if not self.open:
            raise SchedulerError("this store transaction has already ended")
        return self._conn

    def audit_head(self) -> tuple[int, str]:
        conn = self._c()
        if self.head is not None:
            return self.head
        head = conn.execute(_SELECT_HEAD).fetchone()
        return (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))

    def fencing_token(self, job: str) -> int:
        row = self._c().execute(_SELECT_COUNTER, (job,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_fencing_token(self, job: str, token: int) -> bool:
        cur = self._c().execute(_ADVANCE_COUNTER, (job, token))
        return cur.rowcount == 1

    def insert_lease(self, row: LeaseRow) -> None:
        self._c().execute(
            _INSERT_LEASE,
            _lease_params(row),
        )

    def update_lease(self, row: LeaseRow) -> None:
        # Only an ACTIVE row changes: an end state never goes back, whatever the caller.
        params = _lease_params(row)
        cur = self._c().execute(
            "UPDATE leases SET ticket_id = ?, job = ?, holder = ?, priority = ?, slots = ?, "
            "ttl = ?, fencing_token = ?, state = ?, epoch = ?, granted_at = ?, expires_at = ?, "
            "granted_wall = ?, expires_wall = ?, ended_wall = ?, preempt_cause = ?, "
            "preempt_requested_wall = ?, preempt_deadline_wall = ?, end_cause = ?, "
            "hold_reason = ?, hold_set_wall = ?, hold_expires_at = ?, hold_expires_wall = ?, "
            "grace = ?, checkpoint_wall = ?, work_lost_records = ?, work_lost_seconds = ? "
            "WHERE lease_id = ? AND state = 'active'",
            (*params[1:], params[0]),
        )
        if cur.rowcount != 1:
            raise StoreError(f"lease {params[0]} is not an ACTIVE lease in the store")

    def insert_ticket(self, row: TicketRow) -> None:
        self._c().execute(
            "INSERT INTO tickets (position, ticket_id, job, holder, priority, slots, ttl, "
            "epoch, requested_at, requested_wall, grace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.position,
                id_hex(row.ticket_id),
                row.job,
                row.holder,
                row.priority,
                row.slots,
                row.ttl,
                row.epoch,
                row.requested_at,
                row.requested_wall,
                row.grace,
            ),
        )

    def delete_ticket(self, ticket_id: int) -> None:
        self._c().execute("DELETE FROM tickets WHERE ticket_id = ?", (id_hex(ticket_id),))

    def append_audit(self, record: AuditRecord) -> None:
        self._c().execute(
            _INSERT_AUDIT,
            (
                record.seq,
                record.time,
                record.kind,
                None if record.lease_id is None else id_hex(record.lease_id),
                record.job,
                _canonical_data(record.data),
                record.prev_hash,
                record.hash,
            ),
        )


class SqliteStore:
    """The embedded SchedulerStore: one SQLite file in WAL mode.

    Writes run in ``BEGIN IMMEDIATE`` transactions with a busy timeout, so another
    connection holding the write lock delays rather than fails a write. They are
    group-committed: the changes written before a :meth:`wait_durable` share one
    transaction, whose COMMIT writes their WAL frames without waiting for the disk
    (``synchronous=NORMAL``), and it then fsyncs the WAL once for every commit
    written before it (see ``_group_sync``), so a grant acknowledged after
    ``wait_durable`` survives power loss. Another connection sees a change once its
    group committed. A failed fsync stops the store for good
    (:class:`StoreFailed`). One connection is shared under a lock, which makes the
    store thread-safe. Pass ``":memory:"`` for a throwaway store (nothing survives
    ``close()``, and nothing is synced).

    One scheduler per file: the scheduler keeps the ACTIVE leases in memory. A store
    that writes holds an exclusive lock on ``<path>.lock`` until it is closed, and a second store on
    the same file (in this process or another) raises :class:`StoreError` at its first
    write (a Scheduler writes when it starts). Reading needs no lock. Several
    replicas need a store with row locks (PostgreSQL). Every ``sqlite3`` failure
    surfaces as a :class:`StoreError` naming the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        read_only: bool = False,
    ) -> None:
        """Open (and with ``read_only=False`` create) the store in ``path``.

        ``read_only=True`` opens an existing file with SQLite's ``mode=ro``: nothing is
        created or changed, and a file that is not a store of this schema version is
        refused with :class:`SchedulerError` (for ``audit verify`` and ``leases list``).
        """
        self._path = os.fspath(path)
        self._lock = threading.RLock()
        self._wal_fd: int | None = None
        self._sync = GroupSync(self._fsync_wal, self._path)
        self._in_transaction = False
        # The changes written into the open group transaction, not yet committed, and
        # the audit head the last of them wrote.
        self._group: list[Change] = []
        self._group_head: tuple[int, str] | None = None
        # The owner lock is taken by the first write transaction, so that read-only
        # users (``audit verify``, ``leases list``) can open a store a scheduler owns.
        self._owner: IO[bytes] | None = None
        self._owned = False
        self._superseded = False
        try:
            if read_only:
                uri = "file:" + urllib.parse.quote(os.path.abspath(self._path)) + "?mode=ro"
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    self._path,
                    timeout=busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error as exc:
            raise _store_error(self._path, exc) from exc
        if read_only:
            try:
                self._check_schema(conn)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(self._path, exc) from exc
                raise
            self._conn: sqlite3.Connection | None = conn
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # NORMAL in WAL mode: a commit does not fsync; wait_durable() does, once
            # for every commit written before it. (Checkpoints still sync the WAL
            # before copying it into the database, and the database after.)
            conn.execute(
                "PRAGMA synchronous = NORMAL" if mode == "wal" else "PRAGMA synchronous = FULL"
            )
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_columns(conn)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            elif row[0] != SCHEMA_VERSION:
                raise SchedulerError(
                    f"store {self._path!r} has schema version {row[0]!r}, expected {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
            if mode == "wal":
                self._open_wal()
                self._sync.wrote()  # the schema, if it was new, is durable before use
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                conn.close()
                self._close_wal()
            if isinstance(exc, sqlite3.Error):
                raise _store_error(self._path, exc) from exc
            raise
        self._conn = conn
        self.wait_durable()

    # -- durability: the group fsync of the WAL ------------------------------------

    def _open_wal(self) -> None:
        wal = self._path + "-wal"
        self._wal_fd = os.open(wal, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        # The WAL file's name must survive a crash too: sync its directory once.
        directory = os.open(os.path.dirname(os.path.abspath(wal)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _close_wal(self) -> None:
        fd, self._wal_fd = self._wal_fd, None
        if fd is not None:
            os.close(fd)

    def _fsync_wal(self) -> None:
        """fsync the WAL file (GroupSync calls it outside every lock)."""
        fd = self._wal_fd
        if fd is None:
            return  # an in-memory database: nothing to sync
        try:
            same = os.stat(self._path + "-wal").st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            # SQLite removed and recreated the WAL (it does when a last connection
            # closes): the old one was checkpointed and synced; sync the new one.
            with self._lock:
                self._close_wal()
                self._open_wal()
                fd = self._wal_fd
            assert fd is not None
        os.fsync(fd)

    @property
    def durable(self) -> bool:
        """True when every commit written so far is durable (nothing waits for an fsync)."""
        return not self._group and self._sync.durable

    def wait_durable(self) -> None:
        """Return once every commit written before this call is durable.

        Commits the open group transaction, then one fsync serves every commit
        waiting for it. Call it outside any lock that other writers need. Raises
        :class:`StoreFailed` if that COMMIT or fsync failed; the store then refuses
        every further write.
        """
        self._end_group()
        self._sync.wait()

    def _end_group(self) -> None:
        """COMMIT the open group transaction, if there is one.

        The scheduler applied the group's changes to memory when :meth:`commit`
        returned. A COMMIT that fails is tried once more, the group written again in
        a fresh transaction; if that fails too, memory is ahead of the file and the
        store stops (:class:`StoreFailed`), as it does when an fsync fails.
        """
        with self._lock:
            if not self._group:
                return
            conn = self._connection()
            if self._sync.failed is not None:
                # Nothing is written after a failed fsync; nobody was told of these.
                self._rollback(conn)
                self._group = []
                return
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                self._rollback(conn)
                self._rewrite_group(conn)
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(conn)
                    self._lose_group(exc)
            # Counted before the group empties: ``durable`` (no lock) must not read
            # True between the two, before the fsync.
            self._sync.wrote()
            self._group = []

    def _rewrite_group(self, conn: sqlite3.Connection) -> None:
        """Write the group's changes again in a new transaction, or stop the store."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            for change in self._group:
                self._write(conn, change, None)
        except BaseException as exc:
            self._rollback(conn)
            self._lose_group(exc)

    def _lose_group(self, exc: BaseException) -> NoReturn:
        failure = StoreFailed(
            f"store {self._path!r}: {len(self._group)} written change(s) could not be "
            f"committed ({type(exc).__name__}: {exc}); the store stops, restart to "
            "recover from the file",
            self._path,
        )
        failure.__cause__ = exc
        self._sync.fail(failure)  # before the group empties, as in _end_group
        self._group = []
        raise failure from exc

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        tables = {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        missing = {"meta", "leases", "fencing_tokens", "tickets", "audit"} - tables
        version = None
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = None if row is None else row[0]
        if missing or version is None:
            raise SchedulerError(f"{self._path!r} is not a grafos-scheduler store")
        if version != SCHEMA_VERSION:
            raise SchedulerError(
                f"store {self._path!r} has schema version {version!r}, expected {SCHEMA_VERSION}"
            )
        lacking = _lacking_columns(conn)
        if lacking:
            # A reader must not write; a writer (serve) adds them when it opens the file.
            parts = [
                f"the {kind} columns " + ", ".join(n for t, n, _ in lacking if t == table)
                for table, kind in (("leases", "lease"), ("tickets", "ticket"))
                if any(t == table for t, _, _ in lacking)
            ]
            raise SchedulerError(
                f"store {self._path!r} lacks {' and '.join(parts)}: start "
                "the scheduler on it once (grafos-scheduler serve) to add them"
            )

    def _release_owner(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.close()

    def _own(self) -> None:
        if self._superseded:
            raise StoreSuperseded(
                f"store {self._path!r} was superseded by a newer store on the same file "
                "in this process; this one may no longer write",
                self._path,
            )
        if self._owned:
            return
        key = os.path.realpath(self._path)
        with _OWNERS_LOCK:
            previous = _OWNERS.get(key)
            if previous is not None and previous is not self and previous._owned:
                # Same process: the lock is ours already; move it to the newer store.
                self._owner = previous._surrender()
            else:
                self._owner = _lock_owner(self._path)
            self._owned = True
            if not _is_memory(self._path):
                _OWNERS[key] = self

    def _surrender(self) -> IO[bytes] | None:
        # Called under _OWNERS_LOCK by the store taking over. Taking this store's own
        # lock waits out a transaction in flight, so none is cut in half.
        with self._lock:
            # What this store wrote while it owned the file commits before it hands over.
            self._end_group()
            self._superseded = True
            owner, self._owner = self._owner, None
            self._owned = False
            return owner

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreClosed(f"store {self._path!r} is closed")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any exception."""
        with self._lock:
            self._end_group()  # a transaction of its own starts after the group
            conn = self._connection()
            if self._in_transaction:
                raise SchedulerError(f"store {self._path!r}: transactions do not nest")
            self._sync.check()
            self._own()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _store_error(self._path, exc) from exc
            self._in_transaction = True
            txn = _SqliteTransaction(conn)
            try:
                yield txn
            except BaseException as exc:
                txn.open = False
                self._in_transaction = False
                self._rollback(conn)
                self._raise_named(exc)
            txn.open = False
            self._in_transaction = False
            try:
                conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(self._path, exc) from exc
                raise
            self._sync.wrote()

    def commit(self, change: Change) -> None:
        """Write ``change`` atomically into the open group transaction (see SchedulerStore).

        The changes written between two :meth:`wait_durable` calls share one
        ``BEGIN IMMEDIATE`` ... ``COMMIT``, and so its WAL frames: a COMMIT writes every
        b-tree page its transaction touched, and a group of grants touches mostly the
        same pages. Each change is a savepoint in it, so a change that fails is rolled
        back alone. If SQLite rolls the whole transaction back instead (it does on a
        full disk), the group's earlier changes are written again.
        """
        with self._lock:
            conn = self._connection()
            if self._in_transaction:
                raise SchedulerError(f"store {self._path!r}: transactions do not nest")
            self._sync.check()
            self._own()
            # Another statement's failure (a full disk, an I/O error) may have made
            # SQLite roll the group back: then it is written again before this joins it.
            self._keep_group(conn)
            try:
                if not self._group:
                    conn.execute("BEGIN IMMEDIATE")
                self._write(conn, change, self._group_head if self._group else None)
            except BaseException as exc:
                if not self._group:
                    self._rollback(conn)  # the transaction held only this change
                self._keep_group(conn)  # this change's failure may have taken it too
                self._raise_named(exc)
            self._group.append(change)

    def _keep_group(self, conn: sqlite3.Connection) -> None:
        """Write the group again if SQLite rolled its transaction back."""
        if self._group and not conn.in_transaction:
            self._rewrite_group(conn)

    def _raise_named(self, exc: BaseException) -> NoReturn:
        """Raise ``exc`` as this store's error: a sqlite3 error as StoreError, a
        StoreError without a path naming the file (same class), anything else as is."""
        if isinstance(exc, sqlite3.Error):
            raise _store_error(self._path, exc) from exc
        if isinstance(exc, StoreError) and exc.path is None:
            # Same class (StoreConflict stays a StoreConflict), now naming the file.
            raise type(exc)(f"store {self._path!r}: {exc}", self._path) from exc
        raise exc

    def _write(
        self, conn: sqlite3.Connection, change: Change, head: tuple[int, str] | None
    ) -> None:
        """``change`` as one savepoint of the open transaction; undone if it fails.

        ``head``: the audit head the open transaction wrote last (None: read it).
        """
        conn.execute("SAVEPOINT change")
        txn = _SqliteTransaction(conn, head)
        try:
            write_change(txn, change)
            conn.execute("RELEASE change")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK TO change")
                    conn.execute("RELEASE change")
                except sqlite3.Error:
                    self._rollback(conn)
            raise
        finally:
            txn.open = False
        if change.audit:
            last = change.audit[-1]
            self._group_head = (last.seq, last.hash)
        elif head is None:
            self._group_head = None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # The original error is the one worth reporting, not a failed ROLLBACK.
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _query(
        self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _store_error(self._path, exc) from exc

    def fencing_token(self, job: str) -> int:
        """The job's last minted fencing token, 0 if it never had one."""
        rows = self._query(_SELECT_COUNTER, (job,))
        return 0 if not rows else int(rows[0][0])

    def active_leases(self) -> list[LeaseRow]:
        """Every ACTIVE lease, oldest grant first."""
        return [_lease_row(r) for r in self._query(_SELECT_ACTIVE)]

    def tickets(self) -> list[TicketRow]:
        """Every pending ticket, in (priority descending, position) order."""
        return [_ticket_row(r) for r in self._query(_SELECT_TICKETS)]

    def get_lease(self, lease_id: int) -> LeaseRow | None:
        """The lease row, or None."""
        rows = self._query(_SELECT_LEASE, (id_hex(lease_id),))
        return _lease_row(rows[0]) if rows else None

    def lease_for_ticket(self, ticket_id: int) -> LeaseRow | None:
        """The lease a ticket became, or None."""
        rows = self._query(_SELECT_LEASE_OF_TICKET, (id_hex(ticket_id),))
        return _lease_row(rows[0]) if rows else None

    def list_leases(self, state: LeaseState | None = None) -> list[LeaseRow]:
        """Lease rows, optionally of one state, oldest grant first."""
        if state is None:
            rows = self._query(_SELECT_LEASES)
        else:
            rows = self._query(
                _SELECT_LEASES_IN,
                (state.value,),
            )
        return [_lease_row(r) for r in rows]

    def list_leases_page(
        self,
        *,
        state: LeaseState | None = None,
        holder: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[LeaseRow]:
        """At most ``limit`` lease rows in grant order (``granted_wall``, then id).

        Optionally of one ``state`` and one ``holder``; ``after`` is the id of the last
        lease of the previous page. A keyset query on an index: the cost is the page's,
        not the table's. An ``after`` that names no lease gives an empty page.
        """
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state.value
        if holder is not None:
            params["holder"] = holder
        with self._lock:
            if after is not None:
                cursor = self._query(_SELECT_CURSOR, (id_hex(after),))
                if not cursor:
                    return []
                params["after_wall"], params["after_id"] = cursor[0]
            sql = _SELECT_PAGE[(state is not None, holder is not None, after is not None)]
            rows = self._query(sql, params)
        return [_lease_row(r) for r in rows]

    def count_leases_by_state(self) -> dict[LeaseState, int]:
        """How many leases are in each state; one aggregate over the state index."""
        counts = dict.fromkeys(LeaseState, 0)
        for state, count in self._query(_COUNT_BY_STATE):
            counts[LeaseState(state)] = int(count)
        return counts

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Records with seq > ``after_seq`` in seq order, at most ``limit``."""
        rows = self._query(
            _SELECT_AUDIT,
            (after_seq, limit),
        )
        return [_audit_record(r) for r in rows]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) when empty."""
        rows = self._query(_SELECT_HEAD)
        return (0, GENESIS_HASH) if not rows else (int(rows[0][0]), str(rows[0][1]))

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            try:
                if self._conn is not None:
                    self._end_group()  # what was written commits; a failure is raised
            finally:
                conn, self._conn = self._conn, None
                try:
                    if conn is not None:
                        conn.close()
                finally:
                    self._close_wal()
                    self._release_owner()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"
