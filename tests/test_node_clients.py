"""The official Node clients against the gateway: the `openai` SDK (`tests/node/openai_sdk.mjs`:
create, chains, both stream readers, background polling and stream resumption, retrieve, input
items and conversation items with auto-pagination, delete, typed errors, `responses.parse`
with a zod format, compaction, cancelling, token counts, the models list, WebSocket mode with
`ResponsesWS`; `tests/node/native_stream.mjs`: the stream helper on events relayed from a
native upstream) and the Agents SDK for JavaScript (`tests/node/agents_sdk.mjs`: a tool-calling
agent, run, streamed and continued with `previousResponseId`).

The scripts assert with node:assert and print what passed and failed; this file starts the
gateway and the fake upstream, queues the upstream's scripted answers in the scripts' order,
and checks what the upstream was sent. The packages (pinned in `tests/node/package.json` and
its lock file) are installed by `make node-clients` (run by `.ci/run`); where they are missing
and npm cannot install them, these tests are skipped, saying why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NativeStack, Stack
from tests.fake_responses import Answer
from tests.fake_upstream import Fail, Reply, tool_call

NODE_DIR = Path(__file__).resolve().parent / "node"
SUMMARY = "Ada likes dogs."


@pytest.fixture(scope="session")
def node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("the Node clients are not installed (tests/node/) and npm is missing")
        install = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if install.returncode != 0:
            pytest.skip(f"npm could not install the Node clients: {install.stderr[-500:]}")
    return node


def run_script(
    node: str, gw: Stack | NativeStack, script: str, model: str
) -> dict[str, list[object]]:
    env = {
        "PATH": os.environ["PATH"],
        "GATEWAY_URL": f"{gw.gateway.url}/v1",
        "MODEL": model,
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [node, str(NODE_DIR / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no report from {script} (exit {done.returncode}): {done.stderr[-3000:]}"
    report: dict[str, list[object]] = json.loads(lines[-1])
    assert not report["failed"], json.dumps(report["failed"], indent=2)
    assert done.returncode == 0, done.stderr[-3000:]
    return report


def test_openai_node_sdk(node: str, gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_paris")]),
        Reply(content="It is sunny in Paris."),
        Reply(content='{"name": "Ada", "age": 36}'),
        Reply(content=SUMMARY),
        Reply(content="You like dogs."),
        Reply(content="one two three four five six seven", token_delay=0.5),
    )
    report = run_script(node, gw, "openai_sdk.mjs", "local-llama")
    assert len(report["passed"]) == 12, report["passed"]
    bodies = [recorded.body for recorded in gw.upstream.requests]
    # The tool's result went back as the call's answer, after the call.
    call, result = bodies[1]["messages"][-2:]
    assert call["tool_calls"][0]["id"] == "call_paris"
    assert result == {"role": "tool", "tool_call_id": "call_paris", "content": "sunny, 24 C"}
    assert bodies[1]["tools"][0]["function"]["strict"] is True
    # The zod format became the upstream's JSON schema.
    schema = bodies[2]["response_format"]["json_schema"]
    assert schema["name"] == "person" and set(schema["schema"]["properties"]) == {"name", "age"}
    # The compacted items reached the model as the summary, not as the history.
    assert bodies[4]["messages"][-1]["content"] == "What do I like?"
    assert any(SUMMARY in str(m["content"]) for m in bodies[4]["messages"])
    # The second WebSocket turn sent the first, unstored one, from the connection's memory.
    assert [m["content"] for m in bodies[-1]["messages"]] == [
        "First over a socket.",
        "echo: First over a socket.",
        "Second over it.",
    ]


def test_agents_sdk_for_javascript(node: str, gw: Stack) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_paris")]),
        Reply(content="It is sunny in Paris."),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Rome"}, "call_rome")]),
        Reply(content="It is sunny in Rome."),
        Reply(content="Rain tomorrow."),
    )
    report = run_script(node, gw, "agents_sdk.mjs", "local-agent")
    assert len(report["passed"]) == 3, report["passed"]
    bodies = [recorded.body for recorded in gw.upstream.requests]
    assert len(bodies) == 5
    assert bodies[0]["messages"][0] == {
        "role": "system",
        "content": "Answer with the weather; call get_weather first.",
    }
    assert bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    assert bodies[3]["stream"] is True
    # The tool's output went back under its call's id.
    assert bodies[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_paris",
        "content": "sunny in Paris",
    }
    # The continued run's model saw the first run's whole exchange, from the stored chain.
    contents = [str(message.get("content")) for message in bodies[4]["messages"]]
    assert contents[1:] == [
        "Weather in Paris?",
        "None",
        "sunny in Paris",
        "It is sunny in Paris.",
        "And tomorrow?",
    ]


def test_openai_node_sdk_reads_relayed_native_streams(node: str, native: NativeStack) -> None:
    native.fake.enqueue(
        Answer(reasoning=True, web_search=True), Answer(reasoning=True, web_search=True)
    )
    report = run_script(node, native, "native_stream.mjs", "gpt-5-mini")
    assert len(report["passed"]) == 2, report["passed"]
    # The second turn sent the first one's reasoning back with its encrypted content.
    sent = native.fake.last.body
    assert sent["input"][1]["type"] == "reasoning" and sent["input"][1]["encrypted_content"]
    assert sent["stream"] is True


# --- more flows: openai-node's structured outputs, tool runner, errors; Agents JS handoffs -------


def paired_outputs(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(call id, output) of every tool message, each answering a call an earlier assistant
    message made."""
    calls: list[str] = []
    outputs: list[tuple[str, str]] = []
    for message in messages:
        calls += [call["id"] for call in message.get("tool_calls") or ()]
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls, message
            outputs.append((message["tool_call_id"], message["content"]))
    return outputs


def test_openai_node_sdk_structured_outputs_tool_runner_and_errors(node: str, gw: Stack) -> None:
    book = {
        "title": "Dune",
        "year": 1965,
        "tags": ["sf", "desert"],
        "author": {"name": "Frank Herbert", "born": None},
    }
    gw.upstream.enqueue(
        Reply(content=json.dumps(book)),
        Reply(content='{"city": "Oslo", "temperature_c": -3, "windy": true}'),
        Reply(
            tool_calls=[
                tool_call("lookup_order", {"order_id": "A-17", "include_items": True}, "call_order")
            ]
        ),
        Reply(tool_calls=[tool_call("stock_quote", {"ticker": "AAPL"}, "call_quote")]),
        Reply(content="AAPL trades at 201.5 USD."),
        Reply(
            tool_calls=[
                tool_call("lookup_order", {"order_id": "B-2", "include_items": False}, "call_b2")
            ]
        ),
        Reply(refusal="I can't share that."),
        Reply(content="Once upon a time there was a very long story", drop_after=4),
        Fail(500),
    )
    report = run_script(node, gw, "openai_flows.mjs", "local-llama")
    assert len(report["passed"]) == 10, report["passed"]
    bodies = [recorded.body for recorded in gw.upstream.requests]
    # responses.parse: the zod format went up as a strict JSON schema, every key required.
    book_format = bodies[0]["response_format"]
    assert book_format["type"] == "json_schema"
    schema = book_format["json_schema"]
    assert schema["name"] == "book" and schema["strict"] is True
    assert schema["schema"]["additionalProperties"] is False
    assert set(schema["schema"]["required"]) == {"title", "year", "tags", "author"}
    author = schema["schema"]["properties"]["author"]
    assert author["additionalProperties"] is False and set(author["required"]) == {"name", "born"}
    # The stream helper's zod format, streamed.
    assert bodies[1]["stream"] is True
    assert bodies[1]["response_format"]["json_schema"]["name"] == "weather"
    assert bodies[1]["response_format"]["json_schema"]["strict"] is True
    # zodResponsesFunction: a strict function whose schema lists every key as required.
    [function] = [tool["function"] for tool in bodies[2]["tools"]]
    assert function["name"] == "lookup_order" and function["strict"] is True
    assert function["parameters"]["additionalProperties"] is False
    assert set(function["parameters"]["required"]) == {"order_id", "include_items"}
    assert "response_format" not in bodies[2]
    # The tool runner resent the history with the tool's output under its call's id.
    assert bodies[4]["tools"][0]["function"]["name"] == "stock_quote"
    assert paired_outputs(bodies[4]["messages"]) == [("call_quote", "AAPL: 201.5 USD")]
    assert bodies[4]["messages"][0] == {"role": "user", "content": "Price of AAPL?"}
    assert bodies[5]["stream"] is True and bodies[5]["tools"][0]["function"]["strict"] is True
    assert bodies[6]["response_format"]["json_schema"]["name"] == "secret"
    # The failing streams were asked for once each (no retries on this model).
    assert bodies[7]["stream"] is True and bodies[8]["stream"] is True
    # The bad parameters never reached the upstream; the conversation's deleted item did not
    # reach the model, the kept one did.
    assert len(bodies) == 10
    assert [m["content"] for m in bodies[9]["messages"]] == ["I live in Lyon.", "Where do I live?"]


def test_agents_sdk_for_javascript_handoffs_output_type_parallel_calls(
    node: str, gw: Stack
) -> None:
    forecast = {"city": "Oslo", "temperature_c": -3, "conditions": "snow"}
    gw.upstream.enqueue(
        # The handoff, run.
        Reply(tool_calls=[tool_call("transfer_to_weather", {}, "call_h1")]),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Paris"}, "call_w1")]),
        Reply(content="Sunny in Paris."),
        # The handoff, streamed.
        Reply(tool_calls=[tool_call("transfer_to_weather", {}, "call_h2")]),
        Reply(tool_calls=[tool_call("get_weather", {"city": "Rome"}, "call_w2")]),
        Reply(content="Sunny in Rome."),
        # outputType.
        Reply(tool_calls=[tool_call("get_weather", {"city": "Oslo"}, "call_f1")]),
        Reply(content=json.dumps(forecast)),
        # Two calls at once.
        Reply(
            tool_calls=[
                tool_call("get_weather", {"city": "Paris"}, "call_p1"),
                tool_call("get_weather", {"city": "Berlin"}, "call_p2"),
            ]
        ),
        Reply(content="Sunny in both."),
        # Two calls at once, streamed: their argument pieces interleave.
        Reply(
            tool_calls=[
                tool_call("get_weather", {"city": "Madrid"}, "call_s1"),
                tool_call("get_weather", {"city": "Lisbon"}, "call_s2"),
            ]
        ),
        Reply(content="Sunny in both, streamed."),
    )
    report = run_script(node, gw, "agents_flows.mjs", "local-llama")
    assert len(report["passed"]) == 5, report["passed"]
    bodies = [recorded.body for recorded in gw.upstream.requests]
    assert len(bodies) == 12

    def tool_names(body: dict[str, Any]) -> list[str]:
        return [tool["function"]["name"] for tool in body.get("tools") or ()]

    for start, city, streamed in ((0, "Paris", False), (3, "Rome", True)):
        first, second, third = bodies[start : start + 3]
        assert all(bool(body.get("stream")) is streamed for body in (first, second, third))
        assert first["messages"][0] == {
            "role": "system",
            "content": "Route the user to the right agent.",
        }
        assert tool_names(first) == ["transfer_to_weather"]
        # From the handoff on: the weather agent's instructions and tools, the history once.
        for body in (second, third):
            system = [m["content"] for m in body["messages"] if m["role"] == "system"]
            assert system == ["You are the weather agent; call get_weather."]
            assert body["messages"][0]["role"] == "system"
            assert tool_names(body) == ["get_weather"]
        handoff_id = f"call_h{start // 3 + 1}"
        [(call_id, output)] = paired_outputs(second["messages"])
        assert call_id == handoff_id and json.loads(output) == {"assistant": "weather"}
        assert paired_outputs(third["messages"])[1] == (
            f"call_w{start // 3 + 1}",
            f"sunny in {city}",
        )

    # outputType: the zod object as the strict schema (the JS SDK names it `output`), both turns.
    for body in bodies[6:8]:
        format_ = body["response_format"]
        assert format_["type"] == "json_schema"
        assert format_["json_schema"]["name"] == "output"
        assert format_["json_schema"]["strict"] is True
        schema = format_["json_schema"]["schema"]
        assert set(schema["required"]) == {"city", "temperature_c", "conditions"}
        assert schema["additionalProperties"] is False
    assert paired_outputs(bodies[7]["messages"]) == [("call_f1", "sunny in Oslo")]

    # Two calls at once: one assistant turn with both, each answered by its own output.
    assistant = [m for m in bodies[9]["messages"] if m.get("tool_calls")]
    assert len(assistant) == 1
    assert [call["id"] for call in assistant[0]["tool_calls"]] == ["call_p1", "call_p2"]
    assert sorted(paired_outputs(bodies[9]["messages"])) == [
        ("call_p1", "sunny in Paris"),
        ("call_p2", "sunny in Berlin"),
    ]
    assert bodies[10]["stream"] is True and bodies[11]["stream"] is True
    assistant = [m for m in bodies[11]["messages"] if m.get("tool_calls")]
    assert len(assistant) == 1
    streamed_calls = assistant[0]["tool_calls"]
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in streamed_calls] == [
        ("call_s1", {"city": "Madrid"}),
        ("call_s2", {"city": "Lisbon"}),
    ]
    assert sorted(paired_outputs(bodies[11]["messages"])) == [
        ("call_s1", "sunny in Madrid"),
        ("call_s2", "sunny in Lisbon"),
    ]
