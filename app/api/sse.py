"""SSE framing of Responses stream events.

Each event is one frame, `event: <type>\\ndata: <one-line JSON>\\n\\n`, encoded once and handed
to the server in a single write. sse-starlette supplies the rest: keep-alive comments during
long upstream silences (so proxies do not cut idle streams), client-disconnect detection (it
cancels the producer, whose cleanup closes the upstream request), and a send timeout so a reader
that stopped reading cannot hold a generation forever.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from sse_starlette import EventSourceResponse

# A reader that accepts nothing for this long is treated as gone.
SEND_TIMEOUT_SECONDS = 60


def frame(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def frames(events: AsyncGenerator[dict[str, Any], None]) -> AsyncIterator[bytes]:
    # aclosing: when sse-starlette closes us (client gone), close the producer at once so
    # its cleanup (closing the upstream, storing the partial response) runs now, not at GC.
    async with aclosing(events):
        async for event in events:
            yield frame(event)


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
