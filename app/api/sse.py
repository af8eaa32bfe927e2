"""SSE framing of Responses stream events.

Each event is one frame, `event: <type>\\ndata: <one-line JSON>\\n\\n`, encoded once and handed
to the server in a single write. sse-starlette supplies the rest: keep-alive comments during
long upstream silences (so proxies do not cut idle streams), client-disconnect detection (it
cancels the producer, whose cleanup closes the upstream request), and a send timeout so a reader
that stopped reading cannot hold a generation forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, suppress
from typing import Any

import anyio
import orjson
from sse_starlette import EventSourceResponse

# A reader that accepts nothing for this long is treated as gone.
SEND_TIMEOUT_SECONDS = 60
# Frames produced but not yet written, at most, before the producer waits for the reader.
MAX_PENDING_FRAMES = 256


def frame(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def frames(events: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    """The frames of `events`, several to a write when several are ready at once.

    Each write to the client costs the same (the ASGI middleware stack, uvicorn, sse-starlette's
    send timeout) whether it carries one frame or ten, and was three quarters of the CPU of a
    stream. So the events are produced in a task of their own, and every time the writer is
    free it sends all the frames produced since, joined: a frame is never split or delayed (a
    delta that arrives alone is written alone, at once), but a burst of upstream chunks that
    arrived in one read goes out in one write. At most `MAX_PENDING_FRAMES` wait for a slow
    reader before the producer pauses, so memory stays bounded.

    Closing us (client gone) cancels the producer, whose cleanup (closing the upstream
    request, storing the partial response) runs to its end before we return."""
    pending: list[bytes] = []
    ready = asyncio.Event()  # frames are pending, or the producer ended
    drained = asyncio.Event()  # the writer took the pending frames
    ended = False
    failure: Exception | None = None

    async def produce() -> None:
        nonlocal ended, failure
        try:
            async with aclosing(events):
                async for event in events:
                    pending.append(frame(event))
                    ready.set()
                    if len(pending) >= MAX_PENDING_FRAMES:
                        drained.clear()
                        await drained.wait()
        except Exception as exc:  # raised to the writer, as if it had iterated `events` itself
            failure = exc
        finally:
            ended = True
            ready.set()

    producer = asyncio.create_task(produce())
    try:
        while True:
            if pending:
                batch = b"".join(pending) if len(pending) > 1 else pending[0]
                pending.clear()
                drained.set()
                yield batch
            elif ended:
                if failure is not None:
                    raise failure
                return
            else:
                # Checked and cleared with no await in between: no wake-up can be lost.
                ready.clear()
                await ready.wait()
    finally:
        if not producer.done():
            producer.cancel()
        with anyio.CancelScope(shield=True), suppress(asyncio.CancelledError):
            await producer


def event_stream(
    events: AsyncGenerator[dict[str, Any], None], keepalive: float
) -> EventSourceResponse:
    return EventSourceResponse(
        frames(events),
        ping=keepalive,
        sep="\n",
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
