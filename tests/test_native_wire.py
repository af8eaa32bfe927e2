"""A backend that speaks Responses natively (OpenAI, Azure, vLLM…): its events and items are
relayed, so what the upstream sends must come out valid against the openai SDK's models and
both schemas (`tests/wire.py`): Open Responses event names mapped to OpenAI's, OpenAI's
undocumented `keepalive` events dropped, null item fields neither schema has left out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import NativeStack
from tests.fake_responses import Answer
from tests.schemas import check_error, check_item_list
from tests.wire import (
    SSEStream,
    create_raw,
    get_raw,
    stream_raw,
    strict_response,
    strict_stream,
)

# The SQLite half is enough: the wire shape does not depend on the database.
pytestmark = pytest.mark.parametrize("native_stack", ["sqlite"], indirect=True)


def stream(native: NativeStack, body: dict[str, Any]) -> SSEStream:
    result = stream_raw(native.gateway.url, body)
    strict_stream(result)
    return result


def test_native_reasoning_summary_and_text(native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="Four.", reasoning=True), Answer(text="Four.", reasoning=True))
    body = {"model": "gpt-5-mini", "input": "2+2?", "reasoning": {"effort": "low"}}
    data = create_raw(native.gateway.url, body)
    assert [item["type"] for item in data["output"]] == ["reasoning", "message"]
    result = stream(native, body)
    assert result.of("response.reasoning_summary_text.delta")


@pytest.mark.parametrize("open_responses_names", [False, True])
def test_native_raw_reasoning(native: NativeStack, open_responses_names: bool) -> None:
    """An upstream speaking Open Responses names raw reasoning `response.reasoning.*`: relayed
    under OpenAI's names, the ones the SDK knows, and kept in the stored item."""
    answer = Answer(
        text="Four.",
        reasoning=True,
        raw_reasoning="Two and two make four.",
        open_responses_names=open_responses_names,
    )
    native.fake.enqueue(answer)
    result = stream(native, {"model": "gpt-5-mini", "input": "2+2"})
    deltas = result.of("response.reasoning_text.delta")
    assert "".join(d["delta"] for d in deltas) == "Two and two make four."
    assert result.of("response.reasoning_text.done")[0]["text"] == "Two and two make four."
    reasoning = result.terminal["response"]["output"][0]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Two and two make four."}]


def test_native_null_item_fields(native: NativeStack) -> None:
    """`encrypted_content: null`, `content: null`, `phase: null` from an upstream: left out, so
    the items are valid Open Responses (which has no null there) and read the same by the SDK."""
    answer = Answer(text="Hi.", reasoning=True, nulls=True)
    native.fake.enqueue(answer, answer)
    body = {"model": "vllm/qwen3", "input": "hi"}
    data = create_raw(native.gateway.url, body)
    assert "encrypted_content" not in data["output"][0] and "phase" not in data["output"][1]
    stream(native, body)


def test_native_keepalive_events_are_not_relayed(native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="a b c d", keepalive=True))
    result = stream(native, {"model": "gpt-5-mini", "input": "x"})
    assert "keepalive" not in result.types
    assert result.terminal["response"]["output_text"] == "a b c d"


def test_native_hosted_tool(native: NativeStack) -> None:
    answer = Answer(text="Sunny.", web_search=True)
    native.fake.enqueue(answer, answer, answer)
    body = {"model": "gpt-5-mini", "input": "Weather?", "tools": [{"type": "web_search"}]}
    first = create_raw(native.gateway.url, body)
    stream(native, body)
    second = create_raw(
        native.gateway.url, {**body, "previous_response_id": first["id"], "input": "More?"}
    )
    listed = httpx.get(f"{native.gateway.url}/v1/responses/{second['id']}/input_items")
    check_item_list(listed.json(), "ResponseItemList")
    assert "web_search_call" in [item["type"] for item in listed.json()["data"]]


@pytest.mark.parametrize("status", ["incomplete", "failed"])
def test_native_unfinished(native: NativeStack, status: str) -> None:
    native.fake.enqueue(Answer(status=status), Answer(status=status))
    body = {"model": "gpt-5-mini", "input": "hi"}
    if status == "incomplete":
        assert create_raw(native.gateway.url, body)["status"] == "incomplete"
    else:
        response = httpx.post(f"{native.gateway.url}/v1/responses", json=body, timeout=30)
        check_error(response, 500 if response.status_code == 500 else 502)
    result = stream(native, body)
    assert result.terminal["type"] == f"response.{status}"


def test_native_stream_cut_short(native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="one two three four five six", drop_after=6))
    result = stream(native, {"model": "gpt-5-mini", "input": "n"})
    assert result.types[-2:] == ["error", "response.failed"]
    strict_response(get_raw(native.gateway.url, f"/responses/{result.terminal['response']['id']}"))
