"""HttpProtocol: uvicorn's httptools protocol, each answer in one write, and the hot
lease calls answered by the protocol itself.

uvicorn writes a response's header block and its body separately, and uvloop sends
each at once: two sends per answer. The protocol here holds the header block for the
body, or to the end of the loop's turn. Driven through uvicorn's real request cycle,
with a transport that records what would reach the socket. The hot calls run on a real
scheduler over a SQLite file, with its fsync held back where a test needs it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from grafos_scheduler import Scheduler, SqliteStore, TokenConfig, create_app
from support.internals import HeldFsync, HttpProtocol
from support.servers import ADMIN_TOKEN, WORKER_TOKENS


class Recorder(asyncio.Transport):
    """What the protocol wrote to its connection, and whether it closed it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _serve(
    app: Any, request: bytes, made: list[tuple[HttpProtocol, Recorder]] | None = None
) -> Recorder:
    """``request`` sent to ``app`` on one connection; what the connection was sent.

    ``made`` is given the protocol and transport before the request arrives, for an
    app that looks at them while it answers.
    """
    config = uvicorn.Config(app, http=HttpProtocol, log_config=None, access_log=False)
    protocol = HttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Recorder()
    if made is not None:
        made.append((protocol, transport))
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.sleep(0.4)
    return transport


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


GET = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"


def test_an_answer_leaves_in_one_write() -> None:
    transport = asyncio.run(_serve(_answer, GET))
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b"\r\n\r\n{}")
    assert not transport.closed


def test_keep_alive_answers_each_leave_in_one_write() -> None:
    transport = asyncio.run(_serve(_answer, GET * 3))
    assert len(transport.writes) == 3
    assert all(w.endswith(b"{}") for w in transport.writes)


def test_a_closing_answer_is_written_before_the_connection_closes() -> None:
    closing = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    transport = asyncio.run(_serve(_answer, closing))
    (written,) = transport.writes
    assert written.endswith(b"{}")
    assert transport.closed


def test_a_stream_gets_its_headers_at_the_end_of_the_turn_not_with_its_first_event() -> None:
    made: list[tuple[HttpProtocol, Recorder]] = []
    seen: list[list[bytes]] = []

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await asyncio.sleep(0.1)  # the first event comes later
        seen.append(list(made[0][1].writes))
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    transport = asyncio.run(_serve(stream, GET, made))
    # While the stream waited, its header block had already been written on its own.
    assert len(seen[0]) == 1
    assert seen[0][0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"data: 1" in b"".join(transport.writes[1:])


def test_an_answer_without_a_body_is_sent_before_a_shutdown_closes_the_connection() -> None:
    # HEAD writes no body, so its header block is held to the end of the turn; a
    # graceful shutdown in that turn closes the connection, and must send it first.
    made: list[tuple[HttpProtocol, Recorder]] = []

    async def head_then_shutdown(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        made[0][0].shutdown()  # the server stopping, in the same turn

    head = b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    transport = asyncio.run(_serve(head_then_shutdown, head, made))
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed


# -- hot lease calls, answered by the protocol itself -------------------------------

ALICE = f"Bearer {WORKER_TOKENS['alice']}".encode()


def _post(path: str, body: bytes, *, auth: bytes = ALICE, extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nhost: x\r\nauthorization: "
        + auth
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


def _acquire(job: str, *, extra: bytes = b"") -> bytes:
    return _post("/v1/leases", b'{"job":"%s","slots":1,"ttl":30}' % job.encode(), extra=extra)


def _answers(writes: list[bytes]) -> list[tuple[bytes, dict[bytes, bytes], Any]]:
    """Each answer on the connection: status line, headers, decoded JSON body."""
    answers = []
    data = b"".join(writes)
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines)
        size = int(headers[b"content-length"])
        body, data = rest[:size], rest[size:]
        answers.append((status, headers, json.loads(body)))
    return answers


@pytest.fixture
def hot_app(tmp_path: Path) -> Iterator[tuple[Any, SqliteStore]]:
    store = SqliteStore(tmp_path / "scheduler.db")
    with Scheduler(4, store) as scheduler:
        scheduler.start()
        yield create_app(scheduler, TokenConfig(ADMIN_TOKEN, WORKER_TOKENS)), store


DATE = b"Tue, 01 Dec 2026 00:00:00 GMT"


def _connect(app: Any, *, keep_alive: int = 5) -> tuple[HttpProtocol, Recorder]:
    config = uvicorn.Config(
        app,
        http=HttpProtocol,
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive,
    )
    state = ServerState()
    state.default_headers = [(b"date", DATE), (b"server", b"uvicorn")]  # as a Server sets
    protocol = HttpProtocol(config, state, {}, asyncio.get_running_loop())
    transport = Recorder()
    protocol.connection_made(transport)
    return protocol, transport


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _assert_one_closing_answer(transport: Recorder, status: bytes) -> None:
    ((got, headers, _),) = _answers(transport.writes)
    assert got == status
    assert headers[b"connection"] == b"close"


async def _renewal_of_a_grant(app: Any, *, extra: bytes = b"") -> bytes:
    """A renew request for a lease granted first (job j1), on a connection of its own."""
    protocol, transport = _connect(app)
    protocol.data_received(_acquire("j1"))
    await _until(lambda: bool(transport.writes))
    lease = _answers(transport.writes)[0][2]["lease"]
    return _post(
        f"/v1/leases/{lease['lease_id']}/renew",
        b'{"fencing_token":%d}' % lease["fencing_token"],
        extra=extra,
    )


def _raising(message: str) -> Callable[..., Any]:
    """A stand-in for a method, failing as a bug would."""

    def broken(*_: Any) -> Any:
        raise RuntimeError(message)

    return broken


def test_a_hot_call_is_answered_by_the_protocol_with_no_asgi_task(
    hot_app: tuple[Any, SqliteStore],
) -> None:
    app, _ = hot_app

    async def run() -> tuple[Recorder, ServerState, int]:
        protocol, transport = _connect(app)
        protocol.data_received(_acquire("j1"))
        tasks = len(protocol.server_state.tasks)  # uvicorn's cycle would have made one
        await _until(lambda: bool(transport.writes))
        return transport, protocol.server_state, tasks

    transport, state, tasks = asyncio.run(run())
    assert tasks == 0
    (written,) = transport.writes  # one write: status line, headers and body
    ((status, headers, body),) = _answers([written])
    assert status == b"HTTP/1.1 201 Created"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"server"] == b"uvicorn"  # the server's default headers, as uvicorn's
    assert headers[b"date"] == DATE
    assert body["lease"]["job"] == "j1"
    assert body["lease"]["state"] == "active"
    assert state.total_requests == 1
    assert not transport.closed
    assert app.asgi_handler.served == 1


def test_no_answer_leaves_before_the_grant_is_durable_and_pipelined_calls_keep_their_order(
    hot_app: tuple[Any, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, store = hot_app
    fsync = HeldFsync(monkeypatch, store)
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"

    async def run() -> tuple[list[bytes], Recorder]:
        protocol, transport = _connect(app)
        fsync.gate.clear()
        # Three requests in one segment: two grants, then a call the app answers.
        protocol.data_received(_acquire("j1") + _acquire("j2") + health)
        await asyncio.sleep(0.2)
        held = list(transport.writes)
        fsync.gate.set()
        await _until(lambda: len(_answers(transport.writes)) == 3)
        return held, transport

    held, transport = asyncio.run(run())
    assert held == []  # the first grant waited for its fsync, and the rest behind it
    answers = _answers(transport.writes)
    assert [a[0] for a in answers] == [b"HTTP/1.1 201 Created"] * 2 + [b"HTTP/1.1 200 OK"]
    assert [a[2]["lease"]["job"] for a in answers[:2]] == ["j1", "j2"]


def test_a_hot_call_asking_to_close_is_answered_then_closed(
    hot_app: tuple[Any, SqliteStore],
) -> None:
    app, _ = hot_app

    async def run() -> Recorder:
        protocol, transport = _connect(app)
        protocol.data_received(_acquire("j1", extra=b"connection: close\r\n"))
        await _until(lambda: transport.closed)
        return transport

    transport = asyncio.run(run())
    _assert_one_closing_answer(transport, b"HTTP/1.1 201 Created")


@pytest.mark.parametrize(
    ("request_bytes", "status", "field"),
    [
        (_post("/v1/leases", b'{"job":"j1","slots":1'), b"HTTP/1.1 400 Bad Request", None),
        (
            _post("/v1/leases", b'{"job":"j1","slots":0,"ttl":30}'),
            b"HTTP/1.1 400 Bad Request",
            "slots",
        ),
        (_post("/v1/leases", b"{}", auth=b"Bearer nope"), b"HTTP/1.1 401 Unauthorized", None),
    ],
    ids=["bad JSON", "out of range", "bad token"],
)
def test_a_call_the_protocol_cannot_take_is_answered_by_the_app(
    hot_app: tuple[Any, SqliteStore], request_bytes: bytes, status: bytes, field: str | None
) -> None:
    app, _ = hot_app

    async def run() -> Recorder:
        protocol, transport = _connect(app)
        protocol.data_received(request_bytes)
        await _until(lambda: bool(transport.writes))
        await asyncio.sleep(0.05)
        return transport

    transport = asyncio.run(run())
    ((got, _, body),) = _answers(transport.writes)
    assert got == status, body
    assert body["status"] == int(status.split()[1])
    if field is not None:
        assert body["field"] == field


def test_a_client_gone_before_its_grant_is_durable_is_sent_nothing(
    hot_app: tuple[Any, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, store = hot_app
    fsync = HeldFsync(monkeypatch, store)

    async def run() -> Recorder:
        protocol, transport = _connect(app)
        fsync.gate.clear()
        protocol.data_received(_acquire("j1"))
        await asyncio.sleep(0.1)
        protocol.connection_lost(None)
        fsync.gate.set()
        await _until(lambda: fsync.calls >= 1)
        await asyncio.sleep(0.1)
        return transport

    transport = asyncio.run(run())
    assert transport.writes == []  # Recorder also refuses a write after close
    assert app.asgi_handler.served == 0


def test_a_shutdown_while_a_hot_call_waits_closes_after_its_answer(
    hot_app: tuple[Any, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, store = hot_app
    fsync = HeldFsync(monkeypatch, store)

    async def run() -> tuple[bool, Recorder]:
        protocol, transport = _connect(app)
        fsync.gate.clear()
        protocol.data_received(_acquire("j1"))
        await asyncio.sleep(0.1)
        protocol.shutdown()  # the server stopping: the answer in flight still leaves
        closed_early = transport.closed
        fsync.gate.set()
        await _until(lambda: transport.closed)
        return closed_early, transport

    closed_early, transport = asyncio.run(run())
    assert not closed_early
    _assert_one_closing_answer(transport, b"HTTP/1.1 201 Created")


def test_a_bug_in_a_hot_call_is_a_logged_500_and_a_closed_connection(
    hot_app: tuple[Any, SqliteStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = hot_app

    monkeypatch.setattr(app.asgi_handler, "render", _raising("a bug"))

    async def run() -> Recorder:
        protocol, transport = _connect(app)
        protocol.data_received(_acquire("j1"))
        await _until(lambda: transport.closed)
        return transport

    transport = asyncio.run(run())
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close\r\n" in written
    assert written.endswith(b"\r\n\r\nInternal Server Error")
    assert any(r.getMessage() == "hot call failed" and r.exc_info for r in caplog.records)


def _jobs(app: Any) -> list[str]:
    scheduler: Scheduler = app.asgi_handler._ctx.scheduler
    return sorted(lease.job for lease in scheduler.leases())


def test_a_call_pipelined_behind_an_answer_given_at_once_is_answered_too(
    hot_app: tuple[Any, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The renewal needs no fsync, so its answer is ready at once; the grant behind it in
    # the same segment waits for one. The connection's keep-alive timer must not be
    # running while that grant waits (it would close the connection under it).
    app, store = hot_app
    fsync = HeldFsync(monkeypatch, store)

    async def run() -> Recorder:
        renew = await _renewal_of_a_grant(app)
        protocol, transport = _connect(app, keep_alive=1)
        fsync.gate.clear()
        protocol.data_received(renew + _acquire("j2"))
        await asyncio.sleep(1.3)  # longer than the keep-alive timeout
        fsync.gate.set()
        await _until(lambda: len(_answers(transport.writes)) == 2)
        return transport

    transport = asyncio.run(run())
    statuses = [a[0] for a in _answers(transport.writes)]
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created"]


def test_a_call_pipelined_behind_a_closing_answer_is_never_run(
    hot_app: tuple[Any, SqliteStore],
) -> None:
    # uvicorn closes every HTTP/1.0 connection after its answer, keep-alive or not; a
    # request behind it must not be decided (nobody would hear of its lease). The
    # renewal is answered at once (it needs no fsync), before the grant is parsed.
    app, _ = hot_app

    async def run() -> Recorder:
        renew = await _renewal_of_a_grant(app, extra=b"connection: keep-alive\r\n")
        renew = renew.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        protocol, transport = _connect(app)
        protocol.data_received(renew + _acquire("j2"))
        await _until(lambda: transport.closed)
        await asyncio.sleep(0.1)
        return transport

    transport = asyncio.run(run())
    _assert_one_closing_answer(transport, b"HTTP/1.1 200 OK")
    assert _jobs(app) == ["j1"]


def test_a_shutdown_while_a_hot_calls_body_arrives_answers_it_then_closes(
    hot_app: tuple[Any, SqliteStore],
) -> None:
    app, _ = hot_app
    request = _acquire("j1")

    async def run() -> tuple[bool, Recorder]:
        protocol, transport = _connect(app)
        protocol.data_received(request[:-5])  # the headers and most of the body
        protocol.shutdown()
        closed_early = transport.closed
        protocol.data_received(request[-5:])
        await _until(lambda: transport.closed)
        return closed_early, transport

    closed_early, transport = asyncio.run(run())
    assert not closed_early
    _assert_one_closing_answer(transport, b"HTTP/1.1 201 Created")


def test_a_failure_after_the_answer_is_written_leaves_the_connection_serving(
    hot_app: tuple[Any, SqliteStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = hot_app

    monkeypatch.setattr(app.asgi_handler, "answered", _raising("a metrics bug"))

    async def run() -> Recorder:
        protocol, transport = _connect(app)
        protocol.data_received(_acquire("j1"))
        await _until(lambda: len(_answers(transport.writes)) == 1)
        protocol.data_received(_acquire("j2"))  # the same connection serves the next
        await _until(lambda: len(_answers(transport.writes)) == 2)
        return transport

    transport = asyncio.run(run())
    assert [a[2]["lease"]["job"] for a in _answers(transport.writes)] == ["j1", "j2"]
    assert not transport.closed
    assert any(r.getMessage() == "hot call metrics failed" for r in caplog.records)
