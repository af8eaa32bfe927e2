"""Every body the gateway sends, validated against the published schemas over real HTTP: the
Open Responses spec (its compliance suite parses each Response as `ResponseResource` and every
stream event against its union of 24 event schemas) and OpenAI's openapi.yaml components, on
top of the openai SDK's own models. The checks live in `tests/wire.py` (`strict_response`,
`strict_stream`) and `tests/schemas.py`, so every test module that reads a Response or a stream
validates it the same way.

The compliance suite's scenarios come first, under its ids (basic-response,
streaming-response, system-prompt, tool-calling, tool-calling-streaming,
function-call-roundtrip, image-input, file-input, multi-turn, previous-response-id); then ours:
parallel tool calls, reasoning, refusal, logprobs, formats, incomplete, failed, background,
cancelled, input items, conversations, the error envelope, Open Responses request shapes, and
a backend that speaks Responses natively.

Where Open Responses and OpenAI disagree, the gateway sends what OpenAI sends and the openai
SDK parses; the schema is corrected for that case (`tests/schemas.py`, errata) or the event is
listed (`OPENAI_ONLY_EVENTS`):
- raw reasoning streams as `response.reasoning_text.*` (Open Responses: `response.reasoning.*`);
- a stream ends without `data: [DONE]` (Open Responses: MUST; OpenAI sends none, and the SDKs
  and Codex would skip it);
- `usage` is null until a response finishes (OpenAI's schema: always an object);
- a json_schema text format echoes `description: null` (OpenAI's schema: a string if present);
- an empty page has null `first_id`/`last_id` (OpenAI's schema: strings);
- error `type`s are OpenAI's (`invalid_request_error`), not Open Responses' (`invalid_request`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import NativeStack, Stack
from tests.fake_responses import Answer
from tests.fake_upstream import Fail, Reply, tool_call
from tests.schemas import (
    OPEN_RESPONSES_ITEMS,
    check_event_schemas,
    open_responses,
    open_responses_events,
    openai_components,
)
from tests.wire import SSEStream, restream_raw, stream_raw, strict_response, strict_stream

# The SQLite half is enough: the wire shape does not depend on the database.
pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "The city and state, e.g. San Francisco, CA",
            }
        },
        "required": ["location"],
    },
}
RED_HEART_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8Dw"
    "HwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
PDF = "data:application/pdf;base64,JVBERi0xLjEKJSVFT0YK"

# --- checks ----------------------------------------------------------------------------------


def check_response(data: dict[str, Any]) -> dict[str, Any]:
    strict_response(data)  # the SDK's model, OpenAI's schema, Open Responses' where it applies
    return data


def check_stream(stream: SSEStream) -> SSEStream:
    strict_stream(stream)  # every event likewise, and each Response inside them
    return stream


def check_item(item: dict[str, Any]) -> None:
    openai_components().check("ConversationItem", item)
    if item["type"] in OPEN_RESPONSES_ITEMS:
        open_responses().check("ItemField", item)


def check_item_list(data: dict[str, Any], schema: str) -> None:
    assert data["data"], "an empty list has no ids to check"
    openai_components().check(schema, data)
    for item in data["data"]:
        check_item(item)


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    openai_components().check("ErrorResponse", body)
    open_responses().check("ErrorPayload", body["error"])
    return body["error"]


def post(gw: Stack, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{gw.gateway.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return check_response(response.json())


def get(gw: Stack, path: str) -> dict[str, Any]:
    response = httpx.get(f"{gw.gateway.url}/v1{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stream(gw: Stack, body: dict[str, Any]) -> SSEStream:
    return check_stream(stream_raw(gw.gateway.url, body))


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def wait_terminal(gw: Stack, response_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = get(gw, f"/responses/{response_id}")
        if data["status"] not in ("queued", "in_progress") or time.monotonic() > deadline:
            return check_response(data)
        time.sleep(0.02)


# --- the compliance suite's scenarios ----------------------------------------------------------


def test_basic_response(gw: Stack) -> None:
    data = post(gw, {"model": "local-llama", "input": [user("Say hello in exactly 3 words.")]})
    assert data["status"] == "completed" and data["output"]
    check_response(get(gw, f"/responses/{data['id']}"))


def test_streaming_response(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="1, 2, 3, 4, 5."))
    result = stream(gw, {"model": "local-llama", "input": [user("Count from 1 to 5.")]})
    assert result.terminal["type"] == "response.completed"
    assert result.terminal["response"]["status"] == "completed"


def test_system_prompt(gw: Stack) -> None:
    system = {"type": "message", "role": "system", "content": "You are a pirate."}
    data = post(gw, {"model": "local-llama", "input": [system, user("Say hello.")]})
    assert data["status"] == "completed" and data["output"]
    assert gw.upstream.last.body["messages"][0]["role"] == "system"


def test_tool_calling(gw: Stack) -> None:
    call = tool_call("get_weather", {"location": "San Francisco, CA"}, "call_w")
    gw.upstream.enqueue(Reply(tool_calls=[call]))
    data = post(
        gw,
        {
            "model": "local-llama",
            "input": [user("What's the weather like in San Francisco?")],
            "tools": [WEATHER_TOOL],
        },
    )
    assert [item["type"] for item in data["output"]] == ["function_call"]


def test_tool_calling_streaming(gw: Stack) -> None:
    call = tool_call("get_weather", {"location": "San Francisco, CA"}, "call_w")
    gw.upstream.enqueue(Reply(tool_calls=[call]))
    result = stream(
        gw,
        {
            "model": "local-llama",
            "input": [user("What's the weather like in San Francisco?")],
            "tools": [WEATHER_TOOL],
        },
    )
    assert result.of("response.output_item.added")[0]["item"]["type"] == "function_call"
    assert result.of("response.function_call_arguments.delta")
    assert result.of("response.function_call_arguments.done")
    assert result.of("response.output_item.done")[0]["item"]["type"] == "function_call"


def test_function_call_roundtrip(gw: Stack) -> None:
    call = tool_call("get_weather", {"location": "San Francisco, CA"}, "call_rt")
    gw.upstream.enqueue(Reply(tool_calls=[call]), Reply(content="64 degrees and clear."))
    first = post(
        gw,
        {
            "model": "local-llama",
            "input": "Use the weather tool to get the temperature in San Francisco.",
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
        },
    )
    assert first["tool_choice"] == {"type": "function", "name": "get_weather"}
    function_call = next(item for item in first["output"] if item["type"] == "function_call")
    output = {
        "type": "function_call_output",
        "call_id": function_call["call_id"],
        "output": "64 degrees and clear",
    }
    second = post(
        gw, {"model": "local-llama", "previous_response_id": first["id"], "input": [output]}
    )
    assert second["status"] == "completed" and second["output"]
    items = get(gw, f"/responses/{second['id']}/input_items?order=asc")
    check_item_list(items, "ResponseItemList")
    assert [item["type"] for item in items["data"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]


def test_image_input(gw: Stack) -> None:
    content = [
        {"type": "input_text", "text": "What do you see in this image?"},
        {"type": "input_image", "image_url": RED_HEART_PNG},
    ]
    data = post(gw, {"model": "local-llama", "input": [{**user(""), "content": content}]})
    assert data["status"] == "completed" and data["output"]
    check_item_list(get(gw, f"/responses/{data['id']}/input_items"), "ResponseItemList")


def test_file_input(gw: Stack) -> None:
    content = [
        {"type": "input_text", "text": "Read the attached file and answer with its title only."},
        {"type": "input_file", "filename": "fixture.pdf", "file_data": PDF},
    ]
    data = post(gw, {"model": "local-llama", "input": [{**user(""), "content": content}]})
    assert data["status"] == "completed" and data["output"]
    check_item_list(get(gw, f"/responses/{data['id']}/input_items"), "ResponseItemList")


def test_multi_turn(gw: Stack) -> None:
    history = [
        user("My name is Alice."),
        {"type": "message", "role": "assistant", "content": "Hello Alice!"},
        user("What is my name?"),
    ]
    data = post(gw, {"model": "local-llama", "input": history})
    assert data["status"] == "completed" and data["output"]
    items = get(gw, f"/responses/{data['id']}/input_items?order=asc")
    check_item_list(items, "ResponseItemList")
    assert [item["role"] for item in items["data"]] == ["user", "assistant", "user"]


def test_previous_response_id(gw: Stack) -> None:
    first = post(gw, {"model": "local-llama", "input": "Remember the code word: papaya."})
    second = post(
        gw,
        {
            "model": "local-llama",
            "previous_response_id": first["id"],
            "input": "What code word did I ask you to remember?",
        },
    )
    assert second["status"] == "completed" and second["previous_response_id"] == first["id"]
    assert len(gw.upstream.last.body["messages"]) == 3
    check_item_list(get(gw, f"/responses/{second['id']}/input_items"), "ResponseItemList")


# --- ours ------------------------------------------------------------------------------------


def _two_calls() -> Reply:
    return Reply(
        tool_calls=[
            tool_call("get_weather", {"location": "Paris"}, "call_a"),
            tool_call("get_weather", {"location": "Oslo"}, "call_b"),
        ]
    )


def test_parallel_tool_calls(gw: Stack) -> None:
    body = {"model": "local-llama", "input": "Weather in Paris and Oslo?", "tools": [WEATHER_TOOL]}
    gw.upstream.enqueue(_two_calls(), _two_calls())
    data = post(gw, body)
    assert [item["call_id"] for item in data["output"]] == ["call_a", "call_b"]
    result = stream(gw, body)
    assert len(result.of("response.function_call_arguments.done")) == 2


def test_text_then_tool_call_with_strict_and_described_tools(gw: Stack) -> None:
    tool = {**WEATHER_TOOL, "strict": True}
    tool["parameters"] = {**WEATHER_TOOL["parameters"], "additionalProperties": False}
    reply = Reply(content="Looking.", tool_calls=[tool_call("get_weather", {}, "c")])
    gw.upstream.enqueue(reply, reply)
    body = {"model": "local-llama", "input": "hi", "tools": [tool], "parallel_tool_calls": False}
    assert post(gw, body)["tools"][0]["strict"] is True
    stream(gw, body)


def test_reasoning(gw: Stack) -> None:
    reply = Reply(content="42", reasoning="Six times seven.")
    gw.upstream.enqueue(reply, reply)
    body = {"model": "local-llama", "input": "6*7?", "reasoning": {"effort": "low"}}
    data = post(gw, body)
    assert [item["type"] for item in data["output"]] == ["reasoning", "message"]
    result = stream(gw, body)
    assert result.of("response.reasoning_text.delta")
    check_item_list(
        get(gw, f"/responses/{result.terminal['response']['id']}/input_items"), "ResponseItemList"
    )


def test_refusal(gw: Stack) -> None:
    reply = Reply(content=None, refusal="I can't help with that.")
    gw.upstream.enqueue(reply, reply)
    data = post(gw, {"model": "local-llama", "input": "no"})
    assert data["output"][0]["content"][0]["type"] == "refusal"
    assert stream(gw, {"model": "local-llama", "input": "no"}).of("response.refusal.done")


def test_logprobs(gw: Stack) -> None:
    body = {
        "model": "local-llama",
        "input": "two words",
        "include": ["message.output_text.logprobs"],
        "top_logprobs": 2,
    }
    gw.upstream.enqueue(Reply(content="two words"), Reply(content="two words"))
    data = post(gw, body)
    assert data["output"][0]["content"][0]["logprobs"]
    stream(gw, body)


def test_structured_output_formats(gw: Stack) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    json_schema = {"type": "json_schema", "name": "thing", "schema": schema}
    formats = [{"type": "json_object"}, json_schema, {**json_schema, "strict": True}]
    for text_format in formats:
        data = post(gw, {"model": "local-llama", "input": "json", "text": {"format": text_format}})
        assert data["text"]["format"]["type"] == text_format["type"]
    assert data["text"]["format"] == {**json_schema, "strict": True, "description": None}


def test_incomplete(gw: Stack) -> None:
    reply = Reply(content="A long sto", finish_reason="length")
    gw.upstream.enqueue(reply, reply)
    body = {"model": "local-llama", "input": "story", "max_output_tokens": 16}
    data = post(gw, body)
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    result = stream(gw, body)
    assert result.terminal["type"] == "response.incomplete"


def test_failed(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500))
    response = httpx.post(
        f"{gw.gateway.url}/v1/responses", json={"model": "local-llama", "input": "x"}, timeout=30
    )
    error = check_error(response, 502)
    stored_id = re.search(r"resp_\w+", error["message"])
    assert stored_id is not None
    failed = check_response(get(gw, f"/responses/{stored_id.group()}"))
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    gw.upstream.enqueue(Reply(content="one two three four", drop_after=3))
    result = stream(gw, {"model": "local-llama", "input": "x"})
    assert result.types[-2:] == ["error", "response.failed"]
    assert result.terminal["response"]["error"] is not None


def test_background_queued_then_completed(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="slow answer", delay=0.3))
    queued = post(gw, {"model": "local-llama", "input": "hi", "background": True})
    assert queued["status"] == "queued" and queued["background"] is True
    done = wait_terminal(gw, queued["id"])
    assert done["status"] == "completed"


def test_background_stream_and_restream(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="streamed in the background"))
    result = stream(gw, {"model": "local-llama", "input": "hi", "background": True})
    assert result.types[:3] == ["response.created", "response.queued", "response.in_progress"]
    again = check_stream(restream_raw(gw.gateway.url, result.terminal["response"]["id"]))
    assert again.events == result.events


def test_cancelled(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=" ".join(f"w{i}" for i in range(50)), token_delay=0.05))
    queued = post(gw, {"model": "local-llama", "input": "hi", "background": True})
    deadline = time.monotonic() + 5
    while get(gw, f"/responses/{queued['id']}")["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    response = httpx.post(f"{gw.gateway.url}/v1/responses/{queued['id']}/cancel", timeout=30)
    assert response.status_code == 200, response.text
    cancelled = check_response(response.json())
    assert cancelled["status"] == "cancelled"
    check_response(get(gw, f"/responses/{queued['id']}"))


def test_delete_response(gw: Stack) -> None:
    data = post(gw, {"model": "local-llama", "input": "bye"})
    response = httpx.delete(f"{gw.gateway.url}/v1/responses/{data['id']}", timeout=30)
    assert response.json() == {"id": data["id"], "object": "response", "deleted": True}
    check_error(httpx.get(f"{gw.gateway.url}/v1/responses/{data['id']}", timeout=30), 404)


def test_conversations(gw: Stack) -> None:
    created = httpx.post(
        f"{gw.gateway.url}/v1/conversations",
        json={"metadata": {"topic": "demo"}, "items": [user("Hello!")]},
        timeout=30,
    ).json()
    openai_components().check("ConversationResource", created)
    openai_components().check("ConversationResource", get(gw, f"/conversations/{created['id']}"))
    data = post(gw, {"model": "local-llama", "input": "and now?", "conversation": created["id"]})
    assert data["conversation"] == {"id": created["id"]}
    items = get(gw, f"/conversations/{created['id']}/items?order=asc")
    check_item_list(items, "ConversationItemList")
    assert len(items["data"]) == 3
    check_item(get(gw, f"/conversations/{created['id']}/items/{items['data'][0]['id']}"))
    url = f"{gw.gateway.url}/v1/conversations/{created['id']}"
    added = httpx.post(f"{url}/items", json={"items": [user("more")]}, timeout=30)
    check_item_list(added.json(), "ConversationItemList")
    updated = httpx.post(url, json={"metadata": {"topic": "changed"}}, timeout=30)
    openai_components().check("ConversationResource", updated.json())
    item_id = items["data"][0]["id"]
    after_delete = httpx.delete(f"{url}/items/{item_id}", timeout=30)
    openai_components().check("ConversationResource", after_delete.json())


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/responses", {"input": "x"}, 400),
        ("POST", "/v1/responses", {"model": "local-llama", "input": [{"type": "nope"}]}, 400),
        ("POST", "/v1/responses", {"model": "no-such-model", "input": "x"}, 404),
        ("POST", "/v1/responses", {"model": "local-llama", "input": "x", "temperature": 9}, 400),
        ("GET", "/v1/responses/resp_missing", None, 404),
        ("GET", "/v1/responses/resp_missing/input_items", None, 404),
        ("POST", "/v1/responses/resp_missing/cancel", None, 404),
        ("GET", "/v1/conversations/conv_missing", None, 404),
        ("GET", "/v1/nowhere", None, 404),
    ],
)
def test_error_envelope(gw: Stack, method: str, path: str, body: Any, status: int) -> None:
    response = httpx.request(method, f"{gw.gateway.url}{path}", json=body, timeout=30)
    check_error(response, status)


def test_sdk_parses_what_the_schemas_accept(gw: Stack, client: openai.OpenAI) -> None:
    """The SDK's own parse of a streamed Response equals the JSON the schemas accepted."""
    gw.upstream.enqueue(Reply(content="same words"))
    with client.responses.stream(model="local-llama", input="hi") as events:
        final = events.get_final_response()
    stored = get(gw, f"/responses/{final.id}")
    check_response(stored)
    assert json.loads(final.model_dump_json(exclude_unset=True))["id"] == stored["id"]


def test_stream_fails_before_any_output(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500))
    result = stream(gw, {"model": "local-llama", "input": "x"})
    assert result.types == ["response.created", "response.in_progress", "error", "response.failed"]


def test_background_failed(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500))
    queued = post(gw, {"model": "local-llama", "input": "x", "background": True})
    failed = wait_terminal(gw, queued["id"])
    assert failed["status"] == "failed" and failed["error"] is not None


def test_restream_starting_after(gw: Stack) -> None:
    result = stream(gw, {"model": "local-llama", "input": "hi there", "background": True})
    response_id = result.terminal["response"]["id"]
    tail = restream_raw(gw.gateway.url, response_id, starting_after=3)
    assert tail.events == result.events[4:]
    for event in tail.events:
        open_responses().check(open_responses_events()[event["type"]], event)


def test_foreground_stream_cut_by_the_client_is_stored_cancelled(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=" ".join(f"w{i}" for i in range(100)), token_delay=0.02))
    body = {"model": "local-llama", "input": "hi", "stream": True}
    with httpx.stream("POST", f"{gw.gateway.url}/v1/responses", json=body, timeout=30) as r:
        lines = r.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        next(line for line in lines if '"response.output_text.delta"' in line)
    deadline = time.monotonic() + 5
    while True:
        response = httpx.get(f"{gw.gateway.url}/v1/responses/{created['response']['id']}")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    cancelled = check_response(response.json())
    assert cancelled["status"] == "cancelled" and cancelled["output"][0]["status"] == "incomplete"


def test_custom_tool_call(gw: Stack) -> None:
    """OpenAI-only (Open Responses has function tools only): OpenAI's schemas and the SDK."""
    tool = {"type": "custom", "name": "run_sql", "description": "Runs SQL."}
    arguments = json.dumps({"input": "select 1"})
    reply = Reply(tool_calls=[tool_call("run_sql", arguments, "call_sql")])
    gw.upstream.enqueue(reply, reply)
    body = {"model": "local-agent", "input": "count", "tools": [tool]}
    data = post(gw, body)
    assert data["output"][0]["type"] == "custom_tool_call"
    result = stream(gw, body)
    assert result.of("response.custom_tool_call_input.done")


def test_empty_input_items_page(gw: Stack) -> None:
    data = post(gw, {"model": "local-llama", "input": "one"})
    items = get(gw, f"/responses/{data['id']}/input_items")
    page = get(gw, f"/responses/{data['id']}/input_items?after={items['data'][0]['id']}")
    assert page["data"] == [] and page["has_more"] is False
    openai_components().check("ResponseItemList", page)


def test_deleted_conversation(gw: Stack) -> None:
    created = httpx.post(f"{gw.gateway.url}/v1/conversations", json={}, timeout=30).json()
    deleted = httpx.delete(f"{gw.gateway.url}/v1/conversations/{created['id']}", timeout=30)
    openai_components().check("DeletedConversation", deleted.json())


def test_input_token_count(gw: Stack) -> None:
    response = httpx.post(
        f"{gw.gateway.url}/v1/responses/input_tokens",
        json={"model": "local-llama", "input": "count me"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    openai_components().check("TokenCountsResource", response.json())


def test_echo_model(gw: Stack) -> None:
    data = post(gw, {"model": "echo", "input": "ping"})
    assert data["status"] == "completed"
    stream(gw, {"model": "echo", "input": "ping"})


# --- a backend that speaks Responses natively: its events and items are relayed ------------


def native_post(native: NativeStack, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{native.gateway.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return check_response(response.json())


NATIVE = pytest.mark.parametrize("native_stack", ["sqlite"], indirect=True)


@NATIVE
def test_native_reasoning_summary_and_text(gw: Stack, native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="Four.", reasoning=True), Answer(text="Four.", reasoning=True))
    body = {"model": "gpt-5-mini", "input": "2+2?", "reasoning": {"effort": "low"}}
    data = native_post(native, body)
    assert [item["type"] for item in data["output"]] == ["reasoning", "message"]
    result = check_stream(stream_raw(native.gateway.url, body))
    assert result.of("response.reasoning_summary_text.delta")


@NATIVE
@pytest.mark.parametrize("open_responses_names", [False, True])
def test_native_raw_reasoning(gw: Stack, native: NativeStack, open_responses_names: bool) -> None:
    """An upstream speaking Open Responses names raw reasoning `response.reasoning.*`: relayed
    under OpenAI's names, the ones the SDK knows, and kept in the stored item."""
    answer = Answer(
        text="Four.",
        reasoning=True,
        raw_reasoning="Two and two make four.",
        open_responses_names=open_responses_names,
    )
    native.fake.enqueue(answer)
    result = check_stream(stream_raw(native.gateway.url, {"model": "gpt-5-mini", "input": "2+2"}))
    deltas = result.of("response.reasoning_text.delta")
    assert "".join(d["delta"] for d in deltas) == "Two and two make four."
    assert result.of("response.reasoning_text.done")[0]["text"] == "Two and two make four."
    reasoning = result.terminal["response"]["output"][0]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Two and two make four."}]


@NATIVE
def test_native_null_item_fields(gw: Stack, native: NativeStack) -> None:
    """`encrypted_content: null`, `content: null`, `phase: null` from an upstream: left out, so
    the items are valid Open Responses (which has no null there) and read the same by the SDK."""
    answer = Answer(text="Hi.", reasoning=True, nulls=True)
    native.fake.enqueue(answer, answer)
    body = {"model": "vllm/qwen3", "input": "hi"}
    data = native_post(native, body)
    assert "encrypted_content" not in data["output"][0] and "phase" not in data["output"][1]
    check_stream(stream_raw(native.gateway.url, body))


@NATIVE
def test_native_keepalive_events_are_not_relayed(gw: Stack, native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="a b c d", keepalive=True))
    result = check_stream(stream_raw(native.gateway.url, {"model": "gpt-5-mini", "input": "x"}))
    assert "keepalive" not in result.types
    assert result.terminal["response"]["output_text"] == "a b c d"


@NATIVE
def test_native_hosted_tool(gw: Stack, native: NativeStack) -> None:
    answer = Answer(text="Sunny.", web_search=True)
    native.fake.enqueue(answer, answer, answer)
    body = {"model": "gpt-5-mini", "input": "Weather?", "tools": [{"type": "web_search"}]}
    first = native_post(native, body)
    check_stream(stream_raw(native.gateway.url, body))
    second = native_post(native, {**body, "previous_response_id": first["id"], "input": "More?"})
    listed = httpx.get(f"{native.gateway.url}/v1/responses/{second['id']}/input_items")
    check_item_list(listed.json(), "ResponseItemList")
    assert "web_search_call" in [item["type"] for item in listed.json()["data"]]


@NATIVE
@pytest.mark.parametrize("status", ["incomplete", "failed"])
def test_native_unfinished(gw: Stack, native: NativeStack, status: str) -> None:
    native.fake.enqueue(Answer(status=status), Answer(status=status))
    body = {"model": "gpt-5-mini", "input": "hi"}
    if status == "incomplete":
        assert native_post(native, body)["status"] == "incomplete"
    else:
        response = httpx.post(f"{native.gateway.url}/v1/responses", json=body, timeout=30)
        check_error(response, 500 if response.status_code == 500 else 502)
    result = check_stream(stream_raw(native.gateway.url, body))
    assert result.terminal["type"] == f"response.{status}"


@NATIVE
def test_native_stream_cut_short(gw: Stack, native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="one two three four five six", drop_after=6))
    result = check_stream(stream_raw(native.gateway.url, {"model": "gpt-5-mini", "input": "n"}))
    assert result.types[-2:] == ["error", "response.failed"]
    check_response(
        httpx.get(
            f"{native.gateway.url}/v1/responses/{result.terminal['response']['id']}", timeout=30
        ).json()
    )


def test_input_items_of_every_shape(gw: Stack) -> None:
    """What the client sent, however loosely, is listed back as complete items."""
    first = post(gw, {"model": "local-llama", "input": "remember me"})
    history = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "."}]},
        {"type": "function_call", "call_id": "call_x", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_x", "output": "sunny"},
        {"type": "item_reference", "id": first["output"][0]["id"]},
        user("and now?"),
    ]
    data = post(gw, {"model": "local-llama", "input": history, "tools": [WEATHER_TOOL]})
    items = get(gw, f"/responses/{data['id']}/input_items?order=asc")
    check_item_list(items, "ResponseItemList")
    assert len(items["data"]) == len(history)


@pytest.mark.parametrize(
    "tool_choice",
    [
        "none",
        "required",
        {"type": "function", "name": "get_weather"},
        {
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    ],
)
def test_tool_choice_echo(gw: Stack, tool_choice: Any) -> None:
    gw.upstream.enqueue(Reply(tool_calls=[tool_call("get_weather", {}, "call_c")]))
    body = {
        "model": "local-llama",
        "input": "w",
        "tools": [WEATHER_TOOL],
        "tool_choice": tool_choice,
    }
    assert post(gw, body)["tool_choice"] == tool_choice


def test_request_parameters_echo(gw: Stack) -> None:
    body = {
        "model": "local-llama",
        "input": "x",
        "instructions": "Be brief.",
        "temperature": 0.5,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "max_tool_calls": 3,
        "metadata": {"k": "v"},
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "truncation": "auto",
        "safety_identifier": "user-1",
        "prompt_cache_key": "cache-1",
        "user": "someone",
        "store": False,
    }
    data = post(gw, body)
    assert data["reasoning"] == {"effort": "high", "summary": "auto"}
    assert data["user"] == "someone" and data["store"] is False


def or_request(body: dict[str, Any]) -> dict[str, Any]:
    """A create body that is valid Open Responses input (checked), as the suite may send it."""
    open_responses().check("CreateResponseBody", body)
    return body


NULLS = {
    "previous_response_id": None,
    "tools": None,
    "tool_choice": None,
    "text": None,
    "temperature": None,
    "top_p": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "parallel_tool_calls": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "reasoning": None,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "instructions": None,
    "top_logprobs": None,
    "metadata": None,
    "stream_options": None,
}


def test_open_responses_request_with_every_nullable_field_null(gw: Stack) -> None:
    data = post(gw, or_request({"model": "local-llama", "input": "hi", **NULLS}))
    assert data["tools"] == [] and data["tool_choice"] == "auto"


def test_open_responses_optional_defaults(gw: Stack) -> None:
    """Fields Open Responses lets a client leave out or null, which OpenAI's types require."""
    allowed = {"type": "allowed_tools", "tools": [{"type": "function", "name": "get_weather"}]}
    body = {"model": "local-llama", "input": "hi", "tools": [WEATHER_TOOL], "tool_choice": allowed}
    data = post(gw, or_request({**body, "text": {"format": None, "verbosity": "high"}}))
    assert data["tool_choice"] == {**allowed, "mode": "auto"}
    assert data["text"] == {"format": {"type": "text"}, "verbosity": "high"}


def test_open_responses_request_fields(gw: Stack) -> None:
    body = {
        "model": "local-llama",
        "input": "hi",
        "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
        "tools": [WEATHER_TOOL],
        "tool_choice": {
            "type": "allowed_tools",
            "tools": [{"type": "function", "name": "get_weather"}],
            "mode": "auto",
        },
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "temperature": 0.2,
        "top_p": 0.5,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "parallel_tool_calls": False,
        "stream": False,
        "background": False,
        "max_output_tokens": 64,
        "max_tool_calls": 2,
        "reasoning": {"effort": "low", "summary": "concise"},
        "truncation": "disabled",
        "store": True,
        "service_tier": "auto",
        "top_logprobs": 2,
        "metadata": {"k": "v"},
    }
    post(gw, or_request(body))
    stream(
        gw, or_request({**body, "stream": True, "stream_options": {"include_obfuscation": False}})
    )


def test_open_responses_input_items_with_nulls(gw: Stack) -> None:
    first = post(gw, {"model": "local-llama", "input": "remember me"})
    items = [
        {"type": "message", "role": "system", "content": "Be brief.", "id": None},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "x"}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": RED_HEART_PNG, "detail": None},
                {"type": "input_file", "filename": "a.pdf", "file_data": PDF, "file_url": None},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": None,
            "status": None,
            "content": [{"type": "output_text", "text": "Hello.", "annotations": []}],
        },
        {
            "type": "reasoning",
            "id": None,
            "summary": [{"type": "summary_text", "text": "."}],
            "content": None,
            "encrypted_content": None,
        },
        {
            "type": "function_call",
            "id": None,
            "call_id": "call_n",
            "name": "get_weather",
            "arguments": "{}",
            "status": None,
        },
        {
            "type": "function_call_output",
            "id": None,
            "call_id": "call_n",
            "output": [{"type": "input_text", "text": "sunny"}],
            "status": None,
        },
        {"type": None, "id": first["output"][0]["id"]},
        {"type": "message", "role": "user", "content": "and now?"},
    ]
    data = post(gw, or_request({"model": "local-llama", "input": items, "tools": [WEATHER_TOOL]}))
    listed = get(gw, f"/responses/{data['id']}/input_items?order=asc")
    check_item_list(listed, "ResponseItemList")
    assert len(listed["data"]) == len(items)


def test_background_stream_failed(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500))
    result = stream(gw, {"model": "local-llama", "input": "x", "background": True})
    assert result.types[-2:] == ["error", "response.failed"]
    again = check_stream(restream_raw(gw.gateway.url, result.terminal["response"]["id"]))
    assert again.events == result.events


def test_unstored_stream(gw: Stack) -> None:
    result = stream(gw, {"model": "local-llama", "input": "x", "store": False})
    assert result.terminal["response"]["store"] is False


def test_context_window_error(gw: Stack) -> None:
    body = {"model": "tiny-window", "input": [user("word " * 30) for _ in range(8)]}
    response = httpx.post(f"{gw.gateway.url}/v1/responses", json=body, timeout=30)
    assert check_error(response, 400)["code"] == "context_length_exceeded"
    truncated = post(gw, {**body, "truncation": "auto"})
    assert truncated["truncation"] == "auto"


def test_cancelled_background_stream(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=" ".join(f"w{i}" for i in range(60)), token_delay=0.05))
    body = {"model": "local-llama", "input": "x", "stream": True, "background": True}
    with httpx.stream("POST", f"{gw.gateway.url}/v1/responses", json=body, timeout=30) as r:
        lines = r.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        next(line for line in lines if '"response.output_text.delta"' in line)
        response_id = created["response"]["id"]
        cancel = httpx.post(f"{gw.gateway.url}/v1/responses/{response_id}/cancel", timeout=30)
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert check_response(cancel.json())["status"] == "cancelled"
    replay = restream_raw(gw.gateway.url, response_id)
    assert replay.events[-len(rest) :] == rest  # the followed stream ended the same way
    check_event_schemas(replay.events)
    # Every item and part opened was closed, incomplete, as the stored response has it.
    assert replay.types[-3:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    stored = get(gw, f"/responses/{response_id}")
    assert replay.events[-1]["item"] == stored["output"][0]
    assert stored["output"][0]["status"] == "incomplete"


def test_minimal_function_tool_echo(gw: Stack) -> None:
    data = post(
        gw, {"model": "local-llama", "input": "x", "tools": [{"type": "function", "name": "ping"}]}
    )
    assert data["tools"] == [
        {
            "type": "function",
            "name": "ping",
            "description": None,
            "parameters": None,
            "strict": False,
        }
    ]


def test_codex_request(gw: Stack) -> None:
    """A request `codex exec` sent (namespace tools, a hosted tool, encrypted reasoning): the
    stream it gets back is valid against OpenAI's schemas and the SDK's models."""
    body = json.loads((Path(__file__).parent / "fixtures" / "codex_request.json").read_text())
    gw.upstream.enqueue(Reply(content="Done.", reasoning="Looking at the repo."))
    result = stream(gw, {**body, "model": "local-agent"})
    assert result.terminal["response"]["status"] == "completed"
