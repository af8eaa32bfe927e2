"""Tools on a Chat Completions backend, end to end: namespace and custom tools flattened into
functions and mapped back (plain and streamed), their outputs replayed, hosted tools rejected or
dropped per model, and `max_tool_calls`. Checked on what the fake upstream received."""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.fake_upstream import Reply, tool_call
from tests.wire import raw_create, stream_raw, strict_response, strict_stream

NAMESPACE = {
    "type": "namespace",
    "name": "crm",
    "description": "Customer records.",
    "tools": [
        {
            "type": "function",
            "name": "lookup",
            "description": "Find a customer.",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "strict": False,
        }
    ],
}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch to files."}
PATCH_TEXT = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch"


def upstream_names(gw: Stack) -> list[str]:
    return [tool["function"]["name"] for tool in gw.upstream.last.body.get("tools", [])]


def test_namespace_call_maps_back_and_replays(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("crm__lookup", {"id": 7}, "call_ns")]),
        Reply(content="Customer 7 is Ada."),
    )
    first = raw_create(client, model="local-llama", input="who is 7?", tools=[NAMESPACE])
    strict_response(first)
    assert upstream_names(gw) == ["crm__lookup"]
    call = first["output"][0]
    assert (call["type"], call["name"], call["namespace"]) == ("function_call", "lookup", "crm")
    assert first["tools"][0]["type"] == "namespace" and first["tools"][0]["name"] == "crm"
    output = {"type": "function_call_output", "call_id": "call_ns", "output": "Ada"}
    second = client.responses.create(
        model="local-llama",
        previous_response_id=first["id"],
        input=[output],  # type: ignore[list-item]
        tools=[NAMESPACE],  # type: ignore[list-item]
    )
    assert second.output_text == "Customer 7 is Ada."
    messages = gw.upstream.last.body["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "crm__lookup"
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_ns", "content": "Ada"}


def test_namespace_call_streamed(gw: Stack) -> None:
    gw.upstream.enqueue(Reply(tool_calls=[tool_call("crm__lookup", {"id": 7}, "call_ns")]))
    result = stream_raw(
        gw.gateway.url, {"model": "local-llama", "input": "who?", "tools": [NAMESPACE]}
    )
    strict_stream(result)
    added = result.of("response.output_item.added")[0]["item"]
    assert (added["name"], added["namespace"]) == ("lookup", "crm")
    done = result.of("response.function_call_arguments.done")[0]
    assert done["name"] == "lookup" and json.loads(done["arguments"]) == {"id": 7}
    final = result.terminal["response"]["output"][0]
    assert final["namespace"] == "crm" and final["name"] == "lookup"


def test_tool_choice_names_a_namespace_member(gw: Stack, client: openai.OpenAI) -> None:
    client.responses.create(
        model="local-llama",
        input="x",
        tools=[NAMESPACE],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "lookup"},
    )
    assert gw.upstream.last.body["tool_choice"] == {
        "type": "function",
        "function": {"name": "crm__lookup"},
    }


def test_allowed_tools_naming_a_namespace_member(gw: Stack, client: openai.OpenAI) -> None:
    other = {"type": "function", "name": "delete_all", "parameters": {"type": "object"}}
    two = {**NAMESPACE, "tools": [*NAMESPACE["tools"], other]}  # type: ignore[list-item]
    client.responses.create(
        model="local-llama",
        input="x",
        tools=[two, PATCH],  # type: ignore[list-item]
        tool_choice={
            "type": "allowed_tools",
            "mode": "auto",
            "tools": [{"type": "function", "name": "lookup"}],
        },
    )
    assert upstream_names(gw) == ["crm__lookup"]  # a hard limit, inside the namespace too


def test_custom_tool_call_and_output(gw: Stack, client: openai.OpenAI) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("apply_patch", {"input": PATCH_TEXT}, "call_p")]),
        Reply(content="Patched."),
    )
    first = raw_create(client, model="local-llama", input="add a.txt", tools=[PATCH])
    strict_response(first)
    function = gw.upstream.last.body["tools"][0]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"]["properties"]["input"]["type"] == "string"
    call = first["output"][0]
    assert call["type"] == "custom_tool_call" and call["input"] == PATCH_TEXT
    assert call["call_id"] == "call_p" and call["name"] == "apply_patch"
    assert first["tools"] == [PATCH]
    second = client.responses.create(
        model="local-llama",
        previous_response_id=first["id"],
        input=[{"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}],
        tools=[PATCH],  # type: ignore[list-item]
    )
    assert second.output_text == "Patched."
    messages = gw.upstream.last.body["messages"]
    assert messages[-2]["tool_calls"] == [
        {
            "id": "call_p",
            "type": "function",
            "function": {"name": "apply_patch", "arguments": json.dumps({"input": PATCH_TEXT})},
        }
    ]
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_p", "content": "Done!"}
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items][-2:] == ["custom_tool_call", "custom_tool_call_output"]


def test_custom_tool_call_streamed(gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("apply_patch", {"input": PATCH_TEXT}, "call_p")])
    )
    result = stream_raw(gw.gateway.url, {"model": "local-llama", "input": "go", "tools": [PATCH]})
    strict_stream(result)
    assert result.types[2:] == [
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.function_call_arguments.delta" not in result.types
    added = result.of("response.output_item.added")[0]["item"]
    assert added["type"] == "custom_tool_call" and added["input"] == ""
    assert result.of("response.custom_tool_call_input.delta")[0]["delta"] == PATCH_TEXT
    assert result.of("response.custom_tool_call_input.done")[0]["input"] == PATCH_TEXT
    item = result.terminal["response"]["output"][0]
    assert item["input"] == PATCH_TEXT and item["id"] == added["id"]


def test_custom_tool_choice(gw: Stack, client: openai.OpenAI) -> None:
    client.responses.create(
        model="local-llama",
        input="x",
        tools=[PATCH],  # type: ignore[list-item]
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    assert gw.upstream.last.body["tool_choice"] == {
        "type": "function",
        "function": {"name": "apply_patch"},
    }


def test_hosted_tool_rejected_by_default(gw: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local-llama",
            input="x",
            tools=[{"type": "function", "name": "f"}, {"type": "web_search"}],  # type: ignore[list-item]
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "tools[1].type"
    assert "'web_search'" in error["message"] and "hosted_tools: drop" in error["message"]
    assert gw.upstream.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_hosted_tools_dropped(gw: Stack, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    tools = [
        {"type": "web_search", "external_web_access": True},
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
    ]
    body = {"model": "local-agent", "input": "x", "tools": tools, "stream": stream}
    with (
        caplog.at_level(logging.INFO, logger="app.core.responses"),
        httpx.Client(base_url=gw.gateway.url, timeout=30) as http,
    ):
        reply = http.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-gateway-dropped-tools"] == "web_search,file_search"
    assert "dropped hosted tools web_search, file_search: model local-agent" in caplog.text
    assert upstream_names(gw) == ["f"]
    assert gw.upstream.last.body["model"] == "qwen3"
    if stream:
        final = json.loads(reply.text.rsplit("data: ", 1)[1])["response"]
    else:
        final = reply.json()
    assert final["tools"][0] == tools[0] and final["tools"][2] == tools[2]


def test_only_hosted_tools_dropped_sends_no_tools(gw: Stack, client: openai.OpenAI) -> None:
    client.responses.create(
        model="local-agent",
        input="x",
        tools=[{"type": "web_search"}],  # type: ignore[list-item]
        tool_choice="auto",
    )
    assert "tools" not in gw.upstream.last.body and "tool_choice" not in gw.upstream.last.body


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "web_search"},
        {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]},
    ],
)
def test_tool_choice_forcing_a_dropped_tool(gw: Stack, client: openai.OpenAI, choice: dict) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local-agent",
            input="x",
            tools=[{"type": "web_search"}, {"type": "function", "name": "f"}],  # type: ignore[list-item]
            tool_choice=choice,  # type: ignore[arg-type]
        )
    assert "web_search" in str(caught.value) and "dropped" in str(caught.value)
    assert gw.upstream.requests == []


def test_max_tool_calls_does_not_limit_function_calls(gw: Stack, client: openai.OpenAI) -> None:
    """OpenAI counts built-in (hosted) tool calls only against `max_tool_calls`; a Chat
    Completions backend runs none, so function calls are never cut and nothing is sent on."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("f", {}, "call_1"), tool_call("f", {"n": 2}, "call_2")])
    )
    response = client.responses.create(
        model="local-llama",
        input="x",
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],  # type: ignore[list-item]
        max_tool_calls=1,
    )
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    assert response.max_tool_calls == 1
    assert "max_tool_calls" not in gw.upstream.last.body


def test_replayed_hosted_items_on_a_chat_model(gw: Stack, client: openai.OpenAI) -> None:
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}}
    history = [{"role": "user", "content": "a"}, search, {"role": "user", "content": "b"}]
    raw = httpx.post(
        f"{gw.gateway.url}/v1/responses", json={"model": "local-llama", "input": history}
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["param"] == "input[1].type"
    assert "hosted_tools: drop" in raw.json()["error"]["message"]
    # With `hosted_tools: drop` they are kept out of the upstream's context.
    response = client.responses.create(model="local-agent", input=history)  # type: ignore[arg-type]
    assert response.status == "completed"
    assert [m["content"] for m in gw.upstream.last.body["messages"]] == ["a", "b"]


def test_an_image_a_tool_returned_reaches_the_model_after_the_tool_message(
    gw: Stack, client: openai.OpenAI
) -> None:
    """A function's output with an image (a screenshot tool, the Agents SDK's
    `ToolOutputImage`): Chat Completions takes only text in a tool message, so the image goes in
    a user message right after it; the stored output item keeps the image as the client sent it."""
    shot = {
        "type": "function",
        "name": "screenshot",
        "parameters": {"type": "object", "properties": {}},
        "strict": False,
    }
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("screenshot", {}, "call_s")]),
        Reply(content="A login form."),
    )
    first = client.responses.create(model="local-llama", input="What is on screen?", tools=[shot])  # type: ignore[list-item]
    image = {
        "type": "input_image",
        "image_url": "data:image/png;base64,iVBORw0KGgo=",
        "detail": "auto",
    }
    second = client.responses.create(
        model="local-llama",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_s", "output": [image]}],  # type: ignore[list-item]
        tools=[shot],  # type: ignore[list-item]
    )
    assert second.output_text == "A login form."
    messages = gw.upstream.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[2]["tool_call_id"] == "call_s" and isinstance(messages[2]["content"], str)
    assert messages[3]["content"] == [
        {"type": "text", "text": "Attached by the tool call call_s:"},
        {"type": "image_url", "image_url": {"url": image["image_url"], "detail": "auto"}},
    ]
    items = client.responses.input_items.list(second.id, order="asc").data
    output = items[-1].model_dump(exclude_none=True)
    assert output["type"] == "function_call_output" and output["output"] == [image]
