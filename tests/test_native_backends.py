"""Backends that speak Responses natively (OpenAI, local servers) and the built-in echo model:
stateless upstream calls carrying our state, encrypted reasoning across turns, hosted tools and
their events relayed under our id and numbering, strict SDK validation throughout."""

from __future__ import annotations

import json
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import NativeStack
from tests.fake_responses import Answer
from tests.wire import raw_create, stream_raw, strict_items, strict_response, strict_stream


def test_openai_state_stays_with_us(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(text="Hello Ada.", reasoning=True))
    first = raw_create(
        nclient, model="gpt-5-mini", input="My name is Ada.", instructions="Be brief."
    )
    strict_response(first)
    sent = native.fake.last
    assert sent.path == "/v1/responses"
    assert sent.headers["Authorization"] == "Bearer sk-openai-secret"
    assert sent.body["store"] is False and sent.body["model"] == "gpt-5-mini"
    # gpt-5 is a reasoning family: encrypted reasoning is asked for without the client asking.
    assert sent.body["include"] == ["reasoning.encrypted_content"]
    assert sent.body["instructions"] == "Be brief."
    assert sent.body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "My name is Ada."}],
            "status": "completed",
        }
    ]
    assert first["id"].startswith("resp_") and first["id"] != "resp_upstream_should_not_leak"
    assert first["model"] == "gpt-5-mini" and first["output_text"] == "Hello Ada."
    reasoning, message = first["output"]
    assert reasoning["id"].startswith("rs_fake")  # the upstream's id, kept
    assert reasoning["encrypted_content"].startswith("gAAAA-encrypted-")
    assert first["usage"]["output_tokens_details"]["reasoning_tokens"] == 4

    native.fake.enqueue(Answer(text="You are Ada."))
    second = nclient.responses.create(
        model="gpt-5-mini", input="What is my name?", previous_response_id=first["id"]
    )
    replayed = native.fake.last.body["input"]
    # The whole context, from our database; the reasoning item goes back verbatim.
    assert [item.get("type") for item in replayed] == ["message", "reasoning", "message", "message"]
    assert replayed[1] == reasoning
    assert replayed[2]["id"] == message["id"] and replayed[2]["role"] == "assistant"
    assert "id" not in replayed[0] and "id" not in replayed[3]  # ours mean nothing upstream
    assert second.output_text == "You are Ada."
    items = nclient.responses.input_items.list(second.id, order="asc")
    assert [item.id for item in items.data][1:3] == [reasoning["id"], message["id"]]
    strict_items([item.model_dump() for item in items.data])


@pytest.mark.parametrize("model", ["gpt-4o", "vllm/qwen3-8b"])
def test_structured_output_and_files_by_url_reach_the_upstream(
    native: NativeStack, nclient: openai.OpenAI, model: str
) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
        "additionalProperties": False,
    }
    text = {
        "format": {"type": "json_schema", "name": "doc", "schema": schema, "strict": True},
        "verbosity": "low",
    }
    file = {"type": "input_file", "file_url": "https://example.com/report.pdf"}
    response = nclient.responses.create(
        model=model,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Title?"}, file]}],
        text=text,  # type: ignore[arg-type]
    )
    sent = native.fake.last.body
    assert sent["text"] == text
    assert sent["input"][0]["content"][1] == file  # the upstream fetches it, not us
    assert response.text.format.type == "json_schema" and response.text.verbosity == "low"
    nclient.responses.create(model=model, input="json", text={"format": {"type": "json_object"}})
    assert native.fake.last.body["text"] == {"format": {"type": "json_object"}}


def test_local_server_gets_its_plain_reasoning_back(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    thought = "The user wants the weather; call the tool."
    native.fake.enqueue(Answer(text="Sunny.", reasoning=True, raw_reasoning=thought))
    first = nclient.responses.create(model="vllm/gpt-oss-20b", input="Weather?")
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == thought
    nclient.responses.create(
        model="vllm/gpt-oss-20b", input="And tomorrow?", previous_response_id=first.id
    )
    replayed = native.fake.last.body["input"]
    assert [item["type"] for item in replayed] == ["message", "reasoning", "message", "message"]
    assert replayed[1]["id"] == reasoning.id
    assert replayed[1]["content"] == [{"type": "reasoning_text", "text": thought}]
    # OpenAI could not look that reasoning up (no encrypted content): it is left out there.
    nclient.responses.create(model="gpt-4o", input="And then?", previous_response_id=first.id)
    assert [item["type"] for item in native.fake.last.body["input"]] == ["message"] * 3


def test_reasoning_include_only_when_it_reasons(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    nclient.responses.create(model="gpt-4o", input="hi")
    assert "include" not in native.fake.last.body  # OpenAI refuses it for such models
    nclient.responses.create(
        model="gpt-4o", input="hi", reasoning={"effort": "low", "summary": "auto"}
    )
    body = native.fake.last.body
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}


def test_hosted_tool_stream_relayed(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(text="It is sunny in Paris.", reasoning=True, web_search=True))
    result = stream_raw(
        native.gateway.url,
        {
            "model": "gpt-5-mini",
            "input": "Weather in Paris?",
            "tools": [{"type": "web_search", "search_context_size": "low"}],
            "include": ["web_search_call.action.sources"],
        },
    )
    strict_stream(result)  # our numbering from 0, every event a typed SDK event
    sent = native.fake.last.body
    assert sent["tools"] == [{"type": "web_search", "search_context_size": "low"}]
    assert sent["include"] == ["web_search_call.action.sources", "reasoning.encrypted_content"]
    assert sent["stream_options"] == {"include_obfuscation": False}
    searches = [t for t in result.types if t.startswith("response.web_search_call.")]
    assert searches == [
        f"response.web_search_call.{p}" for p in ("in_progress", "searching", "completed")
    ]
    assert result.types.count("response.created") == 1
    assert "response.reasoning_summary_text.delta" in result.types
    assert not any("obfuscation" in event for event in result.events)
    final = result.terminal["response"]
    ids = [item["id"] for item in final["output"]]
    assert [i.split("_")[0] for i in ids] == ["rs", "ws", "msg"]
    assert final["output"][0]["encrypted_content"].startswith("gAAAA-encrypted-")
    assert {e["item_id"] for e in result.of("response.web_search_call.completed")} == {ids[1]}
    assert {e["output_index"] for e in result.of("response.web_search_call.searching")} == {1}
    assert final["tools"] == [{"type": "web_search", "search_context_size": "low"}]
    assert final["id"] == result.events[0]["response"]["id"] != "resp_upstream_should_not_leak"
    stored = nclient.responses.with_raw_response.retrieve(final["id"]).http_response.json()
    assert stored == final

    # Next turn: the hosted call and the encrypted reasoning go back upstream.
    nclient.responses.create(
        model="gpt-5-mini", input="And tomorrow?", previous_response_id=final["id"]
    )
    kinds = [item["type"] for item in native.fake.last.body["input"]]
    assert kinds == ["message", "reasoning", "web_search_call", "message", "message"]


def test_hosted_tools_only_where_every_model_takes_them(native: NativeStack) -> None:
    body = {"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}
    ok = httpx.post(f"{native.gateway.url}/v1/responses", json={**body, "model": "vllm/qwen3"})
    assert ok.status_code == 200, ok.text
    assert native.fake.last.body["tool_choice"] == {"type": "web_search"}
    # `mixed` falls back to a Chat Completions upstream, which could not honour them.
    refused = httpx.post(f"{native.gateway.url}/v1/responses", json={**body, "model": "mixed"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tools[0].type"


def test_hosted_tools_dropped_on_a_local_responses_server(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    """A local server that cannot search (vLLM without a tool server) behind Codex, which sends
    web_search on every call and replays its calls: `hosted_tools: drop` leaves both out."""
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed"}
    tools = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}]
    body = {
        "model": "local-codex",
        "input": [search, {"role": "user", "content": "go"}],
        "tools": tools,
        "store": False,
    }
    for stream in (False, True):
        reply = httpx.post(
            f"{native.gateway.url}/v1/responses", json={**body, "stream": stream}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-gateway-dropped-tools"] == "web_search"
        sent = native.fake.last.body
        assert [tool["type"] for tool in sent["tools"]] == ["function"]
        assert [item["type"] for item in sent["input"]] == ["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        nclient.responses.create(
            model="local-codex",
            input="x",
            tools=tools,  # type: ignore[arg-type]
            tool_choice={"type": "web_search"},  # type: ignore[typeddict-item]
        )
    assert caught.value.body["param"] == "tool_choice.type"  # type: ignore[index]
    # Without the setting, a Responses server gets them as sent.
    nclient.responses.create(model="vllm/x", input=[search], tools=tools)  # type: ignore[arg-type,list-item]
    assert [tool["type"] for tool in native.fake.last.body["tools"]] == ["web_search", "function"]


def test_upstream_failed_response(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(status="failed"))
    with pytest.raises(openai.InternalServerError) as caught:
        nclient.responses.create(model="gpt-5-mini", input="hi")
    assert "upstream melted" in str(caught.value)
    native.fake.enqueue(Answer(status="failed"))
    result = stream_raw(native.gateway.url, {"model": "gpt-5-mini", "input": "hi"})
    strict_stream(result)
    assert result.types[-2:] == ["error", "response.failed"]


def test_incomplete_is_reported(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(status="incomplete"))
    response = nclient.responses.create(model="gpt-5-mini", input="hi")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_stream_cut_short_keeps_partial_output(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(text="one two three four five six", drop_after=6))
    result = stream_raw(native.gateway.url, {"model": "gpt-5-mini", "input": "count"})
    strict_stream(result)
    assert result.types[-2:] == ["error", "response.failed"]
    assert len(native.fake.seen) == 1
    stored = nclient.responses.retrieve(result.terminal["response"]["id"])
    assert stored.status == "failed"
    assert stored.output[0].status == "incomplete" and stored.output_text == "one two "


def test_prefix_rule_and_models(native: NativeStack, nclient: openai.OpenAI) -> None:
    response = nclient.responses.create(model="vllm/qwen3-8b", input="hi")
    assert native.fake.last.body["model"] == "qwen3-8b"
    assert "authorization" not in {k.lower() for k in native.fake.last.headers}
    assert response.model == "vllm/qwen3-8b" and response.output_text == "native: hi"
    ids = [model.id for model in nclient.models.list()]
    assert {"gpt-4o", "latest", "echo", "azure-v1"} <= set(ids) and "vllm/*" not in ids
    assert nclient.models.retrieve("vllm/anything").id == "vllm/anything"
    with pytest.raises(openai.NotFoundError):
        nclient.models.retrieve("nope/anything")


def test_echo_model(native: NativeStack, nclient: openai.OpenAI) -> None:
    response = nclient.responses.create(model="echo", input="ping", instructions="Be kind.")
    expected = (
        "echo: 1 input items (1 user message). Instructions: 8 characters. "
        'Last user message: "ping"'
    )
    assert response.output_text == expected
    assert response.usage is not None and response.usage.output_tokens == len(expected.split())
    result = stream_raw(
        native.gateway.url, {"model": "echo", "input": "ping", "instructions": "Be kind."}
    )
    strict_stream(result)
    deltas = result.of("response.output_text.delta")
    assert len(deltas) == len(expected.split())
    assert "".join(d["delta"] for d in deltas) == expected
    assert native.fake.seen == []


class Step(BaseModel):
    action: Literal["look", "think"]
    note: str | None


class Plan(BaseModel):
    title: str
    steps: list[Step]
    first: Step
    done: bool
    score: float


def test_echo_model_answers_structured_outputs(native: NativeStack, nclient: openai.OpenAI) -> None:
    parsed = nclient.responses.parse(model="echo", input="ping", text_format=Plan)
    plan = parsed.output_parsed
    assert isinstance(plan, Plan) and plan.title.startswith("echo: 1 input items")
    assert plan.first.action == "look" and plan.steps == []
    with nclient.responses.stream(model="echo", input="ping", text_format=Plan) as stream:
        streamed = stream.get_final_response()
    assert streamed.output_parsed == plan
    as_object = nclient.responses.create(
        model="echo", input="ping", text={"format": {"type": "json_object"}}
    )
    assert json.loads(as_object.output_text)["echo"].endswith('"ping"')
    pair = {"type": "array", "minItems": 2, "items": {"type": "string"}}
    as_pair = nclient.responses.create(
        model="echo",
        input="ping",
        text={"format": {"type": "json_schema", "name": "pair", "schema": pair}},
    )
    assert json.loads(as_pair.output_text) == [plan.title, plan.title]


def _nested_arrays(levels: int, min_items: object) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "minItems": min_items, "items": schema}
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        _nested_arrays(3, 100),  # a million strings, unbounded
        _nested_arrays(1, 1e9),
        _nested_arrays(1, 10**18),
        _nested_arrays(2, "many"),
        _nested_arrays(2, 2.5),
        _nested_arrays(2, -1),
        {  # a recursive $ref doubling at every level
            "$defs": {"tree": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/tree"}}},
            "$ref": "#/$defs/tree",
        },
        {"type": "object", "properties": ["not", "a", "map"]},
        {"type": "object", "properties": {"a": {"enum": {"not": "a list"}}}},
        {"anyOf": {"not": "a list"}},
        {"$ref": "#/nowhere/at/all"},
        {  # a 300 kB constant, 64 times
            "$defs": {"big": {"const": "x" * 300_000}},
            **_nested_arrays(2, 8),
            "items": {"type": "array", "minItems": 8, "items": {"$ref": "#/$defs/big"}},
        },
    ],
    ids=[
        "3x100",
        "1e9",
        "10e18",
        "string",
        "fraction",
        "negative",
        "recursive-ref",
        "properties-list",
        "enum-map",
        "anyof-map",
        "dangling-ref",
        "repeated-const",
    ],
)
def test_echo_model_bounds_the_document_for_any_schema(
    native: NativeStack, nclient: openai.OpenAI, schema: dict[str, object]
) -> None:
    """A client's schema decides the document's shape, never its size nor whether we fail: the
    reply is quick, small and valid JSON whatever `minItems` or nesting says."""
    response = nclient.with_options(timeout=5).responses.create(
        model="echo",
        input="ping",
        text={"format": {"type": "json_schema", "name": "doc", "schema": schema}},
    )
    assert response.status == "completed"
    assert len(response.output_text) < 200_000
    json.loads(response.output_text)


def test_replayed_hosted_tool_items_reach_the_upstream(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    """Codex-style: `store: false` and the whole history, hosted-tool items included."""
    search = {
        "type": "web_search_call",
        "id": "ws_123",
        "status": "completed",
        "action": {"type": "search", "query": "weather oslo"},
    }
    history = [
        {"type": "message", "role": "user", "content": "weather in Oslo?"},
        search,
        {"type": "message", "role": "user", "content": "and tomorrow?"},
    ]
    response = nclient.responses.create(
        model="gpt-5-mini", input=history, store=False, tools=[{"type": "web_search"}]
    )
    assert response.status == "completed"
    assert native.fake.last.body["input"][1] == search  # verbatim, id and all


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_what_openai_applied_is_what_the_response_says(
    native: NativeStack, nclient: openai.OpenAI, stream: bool
) -> None:
    """The service tier, caching options and reasoning settings reach OpenAI, and the Response
    reports them as OpenAI applied them (its tier, not a constant), stored as such."""
    sent = {
        "model": "gpt-5-mini",
        "input": "hi",
        "service_tier": "flex",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "explicit"},
        "reasoning": {"effort": "low", "mode": "pro", "context": "all_turns"},
    }
    if stream:
        with nclient.responses.create(**sent, stream=True) as events:  # type: ignore[call-overload]
            response = [e for e in events if e.type == "response.completed"][0].response
    else:
        response = nclient.responses.create(**sent)  # type: ignore[call-overload]
    body = native.fake.seen[-1].body
    assert body["service_tier"] == "flex" and body["prompt_cache_retention"] == "24h"
    assert body["prompt_cache_options"] == {"mode": "explicit"}
    assert body["reasoning"] == {"effort": "low", "mode": "pro", "context": "all_turns"}
    for seen in (response, nclient.responses.retrieve(response.id)):
        assert seen.service_tier == "flex" and seen.prompt_cache_retention == "24h"
        assert seen.prompt_cache_options is not None
        assert (seen.prompt_cache_options.ttl, seen.prompt_cache_options.mode) == (
            "30m",
            "explicit",
        )
        assert seen.reasoning is not None
        assert (seen.reasoning.effort, seen.reasoning.mode, seen.reasoning.context) == (
            "low",
            "pro",
            "all_turns",
        )
    # "auto" is answered with the tier that served it.
    assert (
        nclient.responses.create(model="gpt-5-mini", input="hi", service_tier="auto").service_tier
        == "default"
    )


def test_penalties_that_openai_cannot_take_are_refused(native: NativeStack) -> None:
    """OpenAI's Responses API has no penalties: a non-zero one for an OpenAI model is a 400
    naming it (it used to be echoed and not sent); 0 is accepted, as it changes nothing."""
    url = f"{native.gateway.url}/v1/responses"
    refused = httpx.post(url, json={"model": "gpt-4o", "input": "hi", "presence_penalty": 0.5})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "presence_penalty"
    kept = httpx.post(url, json={"model": "gpt-4o", "input": "hi", "frequency_penalty": 0})
    assert kept.status_code == 200 and kept.json()["frequency_penalty"] == 0.0
    # A local Responses server takes them, and gets them.
    local = httpx.post(url, json={"model": "vllm/qwen", "input": "hi", "presence_penalty": 0.5})
    assert local.status_code == 200 and native.fake.seen[-1].body["presence_penalty"] == 0.5


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_a_failed_openai_response_keeps_its_code(
    native: NativeStack, nclient: openai.OpenAI, stream: bool
) -> None:
    """OpenAI's own code for a failed response (`invalid_prompt`: do not ask again) is what our
    failed response says, streamed or not; one that is not a Response code gives way to ours."""
    native.fake.enqueue(Answer(status="failed", error_code="invalid_prompt"))
    body = {"model": "gpt-5-mini", "input": "hi"}
    if stream:
        result = stream_raw(native.gateway.url, {**body, "stream": True})
        failed_id = result.terminal["response"]["id"]
        assert result.terminal["response"]["error"]["code"] == "invalid_prompt"
    else:
        raw = httpx.post(f"{native.gateway.url}/v1/responses", json=body)
        assert raw.status_code == 502
        failed_id = raw.json()["error"]["message"].rsplit(": ", 1)[1].rstrip(".")
    stored = nclient.responses.retrieve(failed_id)
    assert stored.status == "failed" and stored.error is not None
    assert stored.error.code == "invalid_prompt"
    native.fake.enqueue(Answer(status="failed", error_code="no_such_code"))
    raw = httpx.post(f"{native.gateway.url}/v1/responses", json=body)
    other = nclient.responses.retrieve(
        raw.json()["error"]["message"].rsplit(": ", 1)[1].rstrip(".")
    )
    assert other.error is not None and other.error.code == "server_error"
