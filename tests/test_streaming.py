"""`stream: true`: the full event ladder, parsed strictly as the SDK's typed events, for text,
tool calls, reasoning, truncation and every failure path; disconnects and no buffering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from app.api.sse import MAX_PENDING_FRAMES, OpenStreams, SendTimeoutError, event_stream
from app.backends.upstream import sse_data
from tests.conftest import Stack
from tests.fake_upstream import Reply, tool_call
from tests.wire import SSEStream, parse_sse, stream_raw, strict_stream

TEXT_LADDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_CLOSE = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def collapse(types: list[str]) -> list[str]:
    """Runs of the same delta event collapsed to one, to compare ladders."""
    out: list[str] = []
    for kind in types:
        if not (out and out[-1] == kind and kind.endswith(".delta")):
            out.append(kind)
    return out


def stream(gw: Stack, **body: object) -> SSEStream:
    return stream_raw(gw.gateway.url, {"model": "local-llama", "input": "hi", **body})


def test_text_ladder(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(Reply(content="Hello there, how are you?"))
    result = stream(gw)
    strict_stream(result)
    assert collapse(result.types) == [
        *TEXT_LADDER,
        "response.output_text.delta",
        *TEXT_CLOSE,
        "response.completed",
    ]
    deltas = result.of("response.output_text.delta")
    assert len(deltas) == 5 and all(d["logprobs"] == [] for d in deltas)
    assert "".join(d["delta"] for d in deltas) == "Hello there, how are you?"
    final = result.terminal["response"]
    item_id = final["output"][0]["id"]
    assert {e["item_id"] for e in deltas} == {item_id}
    assert result.of("response.output_item.added")[0]["item"]["status"] == "in_progress"
    assert result.of("response.output_text.done")[0]["text"] == "Hello there, how are you?"
    assert final["usage"]["total_tokens"] == 18 and final["status"] == "completed"
    created = result.events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["id"] == final["id"]
    # Stored before the terminal event: a GET right after finds exactly that payload.
    stored = client.responses.with_raw_response.retrieve(final["id"]).http_response.json()
    assert stored == final
    assert gw.upstream.last.body["stream"] is True
    assert gw.upstream.last.body["stream_options"] == {"include_usage": True}


def test_sdk_stream_helper(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(Reply(content="streamed words here"))
    with client.responses.stream(model="local-llama", input="hi") as events:
        texts = [event.delta for event in events if event.type == "response.output_text.delta"]
        final = events.get_final_response()
    assert "".join(texts) == "streamed words here"
    assert final.output_text == "streamed words here"
    assert final.status == "completed"


def test_sdk_create_stream_iterates_typed_events(gw: Stack, client: openai.OpenAI) -> None:
    with client.responses.create(model="local-llama", input="typed", stream=True) as events:
        kinds = [type(event).__name__ for event in events]
    assert kinds[0] == "ResponseCreatedEvent" and kinds[-1] == "ResponseCompletedEvent"
    assert "ResponseTextDeltaEvent" in kinds


def test_parallel_tool_calls_interleaved(gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(
            content=None,
            tool_calls=[
                tool_call("get_weather", {"city": "Paris", "unit": "celsius"}, "call_a"),
                tool_call("get_time", {"zone": "Europe/Paris"}, "call_b"),
            ],
        )
    )
    tools = [
        {"type": "function", "name": n, "parameters": {"type": "object"}}
        for n in ("get_weather", "get_time")
    ]
    result = stream(gw, tools=tools)
    strict_stream(result)
    output = result.terminal["response"]["output"]
    assert [item["type"] for item in output] == ["function_call", "function_call"]
    for index, item in enumerate(output):
        pieces = [
            e["delta"]
            for e in result.of("response.function_call_arguments.delta")
            if e["output_index"] == index
        ]
        assert all(
            e["item_id"] == item["id"]
            for e in result.of("response.function_call_arguments.delta")
            if e["output_index"] == index
        )
        assert "".join(pieces) == item["arguments"]
        done = [
            e
            for e in result.of("response.function_call_arguments.done")
            if e["output_index"] == index
        ]
        assert done[0]["arguments"] == item["arguments"] and done[0]["name"] == item["name"]
    assert json.loads(output[0]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    assert [item["call_id"] for item in output] == ["call_a", "call_b"]
    # The argument deltas really interleaved (both items open at once), yet each was closed once.
    indexes = [e["output_index"] for e in result.of("response.function_call_arguments.delta")]
    assert indexes[:2] == [0, 1]
    assert [e["output_index"] for e in result.of("response.output_item.done")] == [0, 1]
    added = result.of("response.output_item.added")
    assert [a["item"]["arguments"] for a in added] == ["", ""]


def test_text_then_tool_call(gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(content="Let me look.", tool_calls=[tool_call("lookup", {"q": "x"}, "call_1")])
    )
    result = stream(gw, tools=[{"type": "function", "name": "lookup", "parameters": {}}])
    strict_stream(result)
    assert collapse(result.types) == [
        *TEXT_LADDER,
        "response.output_text.delta",
        *TEXT_CLOSE,
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [i["type"] for i in result.terminal["response"]["output"]] == [
        "message",
        "function_call",
    ]


def test_reasoning_then_text(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="Answer.", reasoning="First think. Then answer."))
    result = stream(gw)
    strict_stream(result)
    assert collapse(result.types) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        *TEXT_CLOSE,
        "response.completed",
    ]
    reasoning, message = result.terminal["response"]["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "First think. Then answer."}]
    assert result.of("response.reasoning_text.done")[0]["text"] == "First think. Then answer."
    assert message["content"][0]["text"] == "Answer."


def test_refusal(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=None, refusal="I cannot do that."))
    result = stream(gw)
    strict_stream(result)
    assert "response.refusal.delta" in result.types
    assert result.of("response.refusal.done")[0]["refusal"] == "I cannot do that."
    part = result.terminal["response"]["output"][0]["content"][0]
    assert part == {"type": "refusal", "refusal": "I cannot do that."}


def test_max_output_tokens_truncation(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(Reply(content="a story that was cut", finish_reason="length"))
    result = stream(gw, max_output_tokens=16)
    strict_stream(result)
    assert result.types[-1] == "response.incomplete"
    final = result.terminal["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    assert result.of("response.output_item.done")[0]["item"]["status"] == "incomplete"
    assert client.responses.retrieve(final["id"]).status == "incomplete"


def test_empty_answer_still_has_a_message(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=""))
    result = stream(gw)
    strict_stream(result)
    assert result.terminal["response"]["output"][0]["content"][0]["text"] == ""


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply(content="one two three four five", drop_after=3), "upstream_error"),
        (Reply(content="one two three four five", malformed_after=3), "upstream_error"),
    ],
)
def test_mid_stream_failure(gw: Stack, client: openai.OpenAI, reply: Reply, code: str) -> None:
    gw.upstream.enqueue(reply)
    result = stream(gw)
    strict_stream(result)
    assert result.types[-2:] == ["error", "response.failed"]
    error = result.of("error")[0]
    assert error["code"] == code and error["message"]
    assert error["error"] == {
        "type": "server_error",
        "code": code,
        "message": error["message"],
        "param": None,
    }
    final = result.terminal["response"]
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    # The partial output is kept, its open item closed as incomplete.
    assert final["output"][0]["status"] == "incomplete"
    assert final["output"][0]["content"][0]["text"].startswith("one two")
    stored = client.responses.retrieve(final["id"])
    assert stored.status == "failed" and stored.output_text.startswith("one two")
    # Every item that was added was also closed.
    assert len(result.of("response.output_item.added")) == len(
        result.of("response.output_item.done")
    )


def test_upstream_error_before_output(gw: Stack, client: openai.OpenAI) -> None:
    from tests.fake_upstream import Fail

    gw.upstream.enqueue(Fail(500, {"error": {"message": "no GPUs left"}}))
    result = stream(gw)
    strict_stream(result)
    assert result.types == ["response.created", "response.in_progress", "error", "response.failed"]
    assert "no GPUs left" in result.of("error")[0]["message"]
    assert client.responses.retrieve(result.terminal["response"]["id"]).status == "failed"


VLLM_OVERFLOW = "This model's maximum context length is 4096 tokens. However, you requested 9000."


@pytest.mark.parametrize(
    ("status", "body", "event_code", "failed_code"),
    [
        # What a client may do about it is in response.failed's code (the spec's list): ask
        # again after a server error or a rate limit, not after a request the upstream refused.
        (500, {"error": {"message": "no GPUs left"}}, "upstream_error", "server_error"),
        (429, {"error": {"message": "slow down"}}, "rate_limit_exceeded", "rate_limit_exceeded"),
        (401, {"error": {"message": "bad key"}}, "upstream_error", "server_error"),
        (
            400,
            {"object": "error", "message": "'logit_bias' is not supported", "code": 400},
            "upstream_error",
            "invalid_prompt",
        ),
        (
            400,
            {"object": "error", "message": VLLM_OVERFLOW, "type": "BadRequestError"},
            "context_length_exceeded",
            "invalid_prompt",
        ),
        (
            400,
            {
                "error": {
                    "message": "the request exceeds the available context size",
                    "type": "exceed_context_size_error",
                    "code": 400,
                }
            },
            "context_length_exceeded",
            "invalid_prompt",
        ),
    ],
    ids=["500", "429", "401", "400", "vllm-context", "llama.cpp-context"],
)
def test_a_failed_stream_says_whether_to_ask_again(
    gw: Stack,
    client: openai.OpenAI,
    status: int,
    body: dict[str, object],
    event_code: str,
    failed_code: str,
) -> None:
    from tests.fake_upstream import Fail

    gw.upstream.enqueue(Fail(status, body))
    result = stream(gw, model="local-llama")
    strict_stream(result)
    assert result.types[-2:] == ["error", "response.failed"]
    assert result.of("error")[0]["code"] == event_code
    failed = result.terminal["response"]
    assert failed["error"]["code"] == failed_code
    assert client.responses.retrieve(failed["id"]).error.code == failed_code  # type: ignore[union-attr]


def test_read_timeout_mid_stream(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="a b c d", stall_after=2, stall=3.0))
    result = stream(gw, model="short-timeout")
    strict_stream(result)
    assert result.of("error")[0]["code"] == "upstream_timeout"
    assert result.terminal["response"]["status"] == "failed"


def test_sdk_raises_on_error_event(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(Reply(content="one two three", drop_after=2))
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        with client.responses.create(model="local-llama", input="x", stream=True) as events:
            for event in events:
                seen.append(event.type)
    assert seen[0] == "response.created"


def test_store_false_stream(gw: Stack, client: openai.OpenAI) -> None:
    result = stream(gw, store=False)
    strict_stream(result)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(result.terminal["response"]["id"])


def test_previous_response_id_with_streaming(gw: Stack, client: openai.OpenAI) -> None:
    first = stream(gw, input="one").terminal["response"]
    second = stream(gw, input="two", previous_response_id=first["id"]).terminal["response"]
    assert second["previous_response_id"] == first["id"]
    assert [m["content"] for m in gw.upstream.last.body["messages"]] == ["one", "echo: one", "two"]


def test_deltas_are_not_buffered(gw: Stack) -> None:
    words = " ".join(f"w{i}" for i in range(15))
    gw.upstream.enqueue(Reply(content=words, token_delay=0.05))
    first_delta_at = None
    with httpx.stream(
        "POST",
        f"{gw.gateway.url}/v1/responses",
        json={"model": "local-llama", "input": "x", "stream": True},
    ) as response:
        for line in response.iter_lines():
            if first_delta_at is None and '"response.output_text.delta"' in line:
                first_delta_at = time.monotonic()
    assert first_delta_at is not None and gw.upstream.finished_at is not None
    # The upstream needed ~0.7 s to finish; the first delta must have arrived well before.
    assert first_delta_at < gw.upstream.finished_at - 0.3


def test_keepalive_during_upstream_silence(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="after a long think", stall_after=1, stall=1.6))
    result = stream(gw)  # the test gateway sends keep-alives every 0.5 s
    strict_stream(result)
    assert result.comments, "expected SSE keep-alive comments during the stall"


def test_client_disconnect_closes_upstream_and_stores_cancelled(
    gw: Stack, client: openai.OpenAI
) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    gw.upstream.enqueue(Reply(content=words, token_delay=0.1))
    response_id = None
    deltas = 0
    with httpx.stream(
        "POST",
        f"{gw.gateway.url}/v1/responses",
        json={"model": "local-llama", "input": "x", "stream": True},
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "response.created":
                response_id = event["response"]["id"]
            if event["type"] == "response.output_text.delta":
                deltas += 1
                if deltas == 3:
                    break
        closed_at = time.monotonic()
    assert response_id is not None
    deadline = closed_at + 1.0
    while not gw.upstream.disconnects and time.monotonic() < deadline + 0.5:
        time.sleep(0.02)
    assert gw.upstream.disconnects, "the upstream never saw the disconnect"
    assert gw.upstream.disconnects[0] - closed_at < 1.0
    stored = None
    while time.monotonic() < deadline + 2:
        try:
            stored = client.responses.retrieve(response_id)
            break
        except openai.NotFoundError:
            time.sleep(0.05)
    assert stored is not None and stored.status == "cancelled"
    assert stored.output_text.startswith("w0 w1 w2")
    assert stored.output[0].status == "incomplete"


def test_stream_events_parse_for_raw_sse_line_framing(gw: Stack) -> None:
    raw = httpx.post(
        f"{gw.gateway.url}/v1/responses",
        json={"model": "local-llama", "input": "frame me", "stream": True},
    ).text
    parsed = parse_sse(raw)
    assert "[DONE]" not in raw
    assert all("\n" not in json.dumps(e) for e in parsed.events)


def test_streamed_logprobs(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="a b c"))
    result = stream(gw, include=["message.output_text.logprobs"], top_logprobs=1)
    strict_stream(result)
    deltas = result.of("response.output_text.delta")
    assert [d["logprobs"][0]["token"] for d in deltas] == ["a ", "b ", "c"]
    done = result.of("response.output_text.done")[0]
    assert [lp["token"] for lp in done["logprobs"]] == ["a ", "b ", "c"]
    part = result.terminal["response"]["output"][0]["content"][0]
    assert len(part["logprobs"]) == 3 and len(part["logprobs"][0]["top_logprobs"]) == 1


@pytest.mark.parametrize("obfuscation", [True, False])
def test_stream_options_include_obfuscation_is_accepted(
    gw: Stack, client: openai.OpenAI, obfuscation: bool
) -> None:
    events = list(
        client.responses.create(
            model="local-llama",
            input="hide me",
            stream=True,
            stream_options={"include_obfuscation": obfuscation},
        )
    )
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: hide me"
    # No padding is added either way (documented): the SDK's typed deltas carry none.
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas and all(getattr(e, "obfuscation", None) is None for e in deltas)
    # Chat Completions has no such option: the upstream is asked for usage only.
    assert gw.upstream.last.body["stream_options"] == {"include_usage": True}


def test_upstream_sse_data_split_only_on_line_ends() -> None:
    async def payloads(*chunks: bytes) -> list[str]:
        async def source() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return [data async for data in sse_data(source())]

    text = '{"t":"a\u2028b"}'  # U+2028 raw inside a JSON string
    assert asyncio.run(payloads(f"data: {text}\n\n".encode())) == [text]
    # A multi-byte character and a CRLF cut across chunks; CR alone; no final line end; the
    # `event:` lines, comments and blank lines between them are not data.
    euro = "data: €".encode()
    got = asyncio.run(
        payloads(euro[:-1], euro[-1:] + b"\r", b"\nevent: e\n: ping\n\ndata:x\rdata: y")
    )
    assert got == ["€", "x", "y"]


def test_open_streams_end_when_the_server_starts_exiting() -> None:
    """What SIGTERM does to uvicorn (`should_exit`) ends every open stream, and later ones."""

    class Server:  # uvicorn's handler is a bound method of its server, as here
        should_exit = False

        def handle_exit(self, *_args: object) -> None:
            self.should_exit = True

    server = Server()
    previous = signal.signal(signal.SIGTERM, server.handle_exit)

    async def run() -> list[int]:
        streams, ended = OpenStreams(), []  # a stream's stop may be called more than once
        await streams.start()
        streams.add(lambda: ended.append(1))
        await asyncio.sleep(0.6)
        assert ended == []
        server.should_exit = True
        await asyncio.sleep(0.7)
        streams.add(lambda: ended.append(2))
        await streams.stop()
        return sorted(set(ended))

    try:
        assert asyncio.run(run()) == [1, 2]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_reader_that_accepts_nothing_pauses_the_producer() -> None:
    """Backpressure: while the client takes no bytes (its send never returns), the stream stops
    pulling events — so the upstream is not read ahead — once a bounded number of frames wait.
    Driven through the ASGI interface, as uvicorn drives it."""
    pulled = 0

    async def endless() -> AsyncGenerator[dict[str, Any], None]:
        nonlocal pulled
        while True:
            pulled += 1
            yield {"type": "response.output_text.delta", "delta": "x" * 100}
            await asyncio.sleep(0)

    async def run() -> tuple[int, int]:
        stuck = asyncio.Event()
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                await stuck.wait()  # a reader that accepts nothing more

        async def receive() -> Any:
            await asyncio.Event().wait()  # no disconnect

        task = asyncio.create_task(event_stream(endless(), keepalive=30)({}, receive, send))
        await asyncio.sleep(0.5)
        first = pulled
        await asyncio.sleep(0.5)
        second = pulled
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return first, second

    first, second = asyncio.run(run())
    assert first == second, "the producer kept pulling events while the reader was stuck"
    assert first <= MAX_PENDING_FRAMES + 2


def test_a_stream_that_starts_while_the_server_is_exiting_ends_cleanly() -> None:
    """Once shutdown has begun a new stream ends at once, as if its client had gone — but its
    generator is still closed and its body finished, so the client sees the end of a stream."""

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        yield {"type": "response.created"}

    async def run() -> tuple[list[Any], AsyncGenerator[dict[str, Any], None]]:
        streams = OpenStreams()
        await streams.stop()  # what the lifespan does at shutdown: every stream, later ones too
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            await asyncio.Event().wait()  # the client stays

        generator = events()
        stream = event_stream(generator, keepalive=30, streams=streams)
        await asyncio.wait_for(stream({}, receive, send), 5)
        return sent, generator

    sent, generator = asyncio.run(run())
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[-1]["more_body"] is False
    with pytest.raises(StopAsyncIteration):  # closed, not merely never started
        asyncio.run(generator.__anext__())


def test_a_reader_that_accepts_nothing_for_the_send_timeout_is_dropped() -> None:
    """A send that has not returned after the send timeout (checked at each keep-alive tick)
    ends the stream with `SendTimeoutError`, and the events are closed as on a disconnect — which
    is what stores a generation `cancelled`. Driven through the ASGI interface, with a short
    timeout instead of the 60 s default."""
    closed = asyncio.Event()

    async def events() -> AsyncGenerator[dict[str, Any], None]:
        try:
            while True:
                yield {"type": "response.output_text.delta", "delta": "x"}
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def run() -> float:
        async def send(message: Any) -> None:
            if message["type"] == "http.response.body":
                await asyncio.Event().wait()  # a reader that accepts nothing

        async def receive() -> Any:
            await asyncio.Event().wait()  # no disconnect

        stream = event_stream(events(), keepalive=0.05, send_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(SendTimeoutError):
            await asyncio.wait_for(stream({}, receive, send), 5)
        assert closed.is_set()
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 0.3 <= elapsed < 2
