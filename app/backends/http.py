"""The upstream HTTP/1.1 client: a pool of keep-alive connections to one server, a POST of bytes
per request, and its answer parsed by httptools (the parser uvicorn's server side uses), read
whole or chunk by chunk as it arrives.

Why not aiohttp's `ClientSession`: the gateway only ever POSTs a JSON body to a few fixed URLs of
a server it knows, and the session's general request path (URL and header models, cookie jar,
tracing hooks, payload registry, timer and stream-reader layers) cost three times the CPU of the
whole request here: 181-218 µs against 58-65 µs per POST at c=1 on the benchmark machine,
loop and system calls included (`bench/RESULTS.md`). On the gateway's hot path, one request and
its upstream call cost about a millisecond of CPU in all, so that is an eighth of it.

What it does, as `UpstreamClient` relies on:
- one connection per request in flight, at most `limit` per server; a request waits up to the
  connect timeout for a free one, as for opening one; idle ones are reused newest first and
  closed after `keepalive` seconds (under the 5 s that uvicorn-based servers such as vLLM keep
  them: a POST sent on a connection the server closes at that moment would be lost, and POSTs
  are not retried);
- TLS with the caller's context, and SNI and certificate checks for the URL's host;
- `Accept-Encoding: gzip, deflate`, and such answers decoded (streams chunk by chunk);
- the read timeout bounds each wait for bytes (the head, then every chunk), not the whole answer;
- a streamed answer that is not read fast enough stops being read from the socket (the server
  then blocks on its writes) until the reader catches up;
- an answer read to its end goes back to the pool (`release`); one closed early (`close`) closes
  its connection, which is how the server learns that nobody reads any more.

Not done, unlike aiohttp: proxies (the session never read `HTTP_PROXY` either), Happy Eyeballs
(a name's addresses are tried one after the other within one connect timeout, which a first
address that does not answer can use up), a DNS cache (a name is
resolved for each new connection; pooled ones are reused).

Faults are `TransportError` (refused, reset, closed before the answer ended, malformed) and
`ConnectTimeout` / `ReadTimeout` (both `TimeoutError`s); `UpstreamClient` maps them to ours.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools

# A streamed answer's unread bytes, past which its connection stops reading from the socket.
HIGH_WATER = 1 << 18


class TransportError(Exception):
    """The connection failed, or the server's answer did not make sense as HTTP/1.1."""


class ConnectTimeout(TimeoutError):
    """No connection within the connect timeout (opening one, or waiting for a free one)."""


class ReadTimeout(TimeoutError):
    """No byte of the answer within the read timeout."""


def _expire(waiter: asyncio.Future[Any], error: type[TimeoutError]) -> None:
    if not waiter.done():
        waiter.set_exception(error())


def _decoder(encoding: str | None) -> zlib._Decompress | None:
    encoding = (encoding or "").strip().lower()
    if not encoding or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise TransportError(f"the answer is encoded as {encoding!r}, which this client cannot read")


class Response:
    """An answer whose head has arrived; its body arrives through the connection."""

    __slots__ = (
        "status",
        "headers",
        "_connection",
        "_chunks",
        "_size",
        "_waiter",
        "_done",
        "_error",
        "_decoder",
        "_keep_alive",
        "_released",
        "_whole",
        "_compressed",
    )

    def __init__(self, connection: _Connection, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers  # names lowercased; repeated fields joined with ", "
        self._connection = connection
        self._chunks: list[bytes] = []
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._decoder = _decoder(headers.get("content-encoding"))
        self._keep_alive = False
        self._released = False
        self._whole = False  # `read` wants all of it: no pausing
        self._compressed = 0  # bytes the decoder was given

    # --- fed by the connection ---------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._whole:
            self._connection.pause()
        self._wake()

    def _finish(self, keep_alive: bool) -> None:
        self._done, self._keep_alive = True, keep_alive
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        loop = self._connection.loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._connection.read_timeout, _expire, waiter, ReadTimeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        self._connection.resume()
        if self._decoder is not None:
            data = self._decompress(data)
        return data

    def _decompress(self, data: bytes) -> bytes:
        decoder = self._decoder
        assert decoder is not None
        try:
            self._compressed += len(data)
            data = decoder.decompress(data)
            if self._done:  # the last of it: the decoder is finished and dropped
                data += decoder.flush()
                self._decoder = None
                if self._compressed and not decoder.eof:
                    raise TransportError("the answer's compressed body is cut short")
            return data
        except zlib.error as exc:
            raise TransportError(f"the answer's compressed body is corrupt: {exc}") from exc

    # --- read by the caller ------------------------------------------------------------------

    async def read(self) -> bytes:
        """The whole body (decoded); then the connection goes back to the pool."""
        self._whole = True
        self._connection.resume()
        while not self._done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:
            raise self._error
        body = self._take() if self._chunks or self._decoder is not None else b""
        self.release()
        return body

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's bytes (decoded) as they arrive, in pieces of any size."""
        while True:
            if self._chunks:
                data = self._take()
                if data:
                    yield data
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                if self._decoder is not None:
                    rest = self._decompress(b"")
                    if rest:
                        yield rest
                return
            await self._wait()

    def release(self) -> None:
        """Done with it: a connection whose answer ended goes back to the pool, any other closes."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        if self._done and self._keep_alive and self._error is None and not self._chunks:
            connection.pool.put_back(connection)
        else:
            connection.close()

    def close(self) -> None:
        """Drop the answer and its connection (the server sees the connection close)."""
        if not self._released:
            self._released = True
            self._connection.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: ConnectionPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.read_timeout = 0.0
        self.idle_since = 0.0
        self.closed = False
        self.counted = False  # holds one of the pool's slots (set once it is connected)
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._fields: list[tuple[bytes, bytes]] = []
        self._until_close = False  # a body with neither a length nor chunks: it ends at EOF
        self._informational = False
        self._paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # An upgrade (101) is no answer to a POST of ours either.
            self._failed(TransportError(f"the server sent a malformed answer: {exc!r}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost ends what is in flight

    def connection_lost(self, exc: Exception | None) -> None:
        response = self._response
        if response is not None and self._until_close and not response._done and exc is None:
            response._finish(False)  # its body ends here (a reset instead cuts it short)
        self._failed(TransportError("the server closed the connection before the answer ended"))
        self._gone()

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        fields, self._fields = self._fields, []
        if status < 200:  # 100 Continue and the like: the real answer follows
            self._informational = True
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in fields:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._until_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        try:
            response = Response(self, status, headers)
        except TransportError as exc:
            self._failed(exc)
            self.close()
            return
        self._response = response
        head = self._head
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        self._fields = []  # a chunked body's trailer fields, which are not kept
        if self._informational:
            self._informational = False
            return
        if self._response is not None:
            self._response._finish(self.parser.should_keep_alive())

    # --- used by the pool and the response ---------------------------------------------------

    async def send(self, data: bytes, read_timeout: float) -> Response:
        assert self.transport is not None
        self.read_timeout = read_timeout
        self._response = None
        head: asyncio.Future[Response] = self.loop.create_future()
        self._head = head
        self.transport.write(data)
        timer = self.loop.call_later(read_timeout, _expire, head, ReadTimeout)
        try:
            return await head
        finally:
            timer.cancel()
            self._head = None

    def usable(self, now: float) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and now - self.idle_since < self.pool.keepalive
        )

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._failed(TransportError("the connection was closed"))
        self._gone()

    def _failed(self, error: BaseException) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        if self._response is not None:
            self._response._fail(error)

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            if self.counted:
                self.pool.lost(self)


class ConnectionPool:
    """Keep-alive connections to one server (host, port, TLS or not).

    First come, first served: a request that finds every connection busy waits in line, and a
    connection that comes back (or a slot that frees) goes to the first in line, not to whoever
    asks next."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int,
        connect_timeout: float,
        keepalive: float,
    ) -> None:
        self.host, self.port = host, port
        self.keepalive = keepalive
        self._ssl = ssl_context
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle: deque[_Connection] = deque()
        self._open = 0  # connections open or being opened, and slots handed to waiters
        # Each waiter gets a connection, or None: a slot, reserved for it, to connect with.
        self._waiting: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def post(self, data: bytes, read_timeout: float, connect_timeout: float) -> Response:
        """Send `data` (a whole request) on a pooled or new connection; the answer's head."""
        connection = await self._acquire(connect_timeout)
        try:
            return await connection.send(data, read_timeout)
        except BaseException:
            connection.close()
            raise

    async def _acquire(self, timeout: float) -> _Connection:
        deadline = time.monotonic() + timeout
        while True:
            if self._closed:
                raise TransportError("the client is closed")
            if not self._in_line():
                now = time.monotonic()
                while self._idle:
                    connection = self._idle.pop()  # the newest: the likeliest still open
                    if connection.usable(now):
                        return connection
                    connection.close()
                if self._open < self._limit:
                    self._open += 1
                    return await self._connect(deadline - now)
            handed = await self._wait_in_line(deadline - time.monotonic())
            if handed is None:  # a slot, reserved for this caller
                return await self._connect(deadline - time.monotonic())
            if handed.usable(time.monotonic()):
                return handed
            handed.close()  # gone in the meantime: start over

    async def _wait_in_line(self, timeout: float) -> _Connection | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiting.append(waiter)
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter, ConnectTimeout)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed something, then cancelled before it could be used: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._release_slot()
                else:
                    self.put_back(handed)
            raise
        finally:
            timer.cancel()
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    def _in_line(self) -> bool:
        """Whether anyone waits (the timed-out in front, not yet gone, do not count)."""
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        return bool(self._waiting)

    def _next_waiter(self) -> asyncio.Future[_Connection | None] | None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                return waiter
        return None

    async def _connect(self, timeout: float) -> _Connection:
        """Open a connection in a slot already counted in `_open`."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            self._release_slot()
            raise ConnectTimeout() from exc
        except OSError as exc:  # refused, unreachable, TLS handshake failed (ssl.SSLError)
            self._release_slot()
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._release_slot()
            raise
        connection.counted = True
        if connection.closed:  # lost between its handshake and now
            self._release_slot()
            raise TransportError("the server closed the connection at once")
        return connection

    def put_back(self, connection: _Connection) -> None:
        if self._closed or connection.closed:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(connection)
        else:
            self._idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)
        self._release_slot()

    def _release_slot(self) -> None:
        waiter = self._next_waiter()
        if waiter is not None and not self._closed:
            waiter.set_result(None)  # the slot passes to it, still counted
        else:
            self._open -= 1

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(TransportError("the client is closed"))
