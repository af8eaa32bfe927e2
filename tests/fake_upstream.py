"""A fake OpenAI-compatible upstream: a real HTTP server (aiohttp, its own thread and loop).

It records every request and answers `POST /v1/chat/completions` from a script of behaviours the
test enqueues: a reply (text, tool calls, reasoning, finish reason, usage), an HTTP error, a
stall, a dropped connection or a malformed body. With nothing enqueued it answers
`echo: <last user text>`, so a gateway in front of it behaves like a tiny deterministic model.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning: str | None = None
    reasoning_key: str = "reasoning_content"
    refusal: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    delay: float = 0.0
    # Streaming only: seconds between chunks; after N data chunks drop the connection, send a
    # malformed chunk, or go silent for `stall` seconds.
    token_delay: float = 0.0
    drop_after: int | None = None
    malformed_after: int | None = None
    stall_after: int | None = None
    stall: float = 0.0
    # Extra response headers (`Set-Cookie`, say), and a gzip-encoded body.
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False


@dataclass
class Fail:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Disconnect:
    """Close the connection without answering."""


@dataclass
class Malformed:
    body: str = "{not json"


Behaviour = Reply | Fail | Disconnect | Malformed


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def fake_logprobs(piece: str, index: int, top: int) -> dict[str, Any]:
    """Deterministic log probabilities for one token, as Chat Completions reports them."""
    return {
        "token": piece,
        "logprob": -0.5 * index,
        "bytes": list(piece.encode()),
        "top_logprobs": [
            {"token": f"{piece}#{alt}", "logprob": -1.0 - alt, "bytes": None} for alt in range(top)
        ],
    }


def _tokens(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


def _text_pieces(messages: list[dict[str, Any]]) -> list[str]:
    pieces: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            pieces += content.split()
        for part in content if isinstance(content, list) else ():
            pieces += str(part.get("text", "")).split()
    return pieces


class FakeTokenizer:
    """A local server's `/tokenize`, as vLLM or llama.cpp's server offers it (`mode`), or none
    (404, as Ollama and OpenAI answer). vLLM counts the chat request itself: 5 tokens of
    template per message, one per word, 10 per tool. llama.cpp renders it with
    `/apply-template` and tokenizes that text: one token per word."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.requests: list[Recorded] = []

    def reset(self) -> None:
        self.mode = None
        self.requests.clear()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/apply-template", self._apply_template)

    @staticmethod
    def vllm_count(body: dict[str, Any]) -> int:
        messages = body["messages"]
        return 5 * len(messages) + len(_text_pieces(messages)) + 10 * len(body.get("tools") or ())

    @staticmethod
    def llama_prompt(body: dict[str, Any]) -> str:
        turns = [f"<|{m['role']}|> {' '.join(_text_pieces([m]))}" for m in body["messages"]]
        return " ".join([*turns, "<|assistant|>"])

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        if self.mode == "vllm":
            count = self.vllm_count(body)
            return web.json_response({"count": count, "max_model_len": 8192, "tokens": []})
        if self.mode == "llama.cpp":
            words = str(body["content"]).split() if "content" in body else []
            return web.json_response({"tokens": list(range(len(words)))})
        return web.json_response({"detail": "Not Found"}, status=404)

    async def _apply_template(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        if self.mode != "llama.cpp":
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"prompt": self.llama_prompt(body)})


class FakeUpstream:
    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.requests: list[Recorded] = []
        # Monotonic times at which a client went away in the middle of a streamed answer.
        self.disconnects: list[float] = []
        # Monotonic time at which the last streamed answer was completely written.
        self.finished_at: float | None = None
        # Chat requests being answered now, and the most there ever were at once, per model
        # asked for (a request an earlier test gave up on may still be in its handler).
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- control, from the test's thread -------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.disconnects.clear()
            self.max_in_flight.clear()
            self.tokenizer.reset()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- the server ------------------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self.tokenizer.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def _next(self) -> Behaviour | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        self.in_flight[model] += 1
        self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight[model] -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.requests.append(Recorded(request.path, dict(request.headers), body))
        behaviour = self._next() or Reply(content=f"echo: {_last_user_text(body['messages'])}")
        if isinstance(behaviour, Fail):
            payload = behaviour.body
            if payload is None:
                payload = {"error": {"message": f"fake failure {behaviour.status}", "code": None}}
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return web.Response(
                status=behaviour.status,
                text=text,
                headers=behaviour.headers,
                content_type="application/json",
            )
        if isinstance(behaviour, Disconnect):
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if isinstance(behaviour, Malformed):
            return web.Response(text=behaviour.body, content_type="application/json")
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if body.get("stream"):
            return await self._stream(request, body, behaviour)
        response = web.json_response(self._completion(body, behaviour), headers=behaviour.headers)
        if behaviour.gzip:
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", **reply.headers}
        )
        if reply.gzip:
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        try:
            for number, chunk in enumerate(self._chunks(body, reply)):
                if reply.drop_after is not None and number >= reply.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if reply.stall_after is not None and number == reply.stall_after:
                    await asyncio.sleep(reply.stall)
                if reply.malformed_after is not None and number == reply.malformed_after:
                    await response.write(b"data: {malformed\n\n")
                    continue
                if reply.token_delay and number:
                    await asyncio.sleep(reply.token_delay)
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            self.finished_at = time.monotonic()
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
            self.disconnects.append(time.monotonic())
        except asyncio.CancelledError:
            self.disconnects.append(time.monotonic())
            raise
        return response

    @staticmethod
    def _chunks(body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        tokens = _tokens
        top = int(body.get("top_logprobs") or 0)

        if reply.content is None and not reply.tool_calls and reply.refusal is None:
            reply.content = f"echo: {_last_user_text(body['messages'])}"
        chunks = [chunk({"role": "assistant", "content": ""})]
        for piece in tokens(reply.reasoning or ""):
            chunks.append(chunk({reply.reasoning_key: piece}))
        for index, piece in enumerate(tokens(reply.content or "")):
            chunks.append(chunk({"content": piece}))
            if body.get("logprobs"):
                logprobs = {"content": [fake_logprobs(piece, index, top)]}
                chunks[-1]["choices"][0]["logprobs"] = logprobs
        for piece in tokens(reply.refusal or ""):
            chunks.append(chunk({"refusal": piece}))
        # Parallel tool calls: each opens with id and name, then their argument pieces
        # interleave by index, as vLLM and OpenAI send them.
        pieces: list[list[str]] = []
        for index, call in enumerate(reply.tool_calls):
            opening = {"index": index, "id": call["id"], "type": "function"}
            opening["function"] = {"name": call["function"]["name"], "arguments": ""}
            chunks.append(chunk({"tool_calls": [opening]}))
            arguments = call["function"]["arguments"]
            pieces.append([arguments[i : i + 5] for i in range(0, len(arguments), 5)])
        for round_ in range(max((len(p) for p in pieces), default=0)):
            for index, parts in enumerate(pieces):
                if round_ < len(parts):
                    delta = {
                        "tool_calls": [{"index": index, "function": {"arguments": parts[round_]}}]
                    }
                    chunks.append(chunk(delta))
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        chunks.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = reply.usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            chunks.append({**chunk({}), "choices": [], "usage": usage})
        return chunks

    @staticmethod
    def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        if reply.reasoning is not None:
            message[reply.reasoning_key] = reply.reasoning
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        usage = reply.usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
        if body.get("logprobs") and reply.content:
            top = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {
                "content": [
                    fake_logprobs(piece, index, top)
                    for index, piece in enumerate(_tokens(reply.content))
                ]
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
            "usage": usage,
        }
