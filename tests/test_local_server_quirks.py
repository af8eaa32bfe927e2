"""What local servers really send, and what a client gets through the gateway: a real HTTP
server of this module's own writes each quirk byte for byte (the project's fake upstream cannot
misbehave in these ways), and the official SDK reads the result.

- Ollama sends a tool call's `arguments` as a JSON object, not a string, and (older versions)
  streams several calls with no `index`, each whole, in chunks of their own.
- A server ends with the finish chunk and its usage and then leaves the stream open, without
  `data: [DONE]`.
- Ollama answers 200 with an error object (`{"error": …}`) for a model it has not pulled."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from app.config import Settings
from tests.conftest import GatewayServer, migrate

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def call(call_id: str, city: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": city},
    }


STREAMS: dict[str, list[bytes]] = {
    # Ollama: arguments as an object.
    "object-arguments": [
        chunk(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{**call("call_a", {"city": "Paris"}), "index": 0}],
            }
        ),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ],
    # Older Ollama: two whole calls, no `index`, then `finish_reason: stop`.
    "no-index": [
        chunk({"role": "assistant", "tool_calls": [call("call_1", '{"city": "Paris"}')]}),
        chunk({"tool_calls": [call("call_2", '{"city": "Rome"}')]}),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ],
    # Finished, usage given, then silence with the connection open.
    "no-done": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hi there"}),
        chunk({}, "stop", usage=USAGE),
    ],
}
# llama.cpp: the usage in the finish chunk, then `[DONE]`.
STREAMS["finish-usage-done"] = [*STREAMS["no-done"], b"data: [DONE]\n\n"]
# Usage on every chunk, and `finish_reason: ""` until the last: no early end.
STREAMS["usage-every-chunk"] = [
    chunk({"role": "assistant", "content": "Hel"}, "", usage=USAGE),
    chunk({"content": "lo"}, "", usage=USAGE),
    chunk({}, "stop", usage=USAGE),
    b"data: [DONE]\n\n",
]
# One call, its id repeated on every piece, no index (LM Studio): one call, joined.
STREAMS["repeated-id"] = [
    chunk({"tool_calls": [call("call_r", '{"city": ')]}),
    chunk({"tool_calls": [call("call_r", '"Oslo"}')]}),
    chunk({}, "tool_calls"),
    b"data: [DONE]\n\n",
]
PEERS: list[tuple[str, int]] = []  # the gateway's end of each connection, per request
COMPLETIONS: dict[str, dict[str, Any]] = {
    "object-arguments": {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [call("call_a", {"city": "Paris"})],
                },
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    },
}
NOT_PULLED = {
    "error": {"message": "model 'qwen' not found, try pulling it first", "type": "api_error"}
}


async def answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    scenario = body["model"]
    PEERS.append(request.transport.get_extra_info("peername") if request.transport else None)
    if scenario == "not-pulled":
        return web.json_response(NOT_PULLED)  # a 200
    if not body.get("stream"):
        return web.json_response(COMPLETIONS[scenario])
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for part in STREAMS[scenario]:
        await response.write(part)
    if scenario == "no-done":
        await asyncio.sleep(30)  # open, silent: the gateway must not wait for more
    return response


@pytest.fixture(scope="module")
def quirky() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"http://127.0.0.1:{port}/v1"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture()
def client(quirky: str, tmp_path: Path) -> Iterator[openai.OpenAI]:
    config = tmp_path / "models.yaml"
    config.write_text(
        "models:\n"
        + "".join(
            f"  - {{name: {name}, backend: chat_completions, base_url: {quirky}, "
            f"upstream_model: {name}, max_retries: 0, timeout: 20}}\n"
            for name in (
                "object-arguments",
                "no-index",
                "no-done",
                "not-pulled",
                "finish-usage-done",
                "usage-every-chunk",
                "repeated-id",
            )
        )
    )
    database = f"sqlite+aiosqlite:///{tmp_path}/quirks.db"
    migrate(database)
    server = GatewayServer(Settings(database_url=database, gateway_config=config)).start()
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as sdk:
        yield sdk
    server.stop()


def streamed(client: openai.OpenAI, model: str, **extra: Any) -> tuple[list[str], Any]:
    """The stream's event types and its terminal event's response."""
    kinds: list[str] = []
    final = None
    with client.responses.create(model=model, input="hi", stream=True, **extra) as events:
        for event in events:
            kinds.append(event.type)
            if event.type in ("response.completed", "response.failed", "response.incomplete"):
                final = event.response
    return kinds, final


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_arguments_sent_as_an_object_become_json_text(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        kinds, response = streamed(client, "object-arguments", tools=[WEATHER])
        assert kinds[-1] == "response.completed"
    else:
        response = client.responses.create(model="object-arguments", input="hi", tools=[WEATHER])  # type: ignore[list-item]
    [item] = [item for item in response.output if item.type == "function_call"]
    assert isinstance(item.arguments, str) and json.loads(item.arguments) == {"city": "Paris"}
    stored = client.responses.retrieve(response.id)
    assert [o.arguments for o in stored.output if o.type == "function_call"] == [item.arguments]


def test_calls_streamed_without_an_index_stay_apart(client: openai.OpenAI) -> None:
    kinds, response = streamed(client, "no-index", tools=[WEATHER])
    calls = [(item.call_id, json.loads(item.arguments)) for item in response.output]
    assert calls == [("call_1", {"city": "Paris"}), ("call_2", {"city": "Rome"})]
    assert kinds.count("response.output_item.added") == 2 and kinds[-1] == "response.completed"


def test_a_stream_left_open_after_its_finish_and_usage_ends_at_once(client: openai.OpenAI) -> None:
    kinds, response = streamed(client, "no-done")  # the upstream stays silent for 30 s
    assert kinds[-1] == "response.completed" and response.output_text == "Hi there"
    assert response.usage is not None and response.usage.input_tokens == 11
    # And again: the connection left open was not put back in the pool.
    _, again = streamed(client, "no-done")
    assert again.output_text == "Hi there"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_an_error_answered_with_200_keeps_its_message(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        created: list[str] = []
        with pytest.raises(openai.APIError) as raised:  # what the SDK does on an `error` event
            with client.responses.create(model="not-pulled", input="hi", stream=True) as events:
                for event in events:
                    if event.type == "response.created":
                        created.append(event.response.id)
        assert "try pulling it first" in raised.value.message
        stored = client.responses.retrieve(created[0])
        assert stored.status == "failed" and stored.error is not None
        assert "try pulling it first" in stored.error.message
    else:
        with pytest.raises(openai.InternalServerError) as caught:
            client.responses.create(model="not-pulled", input="hi")
        assert "try pulling it first" in str(caught.value)


def test_a_stream_whose_done_follows_its_finish_and_usage_keeps_its_connection(
    client: openai.OpenAI,
) -> None:
    """The wait for `[DONE]` after a finish with usage reads it: the connection goes back to the
    pool, and the next request reuses it."""
    PEERS.clear()
    for _ in range(2):
        kinds, response = streamed(client, "finish-usage-done")
        assert kinds[-1] == "response.completed" and response.output_text == "Hi there"
    assert len(PEERS) == 2 and PEERS[0] == PEERS[1]


def test_usage_on_every_chunk_does_not_end_the_stream_early(client: openai.OpenAI) -> None:
    kinds, response = streamed(client, "usage-every-chunk")
    assert kinds[-1] == "response.completed" and response.output_text == "Hello"


def test_one_call_whose_id_repeats_on_every_piece_stays_one(client: openai.OpenAI) -> None:
    _, response = streamed(client, "repeated-id", tools=[WEATHER])
    [item] = response.output
    assert item.call_id == "call_r" and json.loads(item.arguments) == {"city": "Oslo"}
