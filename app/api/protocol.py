"""uvicorn's httptools protocol, with each response's head and first body bytes written together.

uvicorn writes a response's status line and headers in one `transport.write`, and its body in
another: two system calls and two TCP segments for every JSON answer. On loopback or a LAN the
first segment wakes the client, which then waits for the second. Here the head is held back and
goes out with the next write (the body, or the first events of a stream), or at the loop's next
turn if none comes first, so a response that has nothing else to send yet is not delayed by
more than that.

`serve` uses this protocol; so does the tests' server, so every test goes through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeldHead:
    """The transport as uvicorn's protocol sees it: everything passes through, but for the
    write after `hold()`, which waits for the next one (or the next turn of the loop)."""

    __slots__ = ("_transport", "_loop", "_held", "_holding")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._holding = False

    def hold(self) -> None:
        self._holding = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._holding:
            self._holding = False
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        self._holding = False
        self._flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def close(self) -> None:
        self._holding = False
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._holding = None, False
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        held = _HeldHead(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(held)  # type: ignore[arg-type]
        self._held_head = held

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._held_head.hold()  # the next write is this request's response head
