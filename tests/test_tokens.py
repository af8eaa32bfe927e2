"""Token counting (`POST /v1/responses/input_tokens`) and fitting the context into a model's
`context_window` (`truncation`)."""

from __future__ import annotations

import httpx
import openai
import pytest

from app.core.tokens import count_tokens, encoding_name, fit_context
from app.errors import BadRequestError
from tests.conftest import NativeStack, Stack
from tests.fake_upstream import FakeTokenizer


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def call(call_id: str) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def output(call_id: str, text: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def test_encodings_by_model_family() -> None:
    assert encoding_name("gpt-4o-mini") == ("o200k_base", True)
    assert encoding_name("openai/gpt-5") == ("o200k_base", True)
    assert encoding_name("gpt-4-turbo") == ("cl100k_base", True)
    assert encoding_name("llama3.2") == ("o200k_base", False)  # an estimate


def test_count_grows_with_content_and_tools() -> None:
    base = count_tokens("gpt-4o", None, [user("hi")])
    assert base == 3 + 4 + 1  # priming, one message's framing, "hi"
    assert count_tokens("gpt-4o", "Be brief.", [user("hi")]) > base
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    assert count_tokens("gpt-4o", None, [user("hi")], tools) > base


def test_count_endpoint_through_the_sdk(client: openai.OpenAI) -> None:
    counted = client.responses.input_tokens.count(
        model="local-llama", input="Hello world, how are you?", instructions="Be brief."
    )
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == count_tokens(
        "llama3.2", "Be brief.", [user("Hello world, how are you?")]
    )
    first = client.responses.create(model="local-llama", input="one two three")
    chained = client.responses.input_tokens.count(
        model="local-llama", input="four", previous_response_id=first.id
    )
    alone = client.responses.input_tokens.count(model="local-llama", input="four")
    assert chained.input_tokens > alone.input_tokens
    # `input: null` (the spec allows it here): the previous response's context alone.
    context = client.responses.input_tokens.count(
        model="local-llama", input=None, previous_response_id=first.id
    )
    assert 0 < context.input_tokens < chained.input_tokens
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="nope", input="x")
    with pytest.raises(openai.BadRequestError) as caught:  # as create refuses it
        client.responses.input_tokens.count(
            model="local-llama", input="x", previous_response_id=first.id, conversation="conv_1"
        )
    assert caught.value.body["param"] == "conversation"  # type: ignore[index]


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER["parameters"]},
}


def test_count_by_a_vllm_server(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.tokenizer.mode = "vllm"
    first = client.responses.create(model="local-llama", input="one two")
    counted = client.responses.input_tokens.count(
        model="local-llama",
        input="Hello there world",
        instructions="Be brief.",
        tools=[WEATHER],  # type: ignore[list-item]
        previous_response_id=first.id,
    )
    (asked,) = gw.upstream.tokenizer.requests
    # The chat request the same create would send, templated by the server itself.
    assert asked.path == "/tokenize"
    assert asked.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one two"},
            {"role": "assistant", "content": "echo: one two"},
            {"role": "user", "content": "Hello there world"},
        ],
        "add_generation_prompt": True,
        "tools": [CHAT_WEATHER],
    }
    assert asked.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert counted.input_tokens == FakeTokenizer.vllm_count(asked.body) == 5 * 4 + 10 + 10
    assert len(gw.upstream.requests) == 1  # the first turn's; counting generates nothing


def test_count_by_a_llama_cpp_server(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.tokenizer.mode = "llama.cpp"
    counted = client.responses.input_tokens.count(
        model="local-llama", input="Hello there world", instructions="Be brief."
    )
    asked = gw.upstream.tokenizer.requests
    assert [r.path for r in asked] == ["/tokenize", "/apply-template", "/tokenize"]
    prompt = FakeTokenizer.llama_prompt(asked[1].body)
    assert asked[2].body == {"content": prompt, "add_special": True, "parse_special": True}
    assert counted.input_tokens == len(prompt.split()) == 8


def test_count_without_a_tokenizer_upstream(client: openai.OpenAI, gw: Stack) -> None:
    # No `/tokenize` (Ollama, LM Studio): asked once, then our estimate.
    counted = client.responses.input_tokens.count(model="local-llama", input="Hello world")
    assert [r.path for r in gw.upstream.tokenizer.requests] == ["/tokenize"]
    assert counted.input_tokens == count_tokens("llama3.2", None, [user("Hello world")])
    # An unreachable server is estimated too, not an error.
    down = client.responses.input_tokens.count(model="unreachable", input="Hello world")
    assert down.input_tokens == counted.input_tokens
    # Without a server's count, OpenAI's families are counted exactly (their encoding).
    exact = client.responses.input_tokens.count(model="tiny-window", input="Hello world")
    assert exact.input_tokens == count_tokens("gpt-4o-mini", None, [user("Hello world")])
    # A local server's own count wins even for an OpenAI family (gpt-oss on vLLM has its own
    # chat template).
    gw.upstream.tokenizer.mode = "vllm"
    served = client.responses.input_tokens.count(model="tiny-window", input="Hello world")
    assert served.input_tokens == 5 + 2


def test_count_by_a_vllm_responses_server(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.tokenizer.mode = "vllm"
    counted = nclient.responses.input_tokens.count(model="vllm/qwen3-8b", input="Hi there")
    (asked,) = native.fake.tokenizer.requests
    assert asked.body["model"] == "qwen3-8b"
    assert asked.body["messages"] == [{"role": "user", "content": "Hi there"}]
    assert counted.input_tokens == 5 + 2
    # OpenAI's own models (openai, azure backends) are counted here: OpenAI has no /tokenize.
    exact = nclient.responses.input_tokens.count(model="gpt-4o", input="Hi there")
    assert exact.input_tokens == count_tokens("gpt-4o", None, [user("Hi there")])
    assert len(native.fake.tokenizer.requests) == 1


def test_truncation_drops_oldest_items_keeping_tool_pairs() -> None:
    items = [user("old " * 30), call("c1"), output("c1", "result " * 5), user("newest question")]
    kept = fit_context("gpt-4o", 60, 0, "Keep me.", items, None, truncate=True)
    assert kept[-1] == items[-1]
    assert items[0] not in kept
    assert (items[1] in kept) == (items[2] in kept)  # never half a tool-call pair
    with pytest.raises(BadRequestError) as caught:
        fit_context("gpt-4o", 60, 0, "Keep me.", items, None, truncate=False)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(BadRequestError):  # the newest item alone is too big
        fit_context("gpt-4o", 10, 0, None, [user("word " * 50)], None, truncate=True)


def test_context_window_enforced_through_the_gateway(client: openai.OpenAI, gw: Stack) -> None:
    long_history = client.responses.create(model="tiny-window", input="remember " * 70)
    raw = httpx.post(
        f"{gw.gateway.url}/v1/responses",
        json={
            "model": "tiny-window",
            "input": "and now?",
            "previous_response_id": long_history.id,
        },
    )
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    auto = client.responses.create(
        model="tiny-window",
        input="and now?",
        previous_response_id=long_history.id,
        truncation="auto",
    )
    assert auto.truncation == "auto" and auto.status == "completed"
    sent = gw.upstream.last.body["messages"]
    assert sent[-1] == {"role": "user", "content": "and now?"}
    # The oldest item went (only as much as needed): the user's long turn, not the answer.
    assert [m["role"] for m in sent] == ["assistant", "user"]
    # Stored state is untouched: the full history is still the response's input.
    assert len(client.responses.input_items.list(auto.id).data) == 3
