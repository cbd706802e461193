"""HttpProtocol: uvicorn's httptools protocol, each answer in one write.

uvicorn writes a response's header block and its body separately, and uvloop sends
each at once: two sends per answer. The protocol here holds the header block for the
body, or to the end of the loop's turn. Driven through uvicorn's real request cycle,
with a transport that records what would reach the socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from support.internals import HttpProtocol


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
