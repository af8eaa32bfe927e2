"""The upstream HTTP client (app/backends/http.py) against real servers on loopback: TLS with a
CA of the test's own, keep-alive reuse and expiry, a connection the server drops while idle,
answers that end at EOF, malformed answers, large streamed bodies, and a pool that is full.

Each test runs its own server: an asyncio one that writes the bytes the case needs (most of
these are answers a well-behaved server never sends), or aiohttp's for TLS. The rest of the
client's behaviour (streaming, gzip, timeouts, cancellation, 401 retries, redirects, the pool
limit) is exercised through the gateway by the rest of the suite.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trustme
from aiohttp import web

from app.backends.upstream import UpstreamClient
from app.config import ModelConfig
from app.errors import UpstreamTimeoutError, UpstreamUnavailableError

ANSWER = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hi"}}]}
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def config(**extra: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {"name": "m", "backend": "chat_completions", "base_url": "http://x/v1", **extra}
    )


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head and Content-Length body), or b"" at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def json_answer(body: dict[str, Any], extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + extra
        + b"content-length: %d\r\n\r\n%s" % (len(data), data)
    )


class RawServer:
    """An asyncio server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


@asynccontextmanager
async def serving(
    handler: Handler, **extra: Any
) -> AsyncIterator[tuple[RawServer, UpstreamClient]]:
    """A `RawServer` running `handler`, and a client of it (closed on the way out)."""
    async with RawServer(handler) as server:
        client = UpstreamClient(config(**extra), server.url)
        try:
            yield server, client
        finally:
            await client.aclose()


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(json_answer(ANSWER))
        await writer.drain()


def test_connections_are_reused_then_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        monkeypatch.setattr("app.backends.upstream.KEEPALIVE_SECONDS", 0.3)
        async with serving(keep_alive) as (server, client):
            for _ in range(3):
                assert await client.post_json({"n": 1}) == ANSWER
            assert server.connections == 1
            await asyncio.sleep(0.4)  # past the keep-alive: a new connection
            assert await client.post_json({"n": 2}) == ANSWER
            assert server.connections == 2

    asyncio.run(go())


def test_a_connection_the_server_dropped_while_idle_is_not_used() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(json_answer(ANSWER))  # keep-alive, then closed anyway
        await writer.drain()

    async def go() -> None:
        async with serving(answer_once) as (server, client):
            assert await client.post_json({}) == ANSWER
            await asyncio.sleep(0.1)
            assert await client.post_json({}) == ANSWER
            assert server.connections == 2

    asyncio.run(go())


def test_an_answer_without_length_ends_at_eof_and_is_not_reused() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        writer.write(json.dumps(ANSWER).encode())
        await writer.drain()
        writer.close()

    async def go() -> None:
        async with serving(until_close) as (server, client):
            assert await client.post_json({}) == ANSWER
            assert await client.post_json({}) == ANSWER
            assert server.connections == 2

    asyncio.run(go())


@pytest.mark.parametrize(
    "reply",
    [b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"],
    ids=["not-http", "cut-short"],
)
def test_a_malformed_or_cut_answer_is_a_connection_failure(reply: bytes) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def go() -> None:
        async with serving(bad) as (server, client):
            with pytest.raises(UpstreamUnavailableError, match="failed: the server"):
                await client.post_json({})

    asyncio.run(go())


def test_a_large_stream_arrives_whole_through_a_slow_reader() -> None:
    lines = [b"data: " + json.dumps({"n": n, "pad": "x" * 1000}).encode() for n in range(4000)]

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked"
            b"\r\n\r\n"
        )
        for start in range(0, len(lines), 100):
            block = b"\n\n".join(lines[start : start + 100]) + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def go() -> None:
        async with serving(stream) as (server, client):
            seen = []
            async with client.stream_data({"stream": True}) as payloads:
                async for payload in payloads:
                    seen.append(json.loads(payload)["n"])
                    if len(seen) % 500 == 0:
                        await asyncio.sleep(0.02)  # the reader falls behind
            assert seen == list(range(4000))

    asyncio.run(go())


def test_a_full_pool_waits_up_to_the_connect_timeout() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def go() -> None:
        limits = {"max_connections": 1, "connect_timeout": 0.2, "timeout": 2}
        async with serving(never, **limits) as (server, client):
            first = asyncio.ensure_future(client.post_json({}))
            await asyncio.sleep(0.05)
            with pytest.raises(UpstreamTimeoutError):
                await client.post_json({})  # no free connection within 0.2 s
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            assert server.connections == 1

    asyncio.run(go())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_tls_upstream_checked_against_ssl_cert_file(
    ca: trustme.CA, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def chat(request: web.Request) -> web.Response:
        return web.json_response({**ANSWER, "got": await request.json()})

    async def go(trusted: bool) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(context)
        site = web.TCPSite(runner, "localhost", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        bundle = tmp_path / "ca.pem"
        (ca if trusted else trustme.CA()).cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        client = UpstreamClient(config(), f"https://localhost:{port}/v1/chat/completions")
        try:
            if trusted:
                assert (await client.post_json({"a": 1}))["got"] == {"a": 1}
            else:
                with pytest.raises(UpstreamUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.post_json({"a": 1})
        finally:
            await client.aclose()
            await runner.cleanup()

    asyncio.run(go(trusted=True))
    asyncio.run(go(trusted=False))


def test_a_gzip_stream_read_to_its_end_and_trailers_that_stay_with_their_answer() -> None:
    import gzip

    lines = b"".join(b'data: {"n": %d}\n\n' % n for n in range(50))
    packed = gzip.compress(lines)

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # 1: gzip, chunked, with trailers, in one write
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
            b"transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\nx-checksum: abc\r\ncontent-encoding: gzip\r\n\r\n"
            % (len(packed), packed)
        )
        await read_request(reader)  # 2: plain, on the same connection
        writer.write(json_answer(ANSWER))
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with serving(answers) as (server, client):
            async with client.stream_data({"stream": True}) as payloads:
                seen = [json.loads(payload)["n"] async for payload in payloads]
            assert seen == list(range(50))  # no [DONE]: read to the body's end
            assert await client.post_json({}) == ANSWER  # no trailer on this answer
            assert server.connections == 1

    asyncio.run(go())


def test_a_full_pool_serves_who_waits_first() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.03)
            writer.write(json_answer(ANSWER))
            await writer.drain()

    async def go() -> None:
        async with serving(slow, max_connections=1, connect_timeout=1) as (server, client):
            order: list[str] = []

            async def hog() -> None:  # back to back, as a caller with several calls does
                for _ in range(10):
                    await client.post_json({})
                    order.append("hog")

            async def once() -> None:
                await asyncio.sleep(0.01)
                await client.post_json({})
                order.append("once")

            await asyncio.gather(hog(), once())
            assert order.index("once") <= 1  # served next, not after the hog's ten

    asyncio.run(go())
