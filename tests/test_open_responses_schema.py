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
cancelled, input items, conversations and the error envelope. What Open Responses lets a client
send is in `test_open_responses_requests.py`; what a backend speaking Responses natively relays,
in `test_native_wire.py`.

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
import pytest

from tests.conftest import Stack
from tests.fake_upstream import Fail, Reply, tool_call
from tests.schemas import (
    check_error,
    check_event_schemas,
    check_item,
    check_item_list,
    openai_components,
)
from tests.wire import (
    SSEStream,
    create_raw,
    get_raw,
    restream_raw,
    stream_raw,
    strict_response,
    strict_stream,
)

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


def post(gw: Stack, body: dict[str, Any]) -> dict[str, Any]:
    return create_raw(gw.gateway.url, body)


def get(gw: Stack, path: str) -> dict[str, Any]:
    return get_raw(gw.gateway.url, path)


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


def test_streaming_tool_call_forced_by_tool_choice(gw: Stack) -> None:
    call = tool_call("get_weather", {"location": "San Francisco, CA"}, "call_f")
    gw.upstream.enqueue(Reply(tool_calls=[call]))
    result = stream(
        gw,
        {
            "model": "local-llama",
            "input": [user("What's the weather like in San Francisco?")],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
        },
    )
    final = result.terminal["response"]
    assert [item["type"] for item in final["output"]] == ["function_call"]
    assert final["tool_choice"] == {"type": "function", "name": "get_weather"}
    forced = gw.upstream.last.body["tool_choice"]
    assert forced == {"type": "function", "function": {"name": "get_weather"}}


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
    check_event_schemas(tail.events)


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
