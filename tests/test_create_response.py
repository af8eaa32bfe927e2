"""Creating responses through the official SDK: the wire shape, and what reaches the upstream."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from app.core.requests import check_file_urls
from app.errors import BadRequestError
from app.store.contexts import StoredItem
from tests.conftest import Stack
from tests.fake_upstream import Reply, tool_call
from tests.wire import (
    create_raw,
    get_raw,
    raw_create,
    restream_raw,
    stream_raw,
    strict_response,
    strict_stream,
)


def test_plain_text_round_trip(client: openai.OpenAI, gw: Stack) -> None:
    data = raw_create(client, model="local-llama", input="Hello there")
    response = strict_response(data)
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == "local-llama"
    assert response.output_text == "echo: Hello there"
    assert data["output_text"] == "echo: Hello there"
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.usage.total_tokens == 18
    assert response.completed_at is not None and response.completed_at >= response.created_at
    sent = gw.upstream.last
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "llama3.2"
    assert sent.body["messages"] == [{"role": "user", "content": "Hello there"}]
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"


def test_defaults_are_echoed_non_null(client: openai.OpenAI) -> None:
    data = raw_create(client, model="local-llama", input="hi")
    assert data["temperature"] == 1.0 and data["top_p"] == 1.0
    assert data["tool_choice"] == "auto" and data["tools"] == []
    assert data["truncation"] == "disabled" and data["store"] is True
    assert data["background"] is False and data["parallel_tool_calls"] is True
    assert data["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert data["reasoning"] == {"effort": None, "summary": None}
    assert data["metadata"] == {} and data["service_tier"] == "default"
    assert data["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}


def test_request_parameters_are_echoed_and_translated(client: openai.OpenAI, gw: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    data = raw_create(
        client,
        model="local-llama",
        instructions="You are terse.",
        input=[
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "input_text", "text": "Where?"}]},
        ],
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=64,
        metadata={"team": "search"},
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
        extra_body={"presence_penalty": 0.5},
    )
    response = strict_response(data)
    assert response.instructions == "You are terse."
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.2, 0.9, 64)
    assert response.metadata == {"team": "search"}
    assert data["text"]["format"]["name"] == "place"
    assert data["reasoning"]["effort"] == "low"
    assert data["presence_penalty"] == 0.5
    body = gw.upstream.last.body
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Where?"},
    ]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["max_tokens"] == 64
    assert body["reasoning_effort"] == "low" and body["presence_penalty"] == 0.5
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    assert "metadata" not in body  # metadata stays with us


def test_json_object_format(client: openai.OpenAI, gw: Stack) -> None:
    client.responses.create(
        model="local-llama", input="json please", text={"format": {"type": "json_object"}}
    )
    assert gw.upstream.last.body["response_format"] == {"type": "json_object"}


def test_images_become_chat_content_parts(client: openai.OpenAI, gw: Stack) -> None:
    data_uri = "data:image/png;base64,iVBORw0KGgo="
    client.responses.create(
        model="local-llama",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "low",
                    },
                    {"type": "input_image", "image_url": data_uri},
                ],
            }
        ],
    )
    assert gw.upstream.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": data_uri, "detail": "auto"}},
    ]


def test_inline_files_become_chat_file_parts(client: openai.OpenAI, gw: Stack) -> None:
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    client.responses.create(
        model="local-llama",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Summarise."},
                    {"type": "input_file", "file_data": pdf, "filename": "a.pdf"},
                ],
            }
        ],
    )
    assert gw.upstream.last.body["messages"][0]["content"] == [
        {"type": "text", "text": "Summarise."},
        {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
    ]


def test_files_by_url_are_refused_on_chat_models(client: openai.OpenAI, gw: Stack) -> None:
    part = {"type": "input_file", "file_url": "https://example.com/a.pdf"}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local-llama",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}, part]}],
        )
    assert caught.value.body["param"] == "input[0].content[1].file_url"  # type: ignore[index]
    assert "file_data" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="local-llama",
            input=[{"role": "user", "content": [{**part, "file_url": "file:///etc/passwd"}]}],
        )
    assert caught.value.body["param"] == "input[0].content[0].file_url"  # type: ignore[index]
    assert gw.upstream.requests == []


def test_a_file_by_url_in_the_history_is_refused_every_time() -> None:
    """History items are checked once and marked clean; one that sends a file by URL (stored
    through a model that fetches URLs) is never marked, so every continuation on a Chat
    Completions model is refused, and new input is still checked after a clean history."""
    chat = SimpleNamespace(responses_native=False)

    def message(*parts: dict[str, Any]) -> dict[str, Any]:
        return {"type": "message", "role": "user", "content": list(parts)}

    text = {"type": "input_text", "text": "x"}
    by_url = {"type": "input_file", "file_url": "https://example.com/a.pdf"}
    clean, dirty = StoredItem(1, message(text)), StoredItem(2, message(text, by_url))
    for _ in range(2):
        items = [clean.data, dirty.data, message(text)]
        with pytest.raises(BadRequestError) as caught:
            check_file_urls(items, chat, "m", 1, [clean, dirty])  # type: ignore[arg-type]
        assert caught.value.param == "input"
    assert clean.no_file_url and not dirty.no_file_url
    check_file_urls([clean.data, message(text)], chat, "m", 1, [clean])  # type: ignore[arg-type]
    with pytest.raises(BadRequestError) as caught:
        check_file_urls([clean.data, message(by_url)], chat, "m", 1, [clean])  # type: ignore[arg-type]
    assert caught.value.param == "input[0].content[0].file_url"


def test_tool_calls_become_function_call_items(client: openai.OpenAI, gw: Stack) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"type": "function", "name": "get_time", "parameters": {"type": "object"}, "strict": True},
    ]
    gw.upstream.enqueue(
        Reply(
            content=None,
            tool_calls=[
                tool_call("get_weather", {"city": "Paris"}, "call_a"),
                tool_call("get_time", {}, "call_b"),
            ],
        )
    )
    data = raw_create(
        client,
        model="local-llama",
        input="weather and time?",
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=True,
    )
    response = strict_response(data)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.name, c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", "call_a", {"city": "Paris"}),
        ("get_time", "call_b", {}),
    ]
    assert all(c.id.startswith("fc_") and c.status == "completed" for c in calls)
    assert [item.type for item in response.output] == ["function_call", "function_call"]
    assert data["tools"][0] == {**tools[0], "strict": False}
    assert data["tools"][1]["strict"] is True and data["tools"][1]["description"] is None
    body = gw.upstream.last.body
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is True
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": tools[0]["parameters"],
        },
    }
    assert body["tools"][1]["function"]["strict"] is True

    # The client runs the tools and continues the chain with their outputs.
    gw.upstream.enqueue(Reply(content="Sunny, 12:00."))
    follow = client.responses.create(
        model="local-llama",
        previous_response_id=response.id,
        tools=tools,
        input=[
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b", "output": "12:00"},
        ],
    )
    assert follow.output_text == "Sunny, 12:00."
    messages = gw.upstream.last.body["messages"]
    assert messages[0] == {"role": "user", "content": "weather and time?"}
    assert messages[1]["role"] == "assistant" and messages[1]["content"] is None
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    ]


def test_named_tool_choice_and_allowed_tools_limit(client: openai.OpenAI, gw: Stack) -> None:
    tools = [
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
        {"type": "function", "name": "b", "parameters": {"type": "object"}},
    ]
    client.responses.create(
        model="local-llama", input="x", tools=tools, tool_choice={"type": "function", "name": "b"}
    )
    assert gw.upstream.last.body["tool_choice"] == {"type": "function", "function": {"name": "b"}}
    data = raw_create(
        client,
        model="local-llama",
        input="x",
        tools=tools,
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "a"}],
        },
    )
    body = gw.upstream.last.body
    assert [t["function"]["name"] for t in body["tools"]] == ["a"]  # a hard limit
    assert body["tool_choice"] == "required"
    assert data["tool_choice"]["type"] == "allowed_tools"
    assert len(data["tools"]) == 2


def test_text_then_tool_call_and_reasoning(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(
            content="Let me check.",
            reasoning="The user wants weather.",
            tool_calls=[tool_call("get_weather", {"city": "Oslo"}, "call_1")],
        )
    )
    data = raw_create(
        client,
        model="local-llama",
        input="weather?",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    )
    response = strict_response(data)
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    reasoning = response.output[0]
    assert reasoning.id.startswith("rs_")
    assert reasoning.content is not None and reasoning.content[0].text == "The user wants weather."
    assert response.output_text == "Let me check."


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_field_names_of_local_servers(client: openai.OpenAI, gw: Stack, key: str) -> None:
    gw.upstream.enqueue(Reply(content="42", reasoning="thinking…", reasoning_key=key))
    response = client.responses.create(model="local-llama", input="?")
    assert response.output[0].type == "reasoning"
    assert response.output_text == "42"


def test_length_finish_is_incomplete(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="A long sto", finish_reason="length"))
    data = raw_create(client, model="local-llama", input="story", max_output_tokens=16)
    response = strict_response(data)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.completed_at is None
    assert client.responses.retrieve(response.id).status == "incomplete"


def test_refusal_and_usage_details(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(
            content=None,
            refusal="I can't help with that.",
            usage={
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 64},
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
        )
    )
    response = strict_response(raw_create(client, model="local-llama", input="bad"))
    part = response.output[0].content[0]
    assert part.type == "refusal" and part.refusal == "I can't help with that."
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 64
    assert response.usage.output_tokens_details.reasoning_tokens == 5
    assert response.usage.total_tokens == 120


def test_unknown_fields_are_ignored(client: openai.OpenAI, gw: Stack) -> None:
    response = client.responses.create(
        model="local-llama",
        input="hi",
        extra_body={"client_metadata": {"x": 1}, "some_future_field": True},
        prompt_cache_key="abc",
        include=["reasoning.encrypted_content"],
        reasoning={"summary": "auto"},
    )
    assert response.status == "completed"
    assert "client_metadata" not in gw.upstream.last.body


def test_store_false_is_not_retrievable(client: openai.OpenAI) -> None:
    response = client.responses.create(model="local-llama", input="secret", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="local-llama", input="x", previous_response_id=response.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_models_list(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == [
        "local-llama",
        "local-agent",
        "short-timeout",
        "unreachable",
        "url-credentials",
        "one-connection",
        "tiny-window",
        "gpt-4.1-mini",
        "echo",
    ]  # echo: built in
    assert client.models.retrieve("local-llama").id == "local-llama"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_logprobs_mapped_from_chat_completions(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="two words"))
    data = raw_create(
        client,
        model="local-llama",
        input="x",
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    response = strict_response(data)
    assert gw.upstream.last.body["logprobs"] is True
    assert gw.upstream.last.body["top_logprobs"] == 2
    assert data["top_logprobs"] == 2
    logprobs = response.output[0].content[0].logprobs  # type: ignore[union-attr]
    assert logprobs is not None
    assert [lp.token for lp in logprobs] == ["two ", "words"]
    assert logprobs[1].logprob == -0.5 and logprobs[1].bytes == list(b"words")
    assert [t.token for t in logprobs[0].top_logprobs] == ["two #0", "two #1"]
    assert logprobs[0].top_logprobs[0].bytes == list(b"two #0")  # filled in when missing


def test_no_logprobs_unless_included(client: openai.OpenAI, gw: Stack) -> None:
    client.responses.create(model="local-llama", input="x", top_logprobs=3)
    assert "logprobs" not in gw.upstream.last.body


@pytest.mark.parametrize(
    "mode", ["foreground", "stream", "background", "background_stream"], ids=str
)
def test_nul_characters_are_stored_and_returned_intact(
    client: openai.OpenAI, gw: Stack, mode: str
) -> None:
    # JSON allows U+0000 in a string, and OpenAI gives it back. PostgreSQL's `json` type
    # stores the escape, but any operator that extracts text from it (`->>`, `->`) refuses it.
    text, instructions = "a\u0000b", "be\u0000brief"
    body = {"model": "local-llama", "input": text, "instructions": instructions}
    if mode.startswith("background"):
        body["background"] = True
    if mode.endswith("stream"):
        live = stream_raw(gw.gateway.url, body)
        strict_stream(live)
        response_id = live.terminal["response"]["id"]
        assert live.terminal["response"]["output"][0]["content"][0]["text"] == f"echo: {text}"
    else:
        response_id = create_raw(gw.gateway.url, body)["id"]
    deadline = time.monotonic() + 10
    while (stored := get_raw(gw.gateway.url, f"/responses/{response_id}"))["status"] in (
        "queued",
        "in_progress",
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored["status"] == "completed"
    assert stored["instructions"] == instructions
    assert stored["output"][0]["content"][0]["text"] == f"echo: {text}"
    assert gw.upstream.last.body["messages"] == [
        {"role": "system", "content": instructions},
        {"role": "user", "content": text},
    ]
    listed = get_raw(gw.gateway.url, f"/responses/{response_id}/input_items?order=asc")["data"]
    assert [item["content"][0]["text"] for item in listed] == [text]
    if mode.endswith("stream") and mode.startswith("background"):
        again = restream_raw(gw.gateway.url, response_id)
        assert again.events == live.events
    follow = client.responses.create(
        model="local-llama", input="next", previous_response_id=response_id
    )
    assert follow.output_text == "echo: next"
    sent = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert sent[-3:] == [text, f"echo: {text}", "next"]


def test_nul_in_ids_is_a_client_error(gw: Stack, client: openai.OpenAI) -> None:
    """U+0000 cannot be held by an id on PostgreSQL (a text column): wherever a client puts one
    in an id — a replayed item, `previous_response_id`, an item reference, a URL — the answer is
    a 4xx in the envelope, never a 500, and nothing is sent upstream; an input item's id is
    refused the same way on both databases, naming it."""
    bad = "a\u0000b"
    replayed = [{"type": "message", "role": "user", "content": "x", "id": f"msg_{bad}"}]
    attempts = [
        lambda: client.responses.create(
            model="local-llama", input="x", previous_response_id=f"resp_{bad}"
        ),
        lambda: client.responses.create(
            model="local-llama", input=[{"type": "item_reference", "id": f"msg_{bad}x"}]
        ),
        lambda: client.responses.retrieve(f"resp_{bad}"),
        lambda: client.responses.delete(f"resp_{bad}"),
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="local-llama", input=replayed)  # type: ignore[arg-type]
    assert refused.value.body["param"] == "input[0].id"  # type: ignore[index]
    for attempt in attempts:
        with pytest.raises(openai.APIStatusError) as raised:
            attempt()
        assert 400 <= raised.value.status_code < 500, raised.value.response.text
        assert set(raised.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert not gw.upstream.requests


def test_a_string_input_is_stored_as_the_same_user_message_spelled_out() -> None:
    """A plain-string `input` is stored as the user message it stands for (built directly, on
    the hot path): the same item `canonical_item` makes of that message, fresh id aside."""
    from app.core.items import canonical_item, user_text_item
    from app.schemas.requests import MessageItem

    text = "Say hi \u0000 \u2028 ünïcode"
    direct, spelled = user_text_item(text), canonical_item(MessageItem(role="user", content=text))
    assert direct["id"].startswith("msg_") and direct["id"] != spelled["id"]
    assert list(direct) == list(spelled)
    assert {**direct, "id": ""} == {**spelled, "id": ""}


def test_prompt_caching_fields_are_echoed_on_a_chat_model(client: openai.OpenAI, gw: Stack) -> None:
    """No Chat Completions upstream takes them (local servers cache prefixes on their own), and
    they change nothing of the answer: echoed as OpenAI reports them, not sent on."""
    response = client.responses.create(
        model="local-llama",
        input="hi",
        prompt_cache_key="team-a",
        prompt_cache_retention="24h",
        extra_body={"prompt_cache_options": {"mode": "explicit"}},
    )
    for seen in (response, client.responses.retrieve(response.id)):
        assert (seen.prompt_cache_key, seen.prompt_cache_retention) == ("team-a", "24h")
        assert seen.prompt_cache_options is not None
        assert (seen.prompt_cache_options.ttl, seen.prompt_cache_options.mode) == (
            "30m",
            "explicit",
        )
    sent = gw.upstream.last.body
    assert not {"prompt_cache_key", "prompt_cache_retention", "prompt_cache_options"} & set(sent)
