"""A fake upstream that speaks the Responses API natively, as OpenAI, Azure OpenAI and local servers
(vLLM, Ollama) do: a real HTTP server (aiohttp, its own thread and loop).

Routes: `POST /v1/responses` (OpenAI and local servers), `/openai/v1/responses` and
`/openai/responses` (Azure v1 and preview), each with its `/compact`; Azure's Chat Completions
forms (`/openai/v1/chat/completions`, `/openai/deployments/{deployment}/chat/completions`) and
`GET /msi/token`, a managed-identity token endpoint as App Service serves it (`IDENTITY_ENDPOINT`).

Answers come from a script the test enqueues (`Answer`, `Fail`, `Disconnect`); with nothing
enqueued it answers `native: <last user text>`. A reasoning answer carries `encrypted_content`
when the request asked for it; a web-search answer adds a `web_search_call` item and its events.
Streams carry the upstream's own sequence numbers and `obfuscation`, which the gateway must
replace and drop.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fake_upstream import Disconnect, Fail, FakeTokenizer


@dataclass
class Answer:
    text: str | None = None
    reasoning: bool = False
    # Raw reasoning text on the reasoning item, streamed under the event names OpenAI uses
    # (`response.reasoning_text.*`) or, with `open_responses_names`, Open Responses'
    # (`response.reasoning.*`).
    raw_reasoning: str | None = None
    open_responses_names: bool = False
    # Optional item fields sent as null (`encrypted_content`, `content`, `phase`), as some
    # servers do.
    nulls: bool = False
    # Streaming: OpenAI's undocumented `{"type": "keepalive"}` event before every delta.
    keepalive: bool = False
    web_search: bool = False
    # A function call instead of the message: (name, arguments as JSON text, call_id).
    call: tuple[str, str, str] | None = None
    input_tokens: int = 20
    status: str = "completed"  # or "incomplete", "failed"
    error_code: str = "server_error"  # a failed answer's `error.code`
    delay: float = 0.0
    drop_after: int | None = None  # streaming: close the connection after N events
    token_delay: float = 0.0


Behaviour = Answer | Fail | Disconnect


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


def last_user_text(items: list[dict[str, Any]] | str) -> str:
    if isinstance(items, str):
        return items
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            content = item["content"]
            if isinstance(content, str):
                return content
            return " ".join(part.get("text", "") for part in content)
    return ""


# What OpenAI's `POST /responses/compact` takes (`CompactResponseMethodPublicBody`, and the
# openai SDK's `safety_identifier`).
COMPACT_BODY = {
    "model",
    "input",
    "instructions",
    "previous_response_id",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "service_tier",
}


def _user_texts(items: list[dict[str, Any]]) -> str:
    """What a fake compaction item says it covers: the user messages' texts, joined by `|`."""
    return "|".join(
        last_user_text([item])
        for item in items
        if item.get("type", "message") == "message" and item.get("role") == "user"
    )


@dataclass
class FakeResponses:
    seen: list[Seen] = field(default_factory=list)
    tokens_issued: int = 0
    token_lifetime: int = 3600
    # Per upstream model: answers being generated now, and the most at once since `reset`.
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    _script: deque[Behaviour] = field(default_factory=deque)
    _counter: int = 0

    def __post_init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.seen.clear()
            self.max_in_flight.clear()
            self.tokenizer.reset()

    @property
    def last(self) -> Seen:
        return self.seen[-1]

    def start(self) -> FakeResponses:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        for path in ("/v1/responses", "/openai/v1/responses", "/openai/responses"):
            app.router.add_post(path, self._responses)
            app.router.add_post(path + "/compact", self._compact)
        app.router.add_post("/openai/v1/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_get("/msi/token", self._token)
        self.tokenizer.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _next(self) -> Behaviour | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.seen.append(Seen(request.path, dict(request.query), dict(request.headers), body))
        return body

    # --- token endpoint ----------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != "fake-identity-header":
            return web.json_response({"error": "bad identity header"}, status=400)
        self.tokens_issued += 1
        return web.json_response(
            {
                "access_token": f"entra-token-{self.tokens_issued}",
                "expires_on": str(int(time.time()) + self.token_lifetime),
                "resource": request.query.get("resource"),
                "token_type": "Bearer",
            }
        )

    # --- answers -----------------------------------------------------------------------------

    async def _refuse(self, request: web.Request, behaviour: Behaviour) -> web.Response | None:
        if isinstance(behaviour, Fail):
            payload = behaviour.body or {"error": {"message": f"fake failure {behaviour.status}"}}
            return web.json_response(payload, status=behaviour.status, headers=behaviour.headers)
        if isinstance(behaviour, Disconnect):
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        behaviour = self._next() or Answer()
        refused = await self._refuse(request, behaviour)
        if refused is not None:
            return refused
        text = f"azure chat: {body['messages'][-1]['content']}"
        return web.json_response(
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            }
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        behaviour = self._next() or Answer()
        refused = await self._refuse(request, behaviour)
        if refused is not None:
            return refused
        assert isinstance(behaviour, Answer)
        model = body["model"]
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        self.max_in_flight[model] = max(self.max_in_flight.get(model, 0), self.in_flight[model])
        try:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            self._counter += 1
            output = self._output(body, behaviour, self._counter)
            response = self._response(body, output, behaviour)
            if body.get("stream"):
                return await self._stream(request, response, behaviour)
            return web.json_response(response)
        finally:
            self.in_flight[model] -= 1

    async def _compact(self, request: web.Request) -> web.Response:
        """OpenAI's compaction: the input's user messages (under new ids), then a compaction
        item whose `encrypted_content` names the texts it covers (`answer.text`, if set)."""
        body = await self._record(request)
        unknown = set(body) - COMPACT_BODY
        if unknown:  # as OpenAI answers a field its compact endpoint does not take
            message = f"Unknown parameter: '{sorted(unknown)[0]}'."
            return web.json_response({"error": {"message": message}}, status=400)
        behaviour = self._next() or Answer()
        refused = await self._refuse(request, behaviour)
        if refused is not None:
            return refused
        assert isinstance(behaviour, Answer)
        self._counter += 1
        items = [body["input"]] if isinstance(body["input"], str) else body["input"]
        users = [
            item
            for item in items
            if item.get("type", "message") == "message" and item.get("role") == "user"
        ]
        covered = behaviour.text or _user_texts(items)
        output = [
            {
                "id": f"msg_cmp{self._counter}_{index}",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": item["content"],
            }
            for index, item in enumerate(users)
        ]
        output.append(
            {
                "id": f"cmp_fake{self._counter}",
                "type": "compaction",
                "encrypted_content": f"gAAAA-compacted:{covered}",
            }
        )
        return web.json_response(
            {
                "id": "cmp_upstream_should_not_leak",
                "object": "response.compaction",
                "service_tier": body.get("service_tier") or "default",
                "created_at": int(time.time()),
                "output": output,
                "usage": {
                    "input_tokens": 120,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 30,
                    "output_tokens_details": {"reasoning_tokens": 10},
                    "total_tokens": 150,
                },
            }
        )

    @staticmethod
    def _output(body: dict[str, Any], answer: Answer, n: int) -> list[dict[str, Any]]:
        items = body["input"]
        if isinstance(items, list) and items and items[-1].get("type") == "compaction_trigger":
            covered = answer.text or _user_texts(items[:-1])
            content = f"gAAAA-compacted:{covered}"
            return [{"id": f"cmp_fake{n}", "type": "compaction", "encrypted_content": content}]
        output: list[dict[str, Any]] = []
        if answer.reasoning:
            item = {
                "id": f"rs_fake{n}",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "Thinking it over."}],
            }
            if "reasoning.encrypted_content" in (body.get("include") or []):
                item["encrypted_content"] = f"gAAAA-encrypted-{n}"
            if answer.raw_reasoning is not None:
                item["content"] = [{"type": "reasoning_text", "text": answer.raw_reasoning}]
            elif answer.nulls:
                item.update(content=None, encrypted_content=None)
            output.append(item)
        if answer.web_search:
            output.append(
                {
                    "id": f"ws_fake{n}",
                    "type": "web_search_call",
                    "status": "completed",
                    "action": {"type": "search", "query": "weather in Paris"},
                }
            )
        if answer.call is not None:
            name, arguments, call_id = answer.call
            output.append(
                {
                    "id": f"fc_fake{n}",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": call_id,
                    "name": name,
                    "arguments": arguments,
                }
            )
            return output
        text = answer.text or f"native: {last_user_text(body['input'])}"
        output.append(
            {
                "id": f"msg_fake{n}",
                "type": "message",
                "role": "assistant",
                "status": "completed" if answer.status == "completed" else "incomplete",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        )
        if answer.nulls:
            output[-1]["phase"] = None
        return output

    @staticmethod
    def _response(
        body: dict[str, Any], output: list[dict[str, Any]], answer: Answer
    ) -> dict[str, Any]:
        return {
            "id": "resp_upstream_should_not_leak",
            "object": "response",
            "created_at": int(time.time()),
            "status": answer.status,
            "error": {"code": answer.error_code, "message": "upstream melted"}
            if answer.status == "failed"
            else None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if answer.status == "incomplete"
            else None,
            "model": body["model"],
            "output": output,
            # As OpenAI reports what it applied: the tier that served it ("auto" resolves to
            # "default"), the caching options with their defaults, the reasoning settings.
            "service_tier": {None: "default", "auto": "default"}.get(
                body.get("service_tier"), body.get("service_tier")
            ),
            "prompt_cache_retention": body.get("prompt_cache_retention"),
            **(
                {"prompt_cache_options": {"ttl": "30m", "mode": "implicit", **options}}
                if (options := body.get("prompt_cache_options")) is not None
                else {}
            ),
            "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
            "usage": {
                "input_tokens": answer.input_tokens,
                "input_tokens_details": {"cached_tokens": 5},
                "output_tokens": 9,
                "output_tokens_details": {"reasoning_tokens": 4 if answer.reasoning else 0},
                "total_tokens": answer.input_tokens + 9,
            },
        }

    async def _stream(
        self, request: web.Request, response: dict[str, Any], answer: Answer
    ) -> web.StreamResponse:
        stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await stream.prepare(request)
        events = self._events(response, answer)
        for number, event in enumerate(events):
            if answer.drop_after is not None and number >= answer.drop_after:
                assert request.transport is not None
                request.transport.close()
                return stream
            if answer.token_delay and event["type"].endswith(".delta"):
                await asyncio.sleep(answer.token_delay)
            if answer.keepalive and event["type"].endswith(".delta"):
                keepalive = {"type": "keepalive", "sequence_number": 100 + number}
                await stream.write(f"event: keepalive\ndata: {json.dumps(keepalive)}\n\n".encode())
            # The upstream's own numbering starts at 100 here, so a relay that forgot to
            # renumber is caught.
            event = {**event, "sequence_number": 100 + number}
            frame = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
            await stream.write(frame.encode())
        await stream.write_eof()
        return stream

    @staticmethod
    def _events(response: dict[str, Any], answer: Answer) -> list[dict[str, Any]]:
        start = {**response, "status": "in_progress", "output": [], "usage": None, "error": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": start},
            {"type": "response.in_progress", "response": start},
        ]
        for index, item in enumerate(response["output"]):
            where = {"output_index": index, "item_id": item["id"]}
            if item["type"] == "reasoning":
                added = {"id": item["id"], "type": "reasoning", "summary": []}
                events.append(
                    {"type": "response.output_item.added", "output_index": index, "item": added}
                )
                part = {"type": "summary_text", "text": ""}
                text = item["summary"][0]["text"]
                events += [
                    {
                        "type": "response.reasoning_summary_part.added",
                        **where,
                        "summary_index": 0,
                        "part": part,
                    },
                    {
                        "type": "response.reasoning_summary_text.delta",
                        **where,
                        "summary_index": 0,
                        "delta": text,
                        "obfuscation": "xyz",
                    },
                    {
                        "type": "response.reasoning_summary_text.done",
                        **where,
                        "summary_index": 0,
                        "text": text,
                    },
                    {
                        "type": "response.reasoning_summary_part.done",
                        **where,
                        "summary_index": 0,
                        "part": {**part, "text": text},
                    },
                ]
                if answer.raw_reasoning is not None:
                    events += _raw_reasoning_events(where, answer)
            elif item["type"] == "function_call":
                added = {**item, "status": "in_progress", "arguments": ""}
                events.append(
                    {"type": "response.output_item.added", "output_index": index, "item": added}
                )
                events += [
                    {
                        "type": "response.function_call_arguments.delta",
                        **where,
                        "delta": item["arguments"],
                        "obfuscation": "pad",
                    },
                    {
                        "type": "response.function_call_arguments.done",
                        **where,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    },
                ]
            elif item["type"] == "compaction":
                events.append(
                    {"type": "response.output_item.added", "output_index": index, "item": item}
                )
            elif item["type"] == "web_search_call":
                added = {**item, "status": "in_progress"}
                events.append(
                    {"type": "response.output_item.added", "output_index": index, "item": added}
                )
                for phase in ("in_progress", "searching", "completed"):
                    events.append({"type": f"response.web_search_call.{phase}", **where})
            else:
                added = {**item, "status": "in_progress", "content": []}
                events.append(
                    {"type": "response.output_item.added", "output_index": index, "item": added}
                )
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                text = item["content"][0]["text"]
                at = {**where, "content_index": 0}
                events.append({"type": "response.content_part.added", **at, "part": part})
                for piece in re.findall(r"\S+\s*", text):
                    events.append(
                        {
                            "type": "response.output_text.delta",
                            **at,
                            "delta": piece,
                            "logprobs": [],
                            "obfuscation": "pad",
                        }
                    )
                events += [
                    {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
                    {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
                ]
            events.append(
                {"type": "response.output_item.done", "output_index": index, "item": item}
            )
        terminal = {"completed": "response.completed", "incomplete": "response.incomplete"}
        events.append(
            {"type": terminal.get(answer.status, "response.failed"), "response": response}
        )
        return events


def _raw_reasoning_events(where: dict[str, Any], answer: Answer) -> list[dict[str, Any]]:
    text = answer.raw_reasoning or ""
    name = "reasoning" if answer.open_responses_names else "reasoning_text"
    at = {**where, "content_index": 0}
    part = {"type": "reasoning_text", "text": ""}
    return [
        {"type": "response.content_part.added", **at, "part": part},
        *(
            {"type": f"response.{name}.delta", **at, "delta": piece}
            for piece in re.findall(r"\S+\s*", text)
        ),
        {"type": f"response.{name}.done", **at, "text": text},
        {"type": "response.content_part.done", **at, "part": {**part, "text": text}},
    ]
