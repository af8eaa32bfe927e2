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

import pytest

from tests.conftest import NativeStack, Stack
from tests.fake_responses import Answer
from tests.fake_upstream import Reply, tool_call

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
