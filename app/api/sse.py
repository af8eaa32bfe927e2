"""SSE framing of Responses stream events, and the streaming response that writes them.

Each event is one frame, `event: <type>\\ndata: <one-line JSON>\\n\\n`, encoded once and handed
to the server in a single write (several frames that are ready together go in one write).

Why not sse-starlette's `EventSourceResponse` (which this replaced on the hot path): it runs
every stream in an anyio task group of four tasks (the body iterator, the ping loop, the
disconnect listener, the shutdown listener), each wrapped in a cancel-on-finish coroutine, plus
an anyio cancel scope around every single send for its send timeout. With our own producer task
that was six tasks and a scope per write, most of a 16-token stream's fixed cost (about a third
of its CPU in the profile). `EventStream` keeps the same behaviour with three plain asyncio
tasks: the request task writes, one task produces the events, one waits for the client's
disconnect. Keep-alive comments and the send timeout ride on one timer per stream; server
shutdown is watched once per process (`OpenStreams`), not once per stream.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

# A reader that accepts nothing for this long is treated as gone (checked at each keep-alive
# tick, so it is noticed up to one keep-alive interval later).
SEND_TIMEOUT_SECONDS = 60
# Frames produced but not yet written, at most, before the producer waits for the reader.
MAX_PENDING_FRAMES = 256
# How often the process checks whether the server is shutting down.
SHUTDOWN_POLL_SECONDS = 0.5
# What Starlette's `init_headers` would make of our headers and media type, made once.
_RAW_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


def frame(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _ping() -> bytes:
    return f": ping - {datetime.now(UTC)}\n\n".encode()


class SendTimeoutError(TimeoutError):
    """The client accepted no bytes for the send timeout (`SEND_TIMEOUT_SECONDS`)."""


class OpenStreams:
    """The event streams open in this process. When the server starts shutting down (uvicorn's
    `should_exit`, set by SIGTERM/SIGINT) they are ended as if their clients had gone: each
    generation stops and is stored `cancelled`, instead of holding the shutdown for as long as
    the slowest generation runs. One polling task per process, owned by the app's lifespan."""

    def __init__(self) -> None:
        self._stops: set[Callable[[], None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.exiting = False

    def add(self, stop: Callable[[], None]) -> None:
        if self.exiting:
            stop()
        self._stops.add(stop)

    def discard(self, stop: Callable[[], None]) -> None:
        self._stops.discard(stop)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="sse-shutdown-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._stop_all()

    def _stop_all(self) -> None:
        self.exiting = True
        for stop in list(self._stops):
            stop()

    async def _watch(self) -> None:
        while not _server_exiting():
            await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
        self._stop_all()


def _server_exiting() -> bool:
    # uvicorn installs its `handle_exit` as the SIGTERM handler while it serves: a bound method
    # of the server, whose `should_exit` says it is shutting down (what sse-starlette checks).
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


class EventStream(Response):
    """`text/event-stream` of `events`: a frame per event, several to a write when several are
    ready at once; keep-alive comments every `keepalive` seconds; the client's disconnect (or
    server shutdown) closes `events`, whose cleanup (closing the upstream request, storing the
    partial response) runs to its end before the response returns.

    Each write to the client costs the same (the ASGI middleware stack, uvicorn, a system call)
    whether it carries one frame or ten. So the events are produced in a task of their own, and
    every time the writer is free it sends all the frames produced since, joined: a frame is
    never split or delayed (a delta that arrives alone is written alone, at once), but a burst of
    upstream chunks that arrived in one read goes out in one write. At most
    `MAX_PENDING_FRAMES` wait for a slow reader before the producer pauses, so memory stays
    bounded. A reader that accepts nothing for `send_timeout` seconds is treated as gone."""

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[dict[str, Any], None],
        keepalive: float,
        streams: OpenStreams | None = None,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
    ) -> None:
        self.status_code = 200
        self.background = None  # FastAPI reads it, and sets it to a route's BackgroundTasks
        self.raw_headers = list(_RAW_HEADERS)  # a route may add headers: its own list
        self._events = events
        self._keepalive = keepalive
        self._streams = streams
        self._send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = _Writer(self._events, self._keepalive, self._streams, self._send_timeout)
        start = {"type": "http.response.start", "status": self.status_code}
        await writer.run(receive, send, {**start, "headers": self.raw_headers})
        if self.background is not None:
            await self.background()


class _Writer:
    """The state of one stream, shared by the writer (the request task), the producer task, the
    disconnect listener and the keep-alive timer."""

    def __init__(
        self,
        events: AsyncGenerator[dict[str, Any], None],
        keepalive: float,
        streams: OpenStreams | None,
        send_timeout: float,
    ) -> None:
        self.events = events
        self.keepalive = keepalive
        self.send_timeout = send_timeout
        self.streams = streams
        self.loop = asyncio.get_running_loop()
        self.pending: list[bytes] = []
        self.wake = asyncio.Event()  # frames are pending, a ping is due, or the stream ended
        self.asleep = False  # the writer waits for `wake`
        self.drained = asyncio.Event()  # the writer took the pending frames
        self.ended = False
        self.gone = False  # the client disconnected (or the server is shutting down)
        self.disconnected = False
        self.ping_due = False
        self.failure: Exception | None = None
        self.sending_since: float | None = None
        self.timed_out = False
        self.writer: asyncio.Task[Any] | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def produce(self) -> None:
        try:
            pending = self.pending
            async with aclosing(self.events):
                async for event in self.events:
                    pending.append(frame(event))
                    if self.asleep:  # once per burst, not once per event
                        self.asleep = False
                        self.wake.set()
                    if len(pending) >= MAX_PENDING_FRAMES:
                        self.drained.clear()
                        await self.drained.wait()
        except Exception as exc:  # raised to the writer, as if it had iterated `events` itself
            self.failure = exc
        finally:
            self.ended = True
            self.wake.set()

    async def listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.leave()

    def leave(self) -> None:
        self.gone = True
        self.wake.set()

    def tick(self) -> None:
        """Every `keepalive` seconds: a ping is due; a send stuck for too long ends the stream."""
        self.timer = self.loop.call_later(self.keepalive, self.tick)
        since = self.sending_since
        if since is not None and self.loop.time() - since > self.send_timeout:
            if self.writer is not None and not self.timed_out:
                self.timed_out = True
                self.writer.cancel()
            return
        self.ping_due = True
        self.wake.set()

    async def send(self, send: Send, message: Message) -> None:
        self.sending_since = self.loop.time()
        await send(message)
        self.sending_since = None

    async def run(self, receive: Receive, send: Send, start: Message) -> None:
        self.writer = asyncio.current_task()
        producer = self.loop.create_task(self.produce())
        listener: asyncio.Task[None] | None = None
        self.timer = self.loop.call_later(self.keepalive, self.tick)
        try:
            if self.streams is None or not self.streams.exiting:
                # The producer goes first, up to its first wait: a generation's is the upstream
                # call, which is then on its way while the head and the opening events are
                # written here, instead of after them.
                await asyncio.sleep(0)
            await send(start)
            listener = self.loop.create_task(self.listen(receive))
            if self.streams is not None:
                self.streams.add(self.leave)
            await self._write(send)
        except asyncio.CancelledError:
            if not self.timed_out:
                raise
            if self.writer is not None:
                self.writer.uncancel()
            raise SendTimeoutError("the client accepted no bytes for too long") from None
        finally:
            self.timer.cancel()
            if self.streams is not None:
                self.streams.discard(self.leave)
            if listener is not None:
                listener.cancel()
            if not producer.done():
                producer.cancel()
            # The producer's cleanup (closing the upstream, storing the partial response) runs
            # to its end even if we are cancelled meanwhile; that cancellation is kept for after.
            interrupted = False
            while not producer.done():
                try:
                    await asyncio.shield(producer)
                except asyncio.CancelledError:
                    interrupted = interrupted or not producer.done()
            # A producer cancelled before it ever ran (the stream ended at once: the server was
            # already exiting) never entered `aclosing(self.events)`. Closing an unstarted or a
            # closed generator runs none of its code.
            await self.events.aclose()
            if listener is not None:
                with suppress(asyncio.CancelledError):
                    await listener
            if interrupted:
                raise asyncio.CancelledError

    async def _write(self, send: Send) -> None:
        pending = self.pending
        while True:
            if self.gone:
                # A client still there (the server is exiting) is told the body has ended,
                # rather than left to see its connection dropped.
                if not self.disconnected:
                    await self.send(
                        send, {"type": "http.response.body", "body": b"", "more_body": False}
                    )
                return
            if pending:
                batch = b"".join(pending) if len(pending) > 1 else pending[0]
                pending.clear()
                self.drained.set()
                # The producer has ended (its last frames are in this batch): the batch ends the
                # body too, one write instead of two.
                last = self.ended and self.failure is None
                await self.send(
                    send, {"type": "http.response.body", "body": batch, "more_body": not last}
                )
                if last:
                    return
            elif self.ended:
                if self.failure is not None:
                    raise self.failure
                await self.send(
                    send, {"type": "http.response.body", "body": b"", "more_body": False}
                )
                return
            elif self.ping_due:
                self.ping_due = False
                await self.send(
                    send, {"type": "http.response.body", "body": _ping(), "more_body": True}
                )
            else:
                # Checked and cleared with no await in between: no wake-up can be lost.
                self.wake.clear()
                self.asleep = True
                await self.wake.wait()
                self.asleep = False


def event_stream(
    events: AsyncGenerator[dict[str, Any], None],
    keepalive: float,
    streams: OpenStreams | None = None,
    send_timeout: float = SEND_TIMEOUT_SECONDS,
) -> EventStream:
    return EventStream(events, keepalive, streams, send_timeout)
