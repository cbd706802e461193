"""``HttpProtocol``: uvicorn's httptools protocol, with a response's writes joined.

uvicorn writes a response's header block when the app sends ``http.response.start``
and its body when it sends ``http.response.body``, and uvloop sends each write at once:
two ``send`` calls, and two TCP segments, for every answer. On loopback the second send
also runs the receiver's TCP stack; strace of a renewal run counted 2.07 writes per
request. Here the header block waits for the body's first write and leaves with it, or
at the end of the event loop's turn if no body follows in that turn (a stream whose
first event comes later), so nothing waits longer than the turn that wrote it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["HttpProtocol"]


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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, each response written in one piece."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holding: set[_JoinedWrites] = set()

    def on_headers_complete(self) -> None:
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
        super().shutdown()
