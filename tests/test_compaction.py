"""`POST /v1/responses/compact` and the compaction items it returns, on a Chat Completions
backend and on backends that speak Responses: what the client gets back, what the upstream is
asked, and what the next turn sends once its history is compacted."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import CompactedResponse, ResponseCompactionItem

from tests.conftest import AZURE_SECRET, OPENAI_SECRET, NativeStack, Stack
from tests.fake_responses import Answer
from tests.fake_upstream import Fail, Reply
from tests.tenancy import Tenants
from tests.wire import raw_create, stream_raw, strict_items, strict_response, strict_stream

SUMMARY = "Ada is building a landing page for a dog cafe; the hero section is done."
FOREIGN = {"type": "compaction", "id": "cmp_openai", "encrypted_content": "gAAAAABpM0Yj-opaque="}


def chain(client: openai.OpenAI, model: str, *texts: str) -> str:
    """Create one turn per text, each continuing the last; the last response's id."""
    previous: str | None = None
    for text in texts:
        kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
        previous = client.responses.create(model=model, input=text, **kwargs).id
    assert previous is not None
    return previous


def compact(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """`client.responses.compact`, returning the JSON as sent: its `output` is what a client
    sends as the next input (the SDK types user messages there as output messages, and so
    would warn re-serializing them)."""
    raw = client.responses.with_raw_response.compact(**kwargs)
    assert isinstance(raw.parse(), CompactedResponse)
    data: dict[str, Any] = json.loads(raw.text)
    return data


def as_input(compacted: dict[str, Any]) -> list[dict[str, Any]]:
    return list(compacted["output"])


def test_compact_a_chain_on_a_chat_backend(client: openai.OpenAI, gw: Stack) -> None:
    last = chain(client, "local-llama", "My name is Ada.", "I am building a landing page.")
    gw.upstream.enqueue(
        Reply(content=SUMMARY, usage={"prompt_tokens": 57, "completion_tokens": 14})
    )
    raw = client.responses.with_raw_response.compact(
        model="local-llama", previous_response_id=last, instructions="Be brief."
    )
    data = json.loads(raw.text)
    compacted = raw.parse()
    assert isinstance(compacted, CompactedResponse)
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    assert set(data) == {"id", "object", "created_at", "output", "usage"}
    # The user messages of the context, in order, then one compaction item.
    items = strict_items(data["output"])
    users = data["output"][:-1]
    assert [u["role"] for u in users] == ["user", "user"]
    assert [u["content"][0]["text"] for u in users] == [
        "My name is Ada.",
        "I am building a landing page.",
    ]
    assert all(u["id"].startswith("msg_") and u["status"] == "completed" for u in users)
    item = ResponseCompactionItem.model_validate(data["output"][-1])
    assert isinstance(items[-1], ResponseCompactionItem)
    assert item.id.startswith("cmp_") and item.encrypted_content
    assert item.encrypted_content.startswith("rgc1.") and SUMMARY not in item.encrypted_content
    assert compacted.usage.input_tokens == 57 and compacted.usage.output_tokens == 14
    assert compacted.usage.total_tokens == 71
    # The upstream got the whole conversation, then the request for a summary, and no tools.
    sent = gw.upstream.last.body
    assert sent["model"] == "llama3.2"
    messages = sent["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == "My name is Ada."
    assert messages[4]["content"] == "echo: I am building a landing page."
    assert "summary" in messages[-1]["content"]
    assert "tools" not in sent and "response_format" not in sent
    # Nothing was stored: the compaction object is not a response.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(compacted.id)


def test_the_next_turn_sends_the_summary_instead_of_the_history(
    client: openai.OpenAI, gw: Stack
) -> None:
    last = chain(client, "local-llama", "one", "two")
    gw.upstream.enqueue(Reply(content=SUMMARY))
    compacted = compact(client, model="local-llama", previous_response_id=last)
    nxt = client.responses.create(
        model="local-llama",
        input=[*as_input(compacted), {"role": "user", "content": "three"}],  # type: ignore[list-item]
    )
    assert nxt.status == "completed" and nxt.output_text == "echo: three"
    messages = gw.upstream.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "user", "user", "user"]
    assert [m["content"] for m in messages[:2]] == ["one", "two"]
    assert messages[2]["content"].endswith(SUMMARY) and messages[2]["content"] != SUMMARY
    assert messages[3]["content"] == "three"
    # The compaction item is kept as this response's input, as sent.
    listed = client.responses.input_items.list(nxt.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "message", "compaction", "message"]
    # And it stays in the chain: the turn after sees the summary again, from storage.
    client.responses.create(model="local-llama", input="four", previous_response_id=nxt.id)
    chained = gw.upstream.last.body["messages"]
    assert chained[2]["content"].endswith(SUMMARY)
    assert [m["content"] for m in chained[-3:]] == ["three", "echo: three", "four"]


def test_compacting_again_folds_the_earlier_summary_in(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="first summary"))
    first = compact(client, model="local-llama", input="hello")
    gw.upstream.enqueue(Reply(content="second summary"))
    again = compact(
        client,
        model="local-llama",
        input=[*as_input(first), {"role": "user", "content": "more"}],  # type: ignore[list-item]
    )
    # The model saw the earlier summary; the output has one compaction item, the new one.
    assert any(m["content"].endswith("first summary") for m in gw.upstream.last.body["messages"])
    kinds = [item["type"] for item in again["output"]]
    assert kinds == ["message", "message", "compaction"]
    nxt = client.responses.create(
        model="local-llama",
        input=[*as_input(again), {"role": "user", "content": "go on"}],  # type: ignore[list-item]
    )
    assert nxt.status == "completed"
    sent = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert sent[0] == "hello" and sent[1] == "more" and sent[2].endswith("second summary")


def test_compact_streamed_create_and_async_client(gw: Stack) -> None:
    import asyncio

    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{gw.gateway.url}/v1", api_key="sk-client", max_retries=0
        ) as client:
            gw.upstream.enqueue(Reply(content=SUMMARY))
            raw = await client.responses.with_raw_response.compact(
                model="local-llama", input="Ada here."
            )
            compacted = json.loads(raw.text)
            stream = await client.responses.create(
                model="local-llama",
                input=[*as_input(compacted), {"role": "user", "content": "next"}],  # type: ignore[list-item]
                stream=True,
            )
            types = [event.type async for event in stream]
            assert types[-1] == "response.completed"

    asyncio.run(run())
    assert gw.upstream.last.body["messages"][1]["content"].endswith(SUMMARY)


def test_compact_refusals(client: openai.OpenAI, gw: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.compact(model="local-llama", previous_response_id="resp_nope")
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.compact(model="no-such-model", input="hi")
    r = httpx.post(f"{gw.gateway.url}/v1/responses/compact", json={"input": "hi"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    # A compaction item only OpenAI can read cannot reach a Chat Completions upstream.
    with pytest.raises(openai.BadRequestError) as foreign:
        client.responses.create(
            model="local-llama", input=[FOREIGN, {"role": "user", "content": "x"}]
        )  # type: ignore[list-item]
    assert foreign.value.body["param"] == "input[0].type"  # type: ignore[index]
    # ... unless the model drops hosted items (`hosted_tools: drop`): it is left out.
    dropped = client.responses.create(
        model="local-agent",
        input=[FOREIGN, {"role": "user", "content": "x"}],  # type: ignore[list-item]
    )
    assert dropped.status == "completed"
    assert gw.upstream.last.body["messages"] == [{"role": "user", "content": "x"}]


def test_upstream_fault_fails_the_compaction_cleanly(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Fail(503, {"error": {"message": "overloaded"}}))
    with pytest.raises(openai.APIStatusError) as failed:
        client.responses.compact(model="local-llama", input="hello")
    assert failed.value.status_code >= 500
    body = failed.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    # The gateway still answers the next one.
    gw.upstream.enqueue(Reply(content=SUMMARY))
    assert (
        client.responses.compact(model="local-llama", input="hello").output[-1].type == "compaction"
    )


def test_compaction_on_a_native_backend(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(text=SUMMARY))
    compacted = compact(nclient, model="vllm/qwen3", input="Ada is here.")
    sent = native.fake.last
    assert sent.path == "/v1/responses"
    assert sent.body["input"][-1]["role"] == "user" and "tools" not in sent.body
    nclient.responses.create(
        model="vllm/qwen3",
        input=[*as_input(compacted), {"role": "user", "content": "next"}],  # type: ignore[list-item]
    )
    items = native.fake.last.body["input"]
    # Ours became a message the upstream can read; nothing of type compaction went out.
    assert [i.get("type", "message") for i in items] == ["message", "message", "message"]
    assert items[1]["content"][0]["text"].endswith(SUMMARY)
    # OpenAI's own compaction items go to a Responses upstream as they are.
    nclient.responses.create(
        model="gpt-5-mini",
        input=[FOREIGN, {"role": "user", "content": "next"}],  # type: ignore[list-item]
    )
    assert native.fake.last.body["input"][0] == FOREIGN


def test_openai_models_compact_with_openai_own_endpoint(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    last = chain(nclient, "gpt-5-mini", "Ada is here.", "She likes dogs.")
    before = len(native.fake.seen)
    options = {
        "prompt_cache_key": "ada-1",
        "prompt_cache_retention": "24h",
        "service_tier": "flex",
        "safety_identifier": "user-7",
    }
    compacted = compact(
        nclient,
        model="gpt-5-mini",
        previous_response_id=last,
        instructions="Be brief.",
        extra_body={"prompt_cache_options": {"mode": "explicit"}},
        **options,
    )
    # One call, to OpenAI's own endpoint, with the whole stored context as input (OpenAI
    # knows nothing of our response ids) and only the fields that endpoint takes (the fake
    # answers 400 to any other), each as sent.
    [sent] = native.fake.seen[before:]
    assert sent.path == "/v1/responses/compact"
    assert sent.headers["Authorization"] == f"Bearer {OPENAI_SECRET}"
    assert sent.body == {
        "model": "gpt-5-mini",
        "input": sent.body["input"],
        "instructions": "Be brief.",
        "prompt_cache_options": {"mode": "explicit"},
        **options,
    }
    assert compacted["service_tier"] == "flex"  # the upstream's answer, as it sent it
    sent_input = sent.body["input"]
    assert [(i.get("role"), i["content"][0]["text"]) for i in sent_input] == [
        ("user", "Ada is here."),
        ("assistant", "native: Ada is here."),
        ("user", "She likes dogs."),
        ("assistant", "native: She likes dogs."),
    ]
    # OpenAI's answer as it sent it (its items, its usage), under the gateway's id.
    assert compacted["id"].startswith("resp_") and compacted["object"] == "response.compaction"
    strict_items(compacted["output"])
    item = compacted["output"][-1]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_fake")
    assert item["encrypted_content"] == "gAAAA-compacted:Ada is here.|She likes dogs."
    assert [i["content"][0]["text"] for i in compacted["output"][:-1]] == [
        "Ada is here.",
        "She likes dogs.",
    ]
    usage = compacted["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (120, 30, 150)
    assert usage["output_tokens_details"] == {"reasoning_tokens": 10}
    # The next turn sends OpenAI's compaction item back to OpenAI as it is.
    nclient.responses.create(
        model="gpt-5-mini",
        input=[*as_input(compacted), {"role": "user", "content": "next"}],  # type: ignore[list-item]
    )
    assert native.fake.last.body["input"][-2] == item


def test_azure_models_compact_with_azure_own_endpoint(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    compacted = compact(nclient, model="azure-v1", input="Ada is here.")
    sent = native.fake.last
    assert sent.path == "/openai/v1/responses/compact"
    assert sent.headers["api-key"] == AZURE_SECRET and sent.body["model"] == "prod-gpt"
    assert compacted["output"][-1]["encrypted_content"] == "gAAAA-compacted:Ada is here."
    # A dated API version gets the gateway's compaction, through its own endpoint.
    native.fake.enqueue(Answer(text=SUMMARY), Answer(text=SUMMARY))
    compacted = compact(nclient, model="azure-preview", input="Ada is here.")
    assert compacted["output"][-1]["encrypted_content"].startswith("rgc1.")
    assert native.fake.last.path == "/openai/responses"
    assert native.fake.last.query == {"api-version": "2025-04-01-preview"}
    data = raw_create(
        nclient,
        model="azure-preview",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
    )
    assert data["output"][0]["encrypted_content"].startswith("rgc1.")
    assert native.fake.last.body["input"][-1]["role"] == "user"


def test_an_upstream_without_a_compact_endpoint_compacts_by_trigger_or_gets_the_gateway_summary(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    missing = Fail(404, {"error": {"message": "Invalid URL (POST /v1/responses/compact)"}})
    # Without the endpoint, OpenAI still compacts a create that ends in the trigger: its item,
    # after the context's user messages, as the endpoint would have answered.
    native.fake.enqueue(missing, Answer())
    compacted = compact(
        nclient,
        model="gpt-5-mini",
        input=[{"role": "user", "content": "Ada is here."}, {"role": "user", "content": "Dogs."}],
    )
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses/compact", "/v1/responses"]
    sent = native.fake.last.body
    assert sent["input"][-1] == TRIGGER and sent["store"] is False and "stream" not in sent
    strict_items(compacted["output"])
    assert [i["type"] for i in compacted["output"]] == ["message", "message", "compaction"]
    assert [i["content"][0]["text"] for i in compacted["output"][:2]] == ["Ada is here.", "Dogs."]
    assert compacted["output"][-1]["encrypted_content"] == "gAAAA-compacted:Ada is here.|Dogs."
    assert compacted["usage"]["input_tokens"] == 20  # the create's
    # Where the trigger is refused too (or answered without its item), the gateway summarizes.
    native.fake.reset()
    refused = Fail(400, {"error": {"message": "Invalid value: 'compaction_trigger'."}})
    native.fake.enqueue(missing, refused, Answer(text=SUMMARY))
    compacted = compact(nclient, model="gpt-5-mini", input="Ada is here.")
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses/compact"] + [
        "/v1/responses"
    ] * 2
    assert compacted["output"][-1]["encrypted_content"].startswith("rgc1.")
    # A model the upstream does not know is that, not a missing endpoint: relayed at once.
    native.fake.reset()
    native.fake.enqueue(
        Fail(404, {"error": {"message": "no such model", "code": "model_not_found"}})
    )
    with pytest.raises(openai.NotFoundError) as missing:
        nclient.responses.compact(model="gpt-5-mini", input="Ada is here.")
    assert "no such model" in missing.value.message
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses/compact"]


def test_openai_compaction_faults_and_fallback_routes(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    # A refusal is relayed with its status; an outage is a 502 after the model's retries.
    native.fake.enqueue(Fail(400, {"error": {"message": "input too odd", "type": "x"}}))
    with pytest.raises(openai.BadRequestError) as refused:
        nclient.responses.compact(model="gpt-5-mini", input="Ada is here.")
    assert "input too odd" in refused.value.message
    native.fake.enqueue(Fail(503), Fail(503), Answer())  # gpt-4o retries twice
    compacted = compact(nclient, model="gpt-4o", input="Ada is here.")
    assert compacted["output"][-1]["type"] == "compaction"
    assert [seen.path for seen in native.fake.seen[-3:]] == ["/v1/responses/compact"] * 3
    # 501 (a proxy that does not implement it) is not retried: the trigger is tried, then
    # the gateway summarizes.
    native.fake.reset()
    native.fake.enqueue(Fail(501), Fail(400), Answer(text=SUMMARY))
    compacted = compact(nclient, model="gpt-4o", input="Ada is here.")
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses/compact"] + [
        "/v1/responses"
    ] * 2
    assert compacted["output"][-1]["encrypted_content"].startswith("rgc1.")
    native.fake.enqueue(Fail(500))
    with pytest.raises(openai.InternalServerError) as failed:
        nclient.responses.compact(model="gpt-5-mini", input="Ada is here.")
    assert failed.value.status_code == 502
    # A route with fallbacks on other upstreams compacts with the gateway's summary, which any
    # of them can read back.
    native.fake.reset()
    native.fake.enqueue(Answer(text=SUMMARY))
    compacted = compact(nclient, model="flaky", input="Ada is here.")
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses"]
    assert compacted["output"][-1]["encrypted_content"].startswith("rgc1.")
    # So does a model that leaves hosted items out (`hosted_tools: drop`): OpenAI's item would
    # not reach the next turn.
    native.fake.enqueue(Answer(text=SUMMARY))
    compacted = compact(nclient, model="openai-drop", input="Ada is here.")
    assert native.fake.last.path == "/v1/responses"
    assert compacted["output"][-1]["encrypted_content"].startswith("rgc1.")


TRIGGER = {"type": "compaction_trigger"}


def test_compaction_trigger_compacts_a_chain(client: openai.OpenAI, gw: Stack) -> None:
    last = chain(client, "local-llama", "one", "two")
    gw.upstream.enqueue(Reply(content=SUMMARY, usage={"prompt_tokens": 40, "completion_tokens": 9}))
    data = raw_create(client, model="local-llama", input=[TRIGGER], previous_response_id=last)
    response = strict_response(data)
    assert response.status == "completed" and response.usage and response.usage.output_tokens == 9
    assert [item["type"] for item in data["output"]] == ["compaction"]
    item = ResponseCompactionItem.model_validate(data["output"][0])
    assert item.id.startswith("cmp_") and SUMMARY not in item.encrypted_content
    # The upstream was asked for a summary of the chain; the trigger itself never goes out.
    sent = gw.upstream.last.body
    assert [m["content"] for m in sent["messages"][:4]] == ["one", "echo: one", "two", "echo: two"]
    assert "summary" in sent["messages"][-1]["content"] and "tools" not in sent
    # The next turn stands on the user messages and the summary, not on what was compacted.
    nxt = client.responses.create(
        model="local-llama", input="three", previous_response_id=data["id"]
    )
    assert nxt.output_text == "echo: three"
    messages = gw.upstream.last.body["messages"]
    assert [m["role"] for m in messages] == ["user", "user", "user", "user"]
    assert [m["content"] for m in messages[:2]] == ["one", "two"]
    assert messages[2]["content"].endswith(SUMMARY) and messages[3]["content"] == "three"
    listed = client.responses.input_items.list(data["id"], order="asc")
    assert [i.type for i in listed.data] == ["message", "message"]  # no trigger stored


def test_compaction_trigger_streamed_as_codex_sends_it(client: openai.OpenAI, gw: Stack) -> None:
    """Codex CLI's remote compaction: `store: false`, the whole history, the trigger last, a
    stream; it needs exactly one compaction output item."""
    history: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "done"}],
        },
    ]
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]
    gw.upstream.enqueue(Reply(content=SUMMARY))
    stream = stream_raw(
        gw.gateway.url,
        {"model": "local-llama", "input": [*history, TRIGGER], "store": False, "tools": tools},
    )
    strict_stream(stream)
    kinds = [e["type"] for e in stream.events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.compaction.compacting",  # the summary is coming in (one: it came fast)
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    done = stream.events[4]["item"]
    assert done["type"] == "compaction" and done["id"] == stream.events[3]["item"]["id"]
    assert stream.events[2]["item_id"] == done["id"] and stream.events[2]["output_index"] == 0
    final = stream.events[-1]["response"]["output"]
    assert final == [done]
    sent = gw.upstream.last.body
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "exec_command"
    assert "tools" not in sent and "summary" in sent["messages"][-1]["content"]
    # Codex then sends the user messages and the compaction item: the summary goes upstream.
    client.responses.create(
        model="local-llama",
        input=[history[0], done, {"role": "user", "content": "go on"}],  # type: ignore[list-item]
        store=False,
    )
    contents = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert contents[0] == "fix it" and contents[1].endswith(SUMMARY) and contents[2] == "go on"


def test_compaction_trigger_refusals(client: openai.OpenAI, gw: Stack) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": [TRIGGER, {"role": "user", "content": "x"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": "x"}, TRIGGER], "background": True}, "background"),
        ({"input": [TRIGGER]}, "input"),
    ]
    for extra, param in cases:
        r = httpx.post(
            f"{gw.gateway.url}/v1/responses", json={"model": "local-llama", **extra}, timeout=10
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="local-llama",
            input=[{"role": "user", "content": "x"}, TRIGGER],  # type: ignore[list-item]
            conversation=conversation.id,
        )
    assert refused.value.body["param"] == "conversation"  # type: ignore[index]
    # A conversation cannot hold a trigger: it is no content.
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(conversation.id, items=[TRIGGER])  # type: ignore[list-item]
    # Counting the input of a compaction counts what it compacts.
    counted = client.responses.input_tokens.count(
        model="local-llama",
        input=[{"role": "user", "content": "count me"}, TRIGGER],  # type: ignore[list-item]
    )
    assert counted.input_tokens > 0


def test_compaction_trigger_on_a_native_backend(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    native.fake.enqueue(Answer(text=SUMMARY))
    data = raw_create(
        nclient,
        model="vllm/qwen3",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        tool_choice="required",
    )
    assert [item["type"] for item in data["output"]] == ["compaction"]
    body = native.fake.last.body
    assert all(item.get("type") != "compaction_trigger" for item in body["input"])
    assert body["input"][-1]["role"] == "user"
    assert "tools" not in body and "tool_choice" not in body
    assert body["truncation"] == "auto"  # a Responses upstream truncates a full context itself
    # Streamed from a Responses upstream: its text deltas are read, the item comes out.
    native.fake.enqueue(Answer(text=SUMMARY))
    with nclient.responses.stream(
        model="vllm/qwen3",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["compaction"]
    assert native.fake.last.body["stream"] is True


def test_compaction_trigger_on_openai_is_openai_own(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    last = chain(nclient, "gpt-5-mini", "Ada is here.")
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    data = raw_create(
        nclient,
        model="gpt-5-mini",
        previous_response_id=last,
        input=[{"role": "user", "content": "She likes dogs."}, TRIGGER],  # type: ignore[list-item]
        tools=tools,  # type: ignore[list-item]
        truncation="disabled",
        context_management=[{"type": "compaction", "compact_threshold": 5000}],  # type: ignore[list-item]
    )
    # The trigger went on to OpenAI after the whole context, with the request as sent (its
    # tools keep the prompt's cached prefix), and OpenAI's item came back.
    body = native.fake.last.body
    assert body["input"][-1] == TRIGGER and len(body["input"]) == 4
    assert body["tools"][0]["name"] == "f" and body["truncation"] == "disabled"
    assert body["context_management"] == [{"type": "compaction", "compact_threshold": 5000}]
    # Counted as it is sent: with its tools.
    counted = [
        nclient.responses.input_tokens.count(
            model="gpt-5-mini",
            input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
            **extra,
        ).input_tokens
        for extra in ({}, {"tools": tools})
    ]
    assert counted[1] > counted[0]
    assert "previous_response_id" not in body
    [item] = data["output"]
    assert item["type"] == "compaction"
    assert item["encrypted_content"] == "gAAAA-compacted:Ada is here.|She likes dogs."
    # The next turn stands on the user messages and OpenAI's item, not on the history.
    nclient.responses.create(model="gpt-5-mini", previous_response_id=data["id"], input="next")
    sent = native.fake.last.body["input"]
    assert [i.get("role") or i["type"] for i in sent] == ["user", "user", "compaction", "user"]
    assert sent[2] == item
    # Streamed, as Codex sends it: OpenAI's item events are relayed.
    with nclient.responses.stream(
        model="azure-v1",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_response()
    assert [i.type for i in final.output] == ["compaction"]
    assert native.fake.last.path == "/openai/v1/responses"
    assert native.fake.last.body["input"][-1] == TRIGGER
    # A route with fallbacks elsewhere gets the gateway's compaction.
    native.fake.enqueue(Answer(text=SUMMARY))
    data = raw_create(
        nclient,
        model="flaky",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
    )
    assert data["output"][0]["encrypted_content"].startswith("rgc1.")
    assert native.fake.last.body["input"][-1]["role"] == "user"
    native.fake.enqueue(Answer(text=SUMMARY))
    data = raw_create(
        nclient,
        model="openai-drop",
        input=[{"role": "user", "content": "Ada."}, TRIGGER],  # type: ignore[list-item]
    )
    assert data["output"][0]["encrypted_content"].startswith("rgc1.")
    # Nothing to compact is a 400 there as everywhere, before any upstream call.
    calls = len(native.fake.seen)
    with pytest.raises(openai.BadRequestError) as empty:
        nclient.responses.create(model="gpt-5-mini", input=[TRIGGER])  # type: ignore[list-item]
    assert empty.value.body["param"] == "input"  # type: ignore[index]
    assert len(native.fake.seen) == calls


def test_compaction_trigger_upstream_fault(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Fail(503, {"error": {"message": "overloaded"}}))
    stream = stream_raw(
        gw.gateway.url,
        {"model": "local-llama", "input": [{"role": "user", "content": "x"}, TRIGGER]},
    )
    strict_stream(stream)
    failed = stream.events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["output"] == []
    stored = client.responses.retrieve(failed["response"]["id"])
    assert stored.status == "failed" and stored.error is not None


def test_compact_ignores_what_a_create_body_adds(client: openai.OpenAI, gw: Stack) -> None:
    """Clients build the compact body from their create body (Codex does): tools, tool choice,
    output format, logprobs. None of it reaches the summary call, and none is refused."""
    gw.upstream.enqueue(Reply(content=SUMMARY))
    r = httpx.post(
        f"{gw.gateway.url}/v1/responses/compact",
        json={
            "model": "local-agent",
            "input": [{"role": "user", "content": "hi"}],
            "tools": [
                {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
                {"type": "web_search"},
            ],
            "tool_choice": {"type": "function", "name": "exec_command"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "include": ["message.output_text.logprobs"],
            "top_logprobs": 3,
            "store": False,
            "stream": True,
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "response.compaction"  # not a stream: compaction never is
    sent = gw.upstream.last.body
    for key in ("tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs"):
        assert key not in sent, key


def test_compact_a_conversation(client: openai.OpenAI, gw: Stack) -> None:
    conversation = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "first"},
            {"type": "message", "role": "assistant", "content": "answer"},
        ]
    )
    gw.upstream.enqueue(Reply(content=SUMMARY))
    data = compact(client, model="local-llama", extra_body={"conversation": conversation.id})
    assert [i["type"] for i in data["output"]] == ["message", "compaction"]
    assert data["output"][0]["content"][0]["text"] == "first"
    assert [m["content"] for m in gw.upstream.last.body["messages"][:2]] == ["first", "answer"]
    # Nothing was added to the conversation.
    assert len(client.conversations.items.list(conversation.id).data) == 2


def test_an_unusable_summary_is_an_upstream_fault(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="   "))
    with pytest.raises(openai.APIStatusError) as empty:
        client.responses.compact(model="local-llama", input="hello")
    assert empty.value.status_code == 502
    gw.upstream.enqueue(Reply(content="cut sho", finish_reason="length"))
    with pytest.raises(openai.APIStatusError) as cut:
        client.responses.compact(model="local-llama", input="hello")
    assert cut.value.status_code == 502 and "max_output_tokens" in cut.value.message
    # Through the trigger, streamed: the response fails with the reason, no compaction item.
    gw.upstream.enqueue(Reply(content=""))
    stream = stream_raw(
        gw.gateway.url,
        {"model": "local-llama", "input": [{"role": "user", "content": "x"}, TRIGGER]},
    )
    strict_stream(stream)
    assert stream.events[-1]["type"] == "response.failed"
    assert stream.events[-1]["response"]["output"] == []


def test_a_full_context_is_truncated_not_refused(client: openai.OpenAI, gw: Stack) -> None:
    """`tiny-window` holds 120 tokens: a create this long is a 400; its compaction drops the
    oldest items to fit instead."""
    long = [{"role": "user", "content": f"Turn {n}: " + "many words here " * 12} for n in range(4)]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="tiny-window", input=long)  # type: ignore[arg-type]
    gw.upstream.enqueue(Reply(content=SUMMARY))
    data = compact(client, model="tiny-window", input=long)
    assert data["output"][-1]["type"] == "compaction"
    sent = gw.upstream.last.body
    assert len(sent["messages"]) < len(long) + 1  # oldest turns out
    assert sent["messages"][-1]["content"].startswith("Compact the conversation above")
    # Room for the summary is kept: a quarter of the window when the request names none.
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 30


def test_compaction_is_accounted_to_the_key(tenants: Tenants) -> None:
    """A compaction's tokens count for its key like a create's, also when the summary came
    back unusable (the model answered; the 502 is ours)."""
    key = tenants.new_key("compactor")
    tenants.upstream.enqueue(
        Reply(content=SUMMARY, usage={"prompt_tokens": 40, "completion_tokens": 7}),
        Reply(content="", usage={"prompt_tokens": 41, "completion_tokens": 3}),
    )
    with tenants.client(key) as client:
        client.responses.compact(model="local-llama", input="hello")
        with pytest.raises(openai.APIStatusError) as unusable:
            client.responses.compact(model="local-llama", input="hello")
    assert unusable.value.status_code == 502
    time.sleep(0.5)  # the usage flush
    today = time.strftime("%Y-%m-%d", time.gmtime())
    report = tenants.admin("GET", "/admin/usage", params={"project": "compactor", "start": today})
    [row] = report.json()["data"]
    assert row["model"] == "local-llama" and row["requests"] == 2
    assert row["input_tokens"] == 81 and row["output_tokens"] == 10
    assert row["not_completed"] == 1


# --- server-side compaction (`context_management`) --------------------------------------------

LONG = "The cafe menu lists " + "espresso and cake, " * 700  # well over 1,000 tokens
COMPACT_AT = [{"type": "compaction", "compact_threshold": 1000}]
AGENT_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": LONG},
    {"type": "function_call", "call_id": "call_m", "name": "read_menu", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_m", "output": "menu: " + "item " * 300},
]
MENU_TOOL = [{"type": "function", "name": "read_menu", "parameters": {"type": "object"}}]


def test_server_side_compaction_streams_the_item_then_the_answer(
    client: openai.OpenAI, gw: Stack
) -> None:
    gw.upstream.enqueue(
        Reply(content=SUMMARY, usage={"prompt_tokens": 2100, "completion_tokens": 30}),
        Reply(
            content="Espresso is on the menu.", usage={"prompt_tokens": 90, "completion_tokens": 6}
        ),
    )
    stream = stream_raw(
        gw.gateway.url,
        {
            "model": "local-llama",
            "input": AGENT_HISTORY,
            "tools": MENU_TOOL,
            "context_management": COMPACT_AT,
        },
    )
    strict_stream(stream)
    kinds = [e["type"] for e in stream.events]
    assert kinds[:6] == [
        "response.created",
        "response.in_progress",
        "response.compaction.compacting",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert stream.events[4]["item"]["type"] == "compaction"
    assert stream.events[5]["item"]["type"] == "message" and stream.events[5]["output_index"] == 1
    final = stream.events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["compaction", "message"]
    assert final["output"][1]["content"][0]["text"] == "Espresso is on the menu."
    assert final["usage"]["input_tokens"] == 2190 and final["usage"]["output_tokens"] == 36
    summary_call, answer_call = (recorded.body for recorded in gw.upstream.requests)
    assert "tools" not in summary_call
    assert summary_call["messages"][-1]["content"].startswith("Compact the conversation above")
    assert summary_call["messages"][-2]["role"] == "tool"  # the summary saw everything
    # The answer: the summary in place of everything it stands for; tools on.
    assert [m["role"] for m in answer_call["messages"]] == ["user"]
    assert answer_call["messages"][0]["content"].endswith(SUMMARY)
    assert answer_call["tools"][0]["function"]["name"] == "read_menu"
    compaction_item = final["output"][0]
    assert compaction_item["encrypted_content"].startswith("rgc2.")
    # The next turn of the chain sends the compacted context, from storage.
    client.responses.create(
        model="local-llama", input="and cake?", previous_response_id=final["id"]
    )
    sent = gw.upstream.last.body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"].endswith(SUMMARY) and sent[2]["content"] == "and cake?"


def test_server_side_compaction_without_streaming_and_below_the_threshold(
    client: openai.OpenAI, gw: Stack
) -> None:
    gw.upstream.enqueue(Reply(content="short answer"))
    small = raw_create(
        client,
        model="local-llama",
        input="hi",
        context_management=COMPACT_AT,  # type: ignore[arg-type]
    )
    assert [item["type"] for item in small["output"]] == ["message"]
    assert len(gw.upstream.requests) == 1  # below the threshold: an ordinary generation
    gw.upstream.enqueue(Reply(content=SUMMARY), Reply(content="answered"))
    data = raw_create(
        client,
        model="local-llama",
        input=AGENT_HISTORY,  # type: ignore[arg-type]
        tools=MENU_TOOL,  # type: ignore[arg-type]
        context_management=COMPACT_AT,  # type: ignore[arg-type]
        store=False,
    )
    assert [item["type"] for item in data["output"]] == ["compaction", "message"]
    ResponseCompactionItem.model_validate(data["output"][0])
    # A stateless client appends the output and sends it all again: the model gets the
    # compacted context, not the history again.
    gw.upstream.enqueue(Reply(content="again"))
    raw_create(
        client,
        model="local-llama",
        input=[*AGENT_HISTORY, *data["output"], {"role": "user", "content": "more"}],  # type: ignore[list-item]
        context_management=COMPACT_AT,  # type: ignore[arg-type]
        store=False,
    )
    sent = gw.upstream.last.body["messages"]
    assert [m["content"] for m in sent[1:]] == ["answered", "more"]
    assert sent[0]["content"].endswith(SUMMARY)
    assert len(gw.upstream.requests) == 4  # no second compaction: the context is small now


def test_server_side_compaction_refusals(client: openai.OpenAI, gw: Stack) -> None:
    cases: list[tuple[Any, dict[str, Any], str]] = [
        ([{"type": "summarize"}], {}, "context_management[0].type"),
        (
            [{"type": "compaction", "compact_threshold": 10}],
            {},
            "context_management[0].compact_threshold",
        ),
        ([], {}, "context_management"),
        (COMPACT_AT, {"background": True}, "context_management"),
    ]
    for entries, extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(
                model="local-llama", input=LONG, context_management=entries, **extra
            )
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    assert gw.upstream.requests == []


def test_server_side_compaction_on_native_backends(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    # OpenAI's own API gets the field and compacts itself.
    native.fake.enqueue(Answer(text="from OpenAI"))
    nclient.responses.create(model="gpt-5-mini", input=LONG, context_management=COMPACT_AT)  # type: ignore[arg-type]
    assert native.fake.last.body["context_management"] == COMPACT_AT
    # A local server that speaks Responses is compacted by the gateway.
    native.fake.enqueue(Answer(text=SUMMARY), Answer(text="local answer"))
    data = raw_create(
        nclient,
        model="vllm/qwen3",
        input=LONG,
        context_management=COMPACT_AT,  # type: ignore[arg-type]
    )
    assert [item["type"] for item in data["output"]] == ["compaction", "message"]
    assert "context_management" not in native.fake.last.body
    assert native.fake.last.body["input"][-1]["content"][0]["text"].endswith(SUMMARY)
    # So is an OpenAI model that leaves hosted items out (OpenAI's would not come back).
    native.fake.enqueue(Answer(text=SUMMARY), Answer(text="answer"))
    data = raw_create(
        nclient,
        model="openai-drop",
        input=LONG,
        context_management=COMPACT_AT,  # type: ignore[arg-type]
    )
    assert [item["type"] for item in data["output"]] == ["compaction", "message"]
    assert "context_management" not in native.fake.last.body


def test_server_side_compaction_gives_the_summary_its_own_room_and_charges_a_failure(
    tenants: Tenants,
) -> None:
    key = tenants.new_key("server-compactor")
    tenants.upstream.enqueue(
        Reply(content=SUMMARY, usage={"prompt_tokens": 2100, "completion_tokens": 30}),
        Fail(500),
    )
    with tenants.client(key) as client:
        with pytest.raises(openai.APIError):
            with client.responses.stream(
                model="local-llama",
                input=LONG,
                max_output_tokens=50,
                context_management=COMPACT_AT,  # type: ignore[arg-type]
            ) as stream:
                for _ in stream:
                    pass
    summary_call, answer_call = (recorded.body for recorded in tenants.upstream.requests)
    assert summary_call["max_tokens"] == 8192  # its own room, not the answer's 50
    assert answer_call["max_tokens"] == 50
    # The summary's tokens count for the key, though the answer failed.
    time.sleep(0.5)  # the usage flush
    today = time.strftime("%Y-%m-%d", time.gmtime())
    report = tenants.admin(
        "GET", "/admin/usage", params={"project": "server-compactor", "start": today}
    )
    [row] = report.json()["data"]
    assert row["input_tokens"] == 2100 and row["output_tokens"] == 30
    assert row["not_completed"] == 1


def test_a_later_trigger_does_not_bring_back_what_a_server_compaction_covered(
    client: openai.OpenAI, gw: Stack
) -> None:
    gw.upstream.enqueue(Reply(content=SUMMARY), Reply(content="answered"))
    first = raw_create(
        client,
        model="local-llama",
        input=LONG,
        context_management=COMPACT_AT,  # type: ignore[arg-type]
    )
    gw.upstream.enqueue(Reply(content="second summary"))
    trigger = raw_create(
        client,
        model="local-llama",
        input=[{"role": "user", "content": "short"}, TRIGGER],  # type: ignore[list-item]
        previous_response_id=first["id"],
    )
    assert [item["type"] for item in trigger["output"]] == ["compaction"]
    client.responses.create(model="local-llama", input="next", previous_response_id=trigger["id"])
    sent = [m["content"] for m in gw.upstream.last.body["messages"]]
    assert LONG not in sent and sent[0] == "short" and sent[-1] == "next"
    assert sent[1].endswith("second summary")


def test_instructions_before_a_server_compaction_are_still_sent(
    client: openai.OpenAI, gw: Stack
) -> None:
    developer = {"role": "developer", "content": "You are a careful barista."}
    gw.upstream.enqueue(Reply(content=SUMMARY), Reply(content="answered"))
    data = raw_create(
        client,
        model="local-llama",
        input=[developer, *AGENT_HISTORY],  # type: ignore[list-item]
        tools=MENU_TOOL,  # type: ignore[arg-type]
        context_management=COMPACT_AT,  # type: ignore[arg-type]
        store=False,
    )
    assert [m["role"] for m in gw.upstream.last.body["messages"]] == ["system", "user"]
    raw_create(
        client,
        model="local-llama",
        input=[developer, *AGENT_HISTORY, *data["output"], {"role": "user", "content": "more"}],  # type: ignore[list-item]
        store=False,
    )
    sent = gw.upstream.last.body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You are a careful barista." and sent[1]["content"].endswith(
        SUMMARY
    )
