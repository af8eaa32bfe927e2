"""A fake OpenAI-compatible upstream: a real HTTP server (aiohttp, its own thread and loop).

It records every request and answers `POST /v1/chat/completions` from a script of behaviours the
test enqueues: a reply (text, tool calls, reasoning, finish reason, usage), an HTTP error, a
stall, a dropped connection or a malformed body. With nothing enqueued it answers
`echo: <last user text>`, so a gateway in front of it behaves like a tiny deterministic model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
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


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return ""


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
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
        return web.json_response(self._completion(body, behaviour))

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
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
