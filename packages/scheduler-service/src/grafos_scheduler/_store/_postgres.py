"""PostgresStore: a SchedulerStore on PostgreSQL (psycopg 3), for several replicas.

Besides leases, tokens, tickets and the audit chain, the database holds one
leadership row (epoch, owner, advertised URL, expiry on the database's clock). A
store bound to an epoch (:meth:`PostgresStore.fenced`) checks that row inside every
write transaction, holding it ``FOR SHARE``: a takeover (an UPDATE of the row) can
only order itself after a leader's write, never between its check and its commit.
So a deposed leader writes nothing, as Temporal's shard ``range_id`` check ensures.
No session advisory locks: they break behind a transaction-pooling proxy.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

try:
    import psycopg
    import psycopg_pool
except ImportError as exc:  # the `postgres` extra is not installed
    raise ImportError(
        f"PostgresStore needs psycopg and psycopg-pool ({exc.name} is missing): "
        "install grafos-scheduler[postgres]",
        name=exc.name,
    ) from exc

from .._domain import _audit_entries as entries
from .._domain._audit import GENESIS_HASH, AuditRecord, chain
from .._domain._change import Change
from .._domain._errors import (
    SchedulerError,
    StoreClosed,
    StoreConflict,
    StoreError,
    StoreSuperseded,
)
from .._domain._ids import id_from_hex, id_hex
from .._domain._lease import LeaseState
from .._domain._rows import LeaseRow, TicketRow
from .._store._protocol import write_change

__all__ = ["SCHEMA_VERSION", "LeaderRow", "LeadershipLost", "PostgresStore"]

# LeaseRow's fields after the first eighteen, each in a column of its own name.
_LEASE_EXTRA = (
    ("end_cause", "TEXT"),
    ("hold_reason", "TEXT"),
    ("hold_set_wall", "DOUBLE PRECISION"),
    ("hold_expires_at", "DOUBLE PRECISION"),
    ("hold_expires_wall", "DOUBLE PRECISION"),
    ("grace", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    ("checkpoint_wall", "DOUBLE PRECISION"),
    ("work_lost_records", "BIGINT"),
    ("work_lost_seconds", "DOUBLE PRECISION"),
)
_EXTRA_NAMES = tuple(name for name, _ in _LEASE_EXTRA)
SCHEMA_VERSION = "1"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS grafos_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS grafos_leadership (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL,
        owner TEXT,
        url TEXT,
        expires_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS grafos_leases (
        lease_id TEXT PRIMARY KEY,
        ticket_id TEXT UNIQUE,
        job TEXT NOT NULL,
        holder TEXT NOT NULL,
        priority BIGINT NOT NULL,
        slots BIGINT NOT NULL,
        ttl DOUBLE PRECISION NOT NULL,
        fencing_token BIGINT NOT NULL,
        state TEXT NOT NULL,
        epoch TEXT NOT NULL,
        granted_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        granted_wall DOUBLE PRECISION NOT NULL,
        expires_wall DOUBLE PRECISION NOT NULL,
        ended_wall DOUBLE PRECISION,
        preempt_cause TEXT,
        preempt_requested_wall DOUBLE PRECISION,
        preempt_deadline_wall DOUBLE PRECISION,
        {extra}position BIGSERIAL NOT NULL
    )""".format(extra="".join(f"{name} {kind},\n        " for name, kind in _LEASE_EXTRA)),
    "CREATE INDEX IF NOT EXISTS grafos_leases_by_state ON grafos_leases (state)",
    "CREATE INDEX IF NOT EXISTS grafos_leases_by_grant ON grafos_leases (granted_wall, lease_id)",
    """CREATE INDEX IF NOT EXISTS grafos_leases_by_state_grant
        ON grafos_leases (state, granted_wall, lease_id)""",
    """CREATE INDEX IF NOT EXISTS grafos_leases_by_holder_grant
        ON grafos_leases (holder, granted_wall, lease_id)""",
    # Belt and braces for "at most one ACTIVE lease per job".
    """CREATE UNIQUE INDEX IF NOT EXISTS grafos_one_active_lease_per_job
        ON grafos_leases (job) WHERE state = 'active'""",
    """CREATE TABLE IF NOT EXISTS grafos_fencing_tokens (
        job TEXT PRIMARY KEY,
        last_token BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS grafos_tickets (
        position BIGINT PRIMARY KEY,
        ticket_id TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        holder TEXT NOT NULL,
        priority BIGINT NOT NULL,
        slots BIGINT NOT NULL,
        ttl DOUBLE PRECISION NOT NULL,
        epoch TEXT NOT NULL,
        requested_at DOUBLE PRECISION NOT NULL,
        requested_wall DOUBLE PRECISION NOT NULL,
        grace DOUBLE PRECISION NOT NULL DEFAULT 0
    )""",
    # leader_epoch is the leadership epoch that wrote the record (NULL for a store
    # used without leadership). It is outside the hash: the chain is the domain's.
    """CREATE TABLE IF NOT EXISTS grafos_audit (
        seq BIGINT PRIMARY KEY,
        time DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        lease_id TEXT,
        job TEXT,
        data TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        leader_epoch BIGINT
    )""",
    """INSERT INTO grafos_leadership (id, epoch, owner, url, expires_at)
        VALUES (1, 0, NULL, NULL, 'epoch') ON CONFLICT (id) DO NOTHING""",
)

_LEASE_COLUMNS = (
    "lease_id, ticket_id, job, holder, priority, slots, ttl, fencing_token, state, epoch, "
    "granted_at, expires_at, granted_wall, expires_wall, ended_wall, preempt_cause, "
    "preempt_requested_wall, preempt_deadline_wall" + "".join(f", {name}" for name in _EXTRA_NAMES)
)
_TICKET_COLUMNS = (
    "position, ticket_id, job, holder, priority, slots, ttl, epoch, requested_at, "
    "requested_wall, grace"
)
_AUDIT_COLUMNS = "seq, time, kind, lease_id, job, data, prev_hash, hash"

_LEASE_PLACEHOLDERS = ", ".join(["%s"] * (18 + len(_EXTRA_NAMES)))
_INSERT_LEASE = f"INSERT INTO grafos_leases ({_LEASE_COLUMNS}) VALUES ({_LEASE_PLACEHOLDERS})"  # noqa: S608 - constants
_UPDATE_LEASE = (
    "UPDATE grafos_leases SET ticket_id = %s, job = %s, holder = %s, priority = %s, "  # noqa: S608 - constant column names
    "slots = %s, ttl = %s, fencing_token = %s, state = %s, epoch = %s, granted_at = %s, "
    "expires_at = %s, granted_wall = %s, expires_wall = %s, ended_wall = %s, "
    "preempt_cause = %s, preempt_requested_wall = %s, preempt_deadline_wall = %s"
    + "".join(f", {name} = %s" for name in _EXTRA_NAMES)
    + " WHERE lease_id = %s AND state = 'active'"
)
_SELECT_LEASE = f"SELECT {_LEASE_COLUMNS} FROM grafos_leases WHERE lease_id = %s"  # noqa: S608
_SELECT_LEASE_OF_TICKET = f"SELECT {_LEASE_COLUMNS} FROM grafos_leases WHERE ticket_id = %s"  # noqa: S608
_SELECT_ACTIVE = (
    f"SELECT {_LEASE_COLUMNS} FROM grafos_leases WHERE state = 'active' "  # noqa: S608
    "ORDER BY granted_wall, position"
)
_SELECT_LEASES = f"SELECT {_LEASE_COLUMNS} FROM grafos_leases ORDER BY granted_wall, position"  # noqa: S608
_SELECT_LEASES_IN = (
    f"SELECT {_LEASE_COLUMNS} FROM grafos_leases WHERE state = %s "  # noqa: S608
    "ORDER BY granted_wall, position"
)
_SELECT_TICKETS = f"SELECT {_TICKET_COLUMNS} FROM grafos_tickets ORDER BY priority DESC, position"  # noqa: S608
_SELECT_AUDIT = f"SELECT {_AUDIT_COLUMNS} FROM grafos_audit WHERE seq > %s ORDER BY seq LIMIT %s"  # noqa: S608
_INSERT_AUDIT = (
    f"INSERT INTO grafos_audit ({_AUDIT_COLUMNS}, leader_epoch) "  # noqa: S608
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_HEAD = "SELECT seq, hash FROM grafos_audit ORDER BY seq DESC LIMIT 1"
_SELECT_COUNTER = "SELECT last_token FROM grafos_fencing_tokens WHERE job = %s"
_COUNT_BY_STATE = "SELECT state, COUNT(*) FROM grafos_leases GROUP BY state"
_SELECT_CURSOR = "SELECT granted_wall, lease_id FROM grafos_leases WHERE lease_id = %s"
# The leader's check, inside each of its write transactions. FOR SHARE makes a
# takeover's UPDATE of the row wait until this transaction has ended.
_CHECK_EPOCH = (
    "SELECT epoch FROM grafos_leadership WHERE id = 1 AND epoch = %s AND owner = %s "
    "AND expires_at > clock_timestamp() FOR SHARE"
)
_SELECT_LEADER = (
    "SELECT epoch, owner, url, EXTRACT(EPOCH FROM (expires_at - clock_timestamp()))::float8 "
    "FROM grafos_leadership WHERE id = 1"
)
_TAKE_LEADERSHIP = (
    "UPDATE grafos_leadership SET epoch = epoch + 1, owner = %s, url = %s, "
    "expires_at = clock_timestamp() + make_interval(secs => %s) "
    "WHERE id = 1 AND expires_at <= clock_timestamp() RETURNING epoch"
)
_RENEW_LEADERSHIP = (
    "UPDATE grafos_leadership SET expires_at = clock_timestamp() + make_interval(secs => %s) "
    "WHERE id = 1 AND epoch = %s AND owner = %s AND expires_at > clock_timestamp()"
)
_RESIGN_LEADERSHIP = (
    "UPDATE grafos_leadership SET expires_at = clock_timestamp() "
    "WHERE id = 1 AND epoch = %s AND owner = %s"
)

_PAGE_TEMPLATE = (
    "SELECT {lease} FROM grafos_leases WHERE {where} "
    "ORDER BY granted_wall, lease_id LIMIT %(limit)s"
)


def _page_sql(*, state: bool, holder: bool, after: bool) -> str:
    """The keyset query for one page; only constant fragments are joined, never values."""
    clauses = ["TRUE"]
    if state:
        clauses.append("state = %(state)s")
    if holder:
        clauses.append("holder = %(holder)s")
    if after:
        clauses.append("(granted_wall, lease_id) > (%(after_wall)s, %(after_id)s)")
    return _PAGE_TEMPLATE.format(lease=_LEASE_COLUMNS, where=" AND ".join(clauses))


_SELECT_PAGE = {
    (state, holder, after): _page_sql(state=state, holder=holder, after=after)
    for state in (False, True)
    for holder in (False, True)
    for after in (False, True)
}


class LeadershipLost(StoreSuperseded):
    """This replica's leadership epoch is no longer the database's: nothing was written.

    A subclass of :class:`StoreSuperseded`, so a scheduler's executor on a deposed
    leader's store stops as it does on a superseded SQLite store.
    """

    def __init__(self, message: str, path: str | None = None, *, epoch: int) -> None:
        self.epoch = epoch
        super().__init__(message, path)


@attrs.frozen
class LeaderRow:
    """The leadership row as read: ``expires_in`` is seconds from now on the database's
    clock (negative once it lapsed); ``owner`` and ``url`` are None before any leader."""

    epoch: int
    owner: str | None
    url: str | None
    expires_in: float

    @property
    def live(self) -> bool:
        return self.owner is not None and self.expires_in > 0


def _safe_url(conninfo: str) -> str:
    """The connection URL without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(conninfo)
    except ValueError:
        return "<unparseable PostgreSQL URL>"
    if parts.password is None:
        return conninfo
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


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
        *(getattr(row, name) for name in _EXTRA_NAMES),
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
        **dict(zip(_EXTRA_NAMES, r[18:], strict=True)),
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
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _insert_audit(cur: psycopg.Cursor[Any], record: AuditRecord, leader_epoch: int | None) -> None:
    cur.execute(
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
            leader_epoch,
        ),
    )


class _PostgresTransaction:
    """StoreTransaction on one connection, valid only inside its ``with`` block."""

    __slots__ = ("_cur", "_leader_epoch", "open")

    def __init__(self, cur: psycopg.Cursor[Any], leader_epoch: int | None) -> None:
        self._cur = cur
        self._leader_epoch = leader_epoch
        self.open = True

    def _c(self) -> psycopg.Cursor[Any]:
        if not self.open:
            raise SchedulerError("this store transaction has already ended")
        return self._cur

    def audit_head(self) -> tuple[int, str]:
        # FOR UPDATE: a second writer (there should never be one) waits, then sees
        # the head moved and refuses; the seq primary key would refuse it anyway.
        head = self._c().execute(_SELECT_HEAD + " FOR UPDATE").fetchone()
        return (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1]))

    def fencing_token(self, job: str) -> int:
        row = self._c().execute(_SELECT_COUNTER + " FOR UPDATE", (job,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_fencing_token(self, job: str, token: int) -> bool:
        # Only forward: a lower or equal token changes no row (see write_change).
        cur = self._c().execute(
            "INSERT INTO grafos_fencing_tokens (job, last_token) VALUES (%(job)s, %(token)s) "
            "ON CONFLICT (job) DO UPDATE SET last_token = EXCLUDED.last_token "
            "WHERE grafos_fencing_tokens.last_token < EXCLUDED.last_token",
            {"job": job, "token": token},
        )
        return cur.rowcount == 1

    def insert_lease(self, row: LeaseRow) -> None:
        self._c().execute(_INSERT_LEASE, _lease_params(row))

    def update_lease(self, row: LeaseRow) -> None:
        # Only an ACTIVE row changes: an end state never goes back, whatever the caller.
        params = _lease_params(row)
        cur = self._c().execute(_UPDATE_LEASE, (*params[1:], params[0]))
        if cur.rowcount != 1:
            raise StoreError(f"lease {params[0]} is not an ACTIVE lease in the store")

    def insert_ticket(self, row: TicketRow) -> None:
        self._c().execute(
            "INSERT INTO grafos_tickets (position, ticket_id, job, holder, priority, slots, "
            "ttl, epoch, requested_at, requested_wall, grace) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
        self._c().execute("DELETE FROM grafos_tickets WHERE ticket_id = %s", (id_hex(ticket_id),))

    def append_audit(self, record: AuditRecord) -> None:
        _insert_audit(self._c(), record, self._leader_epoch)


@attrs.frozen
class _Fence:
    epoch: int
    owner: str
    on_lost: Callable[[int], None] | None
    alive: Callable[[], bool] | None
    on_stale: Callable[[int, str], None] | None = None


class _Shared:
    """The pool and the lifecycle that every view of one database shares."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], url: str) -> None:
        self.pool = pool
        self.url = url
        self.closed = False


class PostgresStore:
    """The SchedulerStore for several scheduler replicas on one PostgreSQL database.

    It keeps every guarantee of :class:`SqliteStore`: a fencing token is minted in the
    transaction that grants its lease and never goes backward; each audit record is
    appended in the transaction of its change; a restart restores everything. The
    schema is created on first use, and a database with another schema version is
    refused with :class:`SchedulerError` naming it.

    Every server-side wait is bounded (``lock_timeout``, ``statement_timeout``,
    ``idle_in_transaction_session_timeout``, in seconds), so a frozen replica holding
    row locks cannot stall another one for longer than that.

    On its own, a PostgresStore writes without a leadership check, for one scheduler
    per database. Replicas write through :meth:`fenced`, a view bound to the epoch
    they won (see :class:`Replica`). Thread-safe: each transaction takes a pooled
    connection. Every driver failure surfaces as a :class:`StoreError` naming the
    database (without its password).
    """

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = 2.0,
        statement_timeout: float = 5.0,
        idle_in_transaction_timeout: float = 5.0,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
    ) -> None:
        if not str(url).startswith(("postgresql://", "postgres://")):
            raise SchedulerError(f"store URL {url!r} is not a postgresql:// URL")
        timeouts: tuple[tuple[str, object], ...] = (
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
            ("idle_in_transaction_timeout", idle_in_transaction_timeout),
            ("connect_timeout", connect_timeout),
        )
        for name, value in timeouts:
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise SchedulerError(f"{name} {value!r} must be a positive number of seconds")
        safe = _safe_url(url)
        try:
            given = psycopg.conninfo.conninfo_to_dict(url).get("options")
        except psycopg.ProgrammingError as exc:
            raise SchedulerError(
                f"store URL {safe!r} is not a valid PostgreSQL URL: {exc}"
            ) from exc
        # The URL's own options (a search_path, say) come first; ours bound every wait.
        options = f"{given} " if given else ""
        options += " ".join(
            f"-c {name}={max(1, int(seconds * 1000))}"
            for name, seconds in (
                ("lock_timeout", lock_timeout),
                ("statement_timeout", statement_timeout),
                ("idle_in_transaction_session_timeout", idle_in_transaction_timeout),
            )
        )
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": True,
                "options": options,
                "connect_timeout": max(1, round(connect_timeout)),
            },
            timeout=connect_timeout,
            open=False,
            name="grafos-scheduler",
        )
        try:
            pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            pool.close()
            raise StoreError(f"store {safe}: cannot connect: {exc}", safe) from exc
        self._shared = _Shared(pool, safe)
        self._fence: _Fence | None = None
        self._view_closed = False
        self._lock = threading.Lock()
        self._in_transaction: set[int] = set()
        try:
            self._create_schema()
        except BaseException:
            pool.close()
            raise

    # -- views -----------------------------------------------------------------------

    def fenced(
        self,
        epoch: int,
        owner: str,
        on_lost: Callable[[int], None] | None = None,
        alive: Callable[[], bool] | None = None,
        on_stale: Callable[[int, str], None] | None = None,
    ) -> PostgresStore:
        """A view of this store whose every write checks leadership ``epoch`` of ``owner``.

        The check runs in the write's own transaction, on the leadership row held
        ``FOR SHARE``. ``alive`` is the leader's own verdict (its deadline on its
        monotonic clock), asked before the transaction starts and again before it
        commits. A failed check rolls the transaction back, calls ``on_lost(epoch)``
        and raises :class:`LeadershipLost`.

        ``on_stale(epoch, why)`` is called when the leader's memory can no longer be
        trusted to match the database: the connection failed during a COMMIT (the
        change may or may not be written), or the database refused a change with
        :class:`StoreConflict` (it holds a write memory never saw). The leader should
        step down, so that a fresh restore reads the database. The view shares this
        store's connections; closing it leaves them open (the store's own
        :meth:`close` closes them).
        """
        view = object.__new__(PostgresStore)
        view._shared = self._shared
        view._fence = _Fence(epoch, owner, on_lost, alive, on_stale)
        view._view_closed = False
        view._lock = threading.Lock()
        view._in_transaction = set()
        return view

    @property
    def url(self) -> str:
        """The database URL, without its password."""
        return self._shared.url

    @property
    def epoch(self) -> int | None:
        """The leadership epoch this view writes under, or None for the plain store."""
        return None if self._fence is None else self._fence.epoch

    # -- plumbing --------------------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        url = self._shared.url
        return StoreError(f"store {url}: {type(exc).__name__}: {exc}".strip(), url)

    def _check_open(self) -> None:
        if self._shared.closed or self._view_closed:
            raise StoreClosed(f"store {self._shared.url} is closed", self._shared.url)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        self._check_open()
        try:
            with self._shared.pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _query(self, query: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def _create_schema(self) -> None:
        for attempt in range(5):
            try:
                with self._connection() as conn, conn.transaction():
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    row = conn.execute(
                        "SELECT value FROM grafos_meta WHERE key = 'schema_version'"
                    ).fetchone()
                    if row is None:
                        conn.execute(
                            "INSERT INTO grafos_meta (key, value) VALUES ('schema_version', %s) "
                            "ON CONFLICT (key) DO NOTHING",
                            (SCHEMA_VERSION,),
                        )
                    elif row[0] != SCHEMA_VERSION:
                        raise SchedulerError(
                            f"store {self.url} has schema version {row[0]!r}, "
                            f"expected {SCHEMA_VERSION}"
                        )
                return
            except StoreError as exc:
                # Replicas starting together race on CREATE ... IF NOT EXISTS (a unique
                # violation in the catalog): the loser tries again and finds it all there.
                cause = exc.__cause__
                if attempt == 4 or not isinstance(
                    cause, psycopg.errors.UniqueViolation | psycopg.errors.DuplicateTable
                ):
                    raise

    # -- SchedulerStore --------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTransaction]:
        """One transaction; with a fence, it first checks the epoch (FOR SHARE)."""
        me = threading.get_ident()
        with self._lock:
            if me in self._in_transaction:
                raise SchedulerError(f"store {self.url}: transactions do not nest")
            self._in_transaction.add(me)
        fence = self._fence
        lost = False
        committing = False
        stale: str | None = None
        try:
            if fence is not None and fence.alive is not None and not fence.alive():
                lost = True
                raise self._lost(fence)
            with self._connection() as conn:
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        if fence is not None:
                            ok = cur.execute(_CHECK_EPOCH, (fence.epoch, fence.owner)).fetchone()
                            if ok is None:
                                lost = True
                                raise self._lost(fence)
                        txn = _PostgresTransaction(cur, None if fence is None else fence.epoch)
                        try:
                            yield txn
                        finally:
                            txn.open = False
                        if fence is not None and fence.alive is not None and not fence.alive():
                            # Past our own deadline mid-transaction: do not commit.
                            lost = True
                            raise self._lost(fence)
                        committing = True  # leaving this block sends the COMMIT
                except StoreError as exc:
                    if isinstance(exc, StoreConflict):
                        stale = f"the database refused a change: {exc}"
                    if exc.path is None and not isinstance(exc, LeadershipLost):
                        # Same class (StoreConflict stays one), now naming the database.
                        raise type(exc)(f"store {self.url}: {exc}", self.url) from exc
                    raise
        except StoreError as exc:
            if not committing:
                raise
            # The COMMIT was sent and no answer came: the server may have written it.
            stale = f"the connection failed during a COMMIT, whose outcome is unknown: {exc}"
            raise StoreError(
                f"store {self.url}: the connection failed during a COMMIT; the change may "
                f"or may not be written: {exc}",
                self.url,
            ) from exc
        finally:
            with self._lock:
                self._in_transaction.discard(me)
            if lost and fence is not None and fence.on_lost is not None:
                fence.on_lost(fence.epoch)
            if stale is not None and fence is not None and fence.on_stale is not None:
                fence.on_stale(fence.epoch, stale)

    def _lost(self, fence: _Fence) -> LeadershipLost:
        return LeadershipLost(
            f"store {self.url}: leadership epoch {fence.epoch} of {fence.owner!r} has ended; "
            "nothing was written",
            self.url,
            epoch=fence.epoch,
        )

    def commit(self, change: Change) -> None:
        """Write ``change`` in one transaction (see SchedulerStore); a fenced view
        checks its leadership epoch first, in the same transaction."""
        with self.transaction() as txn:
            write_change(txn, change)

    @property
    def durable(self) -> bool:
        """Always True: PostgreSQL's COMMIT returns once the change is durable
        (``synchronous_commit`` on, its default), so nothing waits here."""
        return True

    def wait_durable(self) -> None:
        """Returns at once: every commit was durable when :meth:`commit` returned."""

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
            rows = self._query(_SELECT_LEASES_IN, (state.value,))
        return [_lease_row(r) for r in rows]

    def list_leases_page(
        self,
        *,
        state: LeaseState | None = None,
        holder: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[LeaseRow]:
        """At most ``limit`` lease rows in grant order (``granted_wall``, then id)."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state.value
        if holder is not None:
            params["holder"] = holder
        if after is not None:
            cursor = self._query(_SELECT_CURSOR, (id_hex(after),))
            if not cursor:
                return []
            params["after_wall"], params["after_id"] = cursor[0]
        query = _SELECT_PAGE[(state is not None, holder is not None, after is not None)]
        return [_lease_row(r) for r in self._query(query, params)]

    def count_leases_by_state(self) -> dict[LeaseState, int]:
        """How many leases are in each state; one aggregate over the state index."""
        counts = dict.fromkeys(LeaseState, 0)
        for state, count in self._query(_COUNT_BY_STATE):
            counts[LeaseState(state)] = int(count)
        return counts

    def audit_records(self, after_seq: int = 0, limit: int = 100) -> list[AuditRecord]:
        """Records with seq > ``after_seq`` in seq order, at most ``limit``."""
        return [_audit_record(r) for r in self._query(_SELECT_AUDIT, (after_seq, limit))]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, GENESIS_HASH) when empty."""
        rows = self._query(_SELECT_HEAD)
        return (0, GENESIS_HASH) if not rows else (int(rows[0][0]), str(rows[0][1]))

    def audit_epochs(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, int | None]]:
        """(seq, leadership epoch that wrote it) per record, in seq order."""
        rows = self._query(
            "SELECT seq, leader_epoch FROM grafos_audit WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [(int(r[0]), None if r[1] is None else int(r[1])) for r in rows]

    # -- leadership ------------------------------------------------------------------

    def leader(self) -> LeaderRow:
        """The leadership row, with its remaining time on the database's clock."""
        rows = self._query(_SELECT_LEADER)
        epoch, owner, url, expires_in = rows[0]
        return LeaderRow(int(epoch), owner, url, float(expires_in))

    def take_leadership(
        self, owner: str, url: str | None, ttl: float, *, wall: float
    ) -> int | None:
        """Become leader if the row has lapsed: the next epoch, or None if it is held.

        The epoch bump and its ``leader_elected`` audit record commit together, so
        the one audit chain names every leadership change.
        """
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            previous = cur.execute(
                "SELECT epoch, owner FROM grafos_leadership WHERE id = 1"
            ).fetchone()
            got = cur.execute(_TAKE_LEADERSHIP, (owner, url, ttl)).fetchone()
            if got is None:
                return None
            epoch = int(got[0])
            head = cur.execute(_SELECT_HEAD + " FOR UPDATE").fetchone()
            entry = entries.leader_elected(
                epoch=epoch,
                owner=owner,
                url=url,
                leader_ttl=ttl,
                previous_owner=None if previous is None else previous[1],
            )
            (record,) = chain(
                (0, GENESIS_HASH) if head is None else (int(head[0]), str(head[1])), wall, [entry]
            )
            _insert_audit(cur, record, epoch)
            return epoch

    def renew_leadership(self, epoch: int, owner: str, ttl: float) -> bool:
        """Extend a live leadership by ``ttl``; False once it lapsed or changed hands."""
        with self._connection() as conn:
            cur = conn.execute(_RENEW_LEADERSHIP, (ttl, epoch, owner))
            return cur.rowcount == 1

    def resign_leadership(self, epoch: int, owner: str) -> None:
        """End our leadership now, so a standby need not wait for it to lapse."""
        with self._connection() as conn:
            conn.execute(_RESIGN_LEADERSHIP, (epoch, owner))

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the store (a fenced view: only the view); idempotent."""
        if self._fence is not None:
            self._view_closed = True
            return
        if not self._shared.closed:
            self._shared.closed = True
            self._shared.pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fence = "" if self._fence is None else f", epoch={self._fence.epoch}"
        return f"PostgresStore({self.url!r}{fence})"
