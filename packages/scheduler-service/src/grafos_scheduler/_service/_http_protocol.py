"""``HttpProtocol``: uvicorn's httptools protocol, with a response's writes joined.

uvicorn writes a response's header block when the app sends ``http.response.start``
and its body when it sends ``http.response.body``, and uvloop sends each write at once:
two ``send`` calls, and two TCP segments, for every answer. On loopback the second send
also runs the receiver's TCP stack; strace of a renewal run counted 2.07 writes per
request. Here the header block waits for the body's first write and leaves with it, or
at the end of the event loop's turn if no body follows in that turn (a stream whose
first event comes later), so nothing waits longer than the turn that wrote it.

It also answers the hot lease calls itself, when the app has a
:class:`~._hot_path.HotPath`: from the parser's callbacks, with no ASGI task, scope,
messages or middleware, since for a renewal those cost about as much as the renewal.
A call it cannot answer in full (a body that does not decode, a missing token, an
``Expect`` header, a pipelined request behind one still answering) is handed to
uvicorn's own request cycle unchanged, so the app answers it as it always did.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from ._hot_path import HotCall, HotPath

__all__ = ["HttpProtocol"]

_logger = logging.getLogger("grafos_scheduler.service")
_JSON = b"content-type: application/json\r\ncontent-length: "
# The default headers' block, by the list uvicorn holds them in (see _default_headers).
_DEFAULTS: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}


class _JoinedWrites:
    """The transport a response writes through: its first write (the header block)
    is held until the next write or the end of the loop's turn, and joined to it."""

    __slots__ = ("_first", "_held", "_holding", "_loop", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        holding: set[_JoinedWrites],
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True
        self._holding = holding  # the connection's writers that hold bytes now

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self.flush(data)
        elif self._first:
            self._first = False
            self._held = bytes(data)
            self._holding.add(self)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self, more: bytes = b"") -> None:
        held, self._held = self._held, None
        self._holding.discard(self)
        if held is not None and not self._transport.is_closing():
            self._transport.write(held + more)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _NoEvent:
    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _Answering:
    """Stands in for uvicorn's request cycle while the protocol answers a hot call:
    a pipelined request waits behind it, and a lost connection or a shutdown marks it,
    as they mark a cycle."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _NO_EVENT

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response written in one piece, and the hot
    lease calls answered without the ASGI app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holding: set[_JoinedWrites] = set()
        self._hot = HotPath.of(self.app) if self.limit_concurrency is None else None
        self._call: HotCall | None = None
        self._chunks: list[bytes] = []
        self._closing = False  # a shutdown came while a hot call's body arrived

    def on_headers_complete(self) -> None:
        hot = self._hot
        if hot is not None and self._idle():
            call = self._hot_call(hot)
            if call is not None:
                self._call = call
                self._chunks = []
                return
        self._start_cycle()

    def on_body(self, body: bytes) -> None:
        if self._call is not None:
            self._chunks.append(body)  # at most the declared length, within the limit
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        call = self._call
        if call is None:
            super().on_message_complete()
            return
        self._call = None
        raw = b"".join(self._chunks)
        self._chunks = []
        hot = self._hot
        assert hot is not None
        try:
            body = hot.decode(call, raw)
        except Exception:
            # The app refuses it, in its words: uvicorn's cycle, with the body read.
            self._start_cycle()
            if self._closing and self.cycle is not None:
                self.cycle.keep_alive = False  # a shutdown came while the body arrived
            super().on_body(raw)
            super().on_message_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        answering = _Answering(keep_alive and not self._closing)
        self.cycle = answering  # type: ignore[assignment]

        def done(outcome: Any) -> None:
            # Never from inside the parser: the rest of this segment (a pipelined
            # request) is parsed first and queues behind the answer, as in uvicorn.
            self.loop.call_soon(self._answer, answering, call, outcome)

        try:
            hot.answer_soon(call, body, done)
        except Exception:
            self.loop.call_soon(self._fail, answering, call)

    def _answer(self, answering: _Answering, call: HotCall, outcome: Any) -> None:
        hot = self._hot
        assert hot is not None
        try:
            status, payload = hot.render(call, outcome)
        except Exception:
            self._fail(answering, call)
            return
        self._send_answer(answering, call, status, payload)

    def _fail(self, answering: _Answering, call: HotCall) -> None:
        """A bug: logged, and answered as uvicorn answers one (a 500, then close)."""
        _logger.exception("hot call failed", extra={"event": "hot_call_failed"})
        self._send_answer(answering, call, 500, b"Internal Server Error", failed=True)

    def _idle(self) -> bool:
        """Nothing is answering on this connection, nothing waits behind it, and the
        client reads what it is sent."""
        cycle: RequestResponseCycle | None = self.cycle  # None before the first request
        return (
            (cycle is None or cycle.response_complete)
            and not self.pipeline
            and not self.expect_100_continue
            and not self.flow.write_paused
            and not self.parser.should_upgrade()
        )

    def _hot_call(self, hot: HotPath) -> HotCall | None:
        url: bytes = self.url
        # A query or an escaped path goes the long way (the app reads those right).
        if b"?" in url or b"%" in url or not url.startswith(b"/"):
            return None
        return hot.match(
            self.parser.get_method().decode("ascii"), url.decode("latin-1"), self.headers
        )

    def _send_answer(
        self,
        answering: _Answering,
        call: HotCall,
        status: int,
        payload: bytes,
        *,
        failed: bool = False,
    ) -> None:
        if answering.response_complete:
            return
        answering.response_complete = True
        if answering.disconnected or self.transport.is_closing():
            return  # the client went away; the decision stands, as in the app
        head = [STATUS_LINE[status], self._default_headers()]
        if failed:
            answering.keep_alive = False
            head.append(b"content-type: text/plain; charset=utf-8\r\ncontent-length: ")
        else:
            head.append(_JSON)
        head.append(str(len(payload)).encode())
        if not answering.keep_alive:
            head.append(b"\r\nconnection: close")
        head += [b"\r\n\r\n", payload]
        self.transport.write(b"".join(head))
        try:
            hot = self._hot
            if hot is not None and not failed:
                hot.answered(call, status)
        except Exception:  # the metrics must not leave the connection hanging
            _logger.exception("hot call metrics failed", extra={"event": "hot_call_failed"})
        finally:
            if not answering.keep_alive:
                self.transport.close()
            self.on_response_complete()

    def _default_headers(self) -> bytes:
        """The server's default headers (date, server) as one block of bytes."""
        headers = self.server_state.default_headers
        cached = _DEFAULTS.get(id(headers))
        if cached is None or cached[0] is not headers:
            # uvicorn sets a new list every second (the date): keep the last one only.
            _DEFAULTS.clear()
            block = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            cached = _DEFAULTS[id(headers)] = (headers, block)
        return cached[1]

    def _start_cycle(self) -> None:
        """uvicorn's request cycle for this request, its writes joined."""
        super().on_headers_complete()
        cycle: RequestResponseCycle | None = self.cycle  # None: a first request upgraded
        if cycle is not None and cycle.transport is self.transport:  # a new request's
            joined = _JoinedWrites(self.transport, self.loop, self._holding)
            cycle.transport = joined  # type: ignore[assignment]

    def shutdown(self) -> None:
        # uvicorn closes the connection itself after a finished answer: send what an
        # answer without a body (HEAD, 204) still holds first.
        for joined in list(self._holding):
            joined.flush()
        if self._call is not None:
            # A hot call whose body is still arriving is in flight, as a cycle would be:
            # it is answered, then the connection closes.
            self._closing = True
            return
        super().shutdown()
