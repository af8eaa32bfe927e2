"""Codex CLI (npm `@openai/codex`) as a client: `codex exec` with a custom model provider
(`wire_api = "responses"`) pointing at the gateway, on a Chat Completions-backed model with
`hosted_tools: drop` (Codex sends `web_search` on every call). A plain answer, a turn where
the model calls Codex's `exec_command` tool, Codex runs it and sends the output back, and a
turn whose context Codex has the gateway compact (its provider under OpenAI's name), and a turn
over WebSocket mode (a provider with `supports_websockets`, as OpenAI's built-in one).

The package is installed by `make codex` (run by `.ci/run`) into `.codex-test/`; where it is
missing and npm cannot install it, these tests are skipped, saying why."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NativeStack, Stack, access_lines
from tests.fake_responses import Answer
from tests.fake_upstream import Reply, tool_call

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / ".codex-test"
CODEX = PREFIX / "node_modules" / ".bin" / "codex"
CODEX_VERSION = "0.171.0"

CONFIG = """\
model = "local-agent"
model_provider = "gateway"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.gateway]
name = "responses-gateway"
base_url = "{base_url}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false

[otel]
exporter = "none"
"""


@pytest.fixture(scope="session")
def codex() -> Path:
    if not CODEX.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("Codex CLI is not installed (.codex-test/) and npm is not available")
        install = subprocess.run(
            [npm, "install", "--prefix", str(PREFIX), f"@openai/codex@{CODEX_VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if install.returncode != 0 or not CODEX.exists():
            pytest.skip(f"npm could not install @openai/codex: {install.stderr[-500:]}")
    return CODEX


def codex_exec(
    codex: Path, gw: Stack | NativeStack, tmp_path: Path, prompt: str, config: str = CONFIG
) -> str:
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(config.format(base_url=f"{gw.gateway.url}/v1"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(home),
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", "--cd", str(work), prompt],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_codex_plain_answer(codex: Path, gw: Stack, tmp_path: Path) -> None:
    gw.upstream.enqueue(Reply(content="Hi from a local model!"))
    out = codex_exec(codex, gw, tmp_path, "say hi")
    assert "Hi from a local model!" in out
    sent = gw.upstream.requests[0].body
    assert sent["model"] == "qwen3" and sent["stream"] is True
    names = [tool["function"]["name"] for tool in sent["tools"]]
    assert "exec_command" in names
    assert any(name.startswith("multi_agent_v1__") for name in names)  # a namespace, flattened
    roles = [message["role"] for message in sent["messages"]]
    assert roles[0] == "system" and roles[-1] == "user"  # Codex's developer messages
    assert sent["messages"][-1]["content"] == "say hi"


def test_codex_runs_exec_command_and_answers(codex: Path, gw: Stack, tmp_path: Path) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("exec_command", {"cmd": "echo codex-ran-$((6*7))"}, "call_x")]),
        Reply(content="The command printed codex-ran-42."),
    )
    out = codex_exec(codex, gw, tmp_path, "run echo for me")
    assert "The command printed codex-ran-42." in out
    first, second = (recorded.body for recorded in gw.upstream.requests[:2])
    # `store: false`: Codex sends the whole history again, its call and the command's output.
    assert second["messages"][: len(first["messages"])] == first["messages"]
    call = second["messages"][-2]["tool_calls"][0]
    assert call["id"] == "call_x" and call["function"]["name"] == "exec_command"
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_x"
    assert "codex-ran-42" in str(result["content"])


# Codex asks the server to compact (instead of compacting with a summary turn of its own) when
# its provider goes by OpenAI's name; a tiny auto-compact limit makes the first tool call's
# usage cross it.
OPENAI_NAMED = CONFIG.replace('name = "responses-gateway"', 'name = "OpenAI"').replace(
    "check_for_update_on_startup = false",
    "check_for_update_on_startup = false\nmodel_auto_compact_token_limit = 2000",
)


def test_codex_compacts_through_the_gateway(
    codex: Path, gw: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw.upstream.enqueue(
        Reply(
            tool_calls=[tool_call("exec_command", {"cmd": "echo hi"}, "call_c")],
            usage={"prompt_tokens": 50_000, "completion_tokens": 10},
        ),
        Reply(content="Ran echo; it printed hi. Next: answer the user."),
        Reply(content="All done after compaction."),
    )
    with caplog.at_level(logging.INFO, logger="app.access"):
        out = codex_exec(codex, gw, tmp_path, "run echo", OPENAI_NAMED)
        records = access_lines(caplog, requests=3)
    assert "All done after compaction." in out
    paths = [(r.method, r.path, r.status) for r in records]
    # Codex (0.169 on) compacts with a closing `compaction_trigger` on an ordinary create (remote
    # compaction v2), not with POST /v1/responses/compact: three creates, all answered.
    assert paths == [("POST", "/v1/responses", 200)] * 3, paths
    calls, summary, after = (recorded.body for recorded in gw.upstream.requests[:3])
    # The gateway asked its model for the summary of everything so far…
    assert summary["messages"][-1]["content"].startswith("Compact the conversation above")
    assert summary["messages"][-2]["role"] == "tool" and "tools" not in summary
    # …and Codex went on with the user's messages and that summary instead of the history.
    contents = [str(m["content"]) for m in after["messages"]]
    assert contents[-1].endswith("Ran echo; it printed hi. Next: answer the user.")
    assert "run echo" in contents and not any(m["role"] == "tool" for m in after["messages"])
    # Codex's own instructions (developer messages, sent as `system`) are still there.
    instructions = [m for m in calls["messages"] if m["role"] == "system"]
    assert instructions and [m for m in after["messages"] if m["role"] == "system"] == instructions
    assert len(after["messages"]) < len(calls["messages"]) + 3


# A provider that says it speaks WebSocket mode, as OpenAI's built-in one does. Codex then keeps
# one connection for the session: a `generate: false` prewarm, then each request of the turn as
# a `response.create` with `store: false`, `previous_response_id` and only the new items.
WEBSOCKETS = CONFIG.replace(
    'wire_api = "responses"', 'wire_api = "responses"\nsupports_websockets = true'
)


def test_codex_over_websockets(
    codex: Path, gw: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("exec_command", {"cmd": "echo ws-$((6*7))"}, "call_w")]),
        Reply(content="Over the socket: ws-42."),
    )
    with caplog.at_level(logging.INFO, logger="app.access"):
        out = codex_exec(codex, gw, tmp_path, "run echo over ws", WEBSOCKETS)
        records = access_lines(caplog, closed_websockets=1)
    assert "Over the socket: ws-42." in out
    lines = [
        (r.getMessage(), r.method, r.path, r.status, getattr(r, "responses", None)) for r in records
    ]
    # One WebSocket, three responses on it (the prewarm and the turn's two), no HTTP create.
    assert lines == [("websocket", "GET", "/v1/responses", 101, 3)], lines
    assert len(gw.upstream.requests) == 2  # the prewarm asked nothing of the model
    first, second = (recorded.body for recorded in gw.upstream.requests[:2])
    # Only the new items came over the socket; the gateway rebuilt the rest from the
    # connection's memory of its `store: false` responses.
    assert second["messages"][: len(first["messages"])] == first["messages"]
    call = second["messages"][-2]["tool_calls"][0]
    assert call["id"] == "call_w" and call["function"]["name"] == "exec_command"
    result = second["messages"][-1]
    assert result["role"] == "tool" and "ws-42" in str(result["content"])


# The same provider on a model the gateway serves from OpenAI (the native fake stands in).
ON_OPENAI = OPENAI_NAMED.replace('model = "local-agent"', 'model = "gpt-5-mini"')


def test_codex_on_an_openai_model_compacts_with_openai(
    codex: Path, native: NativeStack, tmp_path: Path
) -> None:
    native.fake.enqueue(
        Answer(
            call=("exec_command", json.dumps({"cmd": "echo hi"}), "call_n"), input_tokens=50_000
        ),
        Answer(),  # the compaction: OpenAI's own item
        Answer(text="All done after OpenAI's compaction."),
    )
    out = codex_exec(codex, native, tmp_path, "run echo", ON_OPENAI)
    assert "All done after OpenAI's compaction." in out
    assert [seen.path for seen in native.fake.seen] == ["/v1/responses"] * 3
    calls, compacting, after = (seen.body for seen in native.fake.seen)
    assert calls["model"] == "gpt-5-mini" and calls["stream"] is True
    assert "reasoning.encrypted_content" in calls["include"]
    assert any(tool.get("name") == "exec_command" for tool in calls["tools"])
    # The trigger went on to OpenAI after the history (the command's output included), with
    # Codex's tools…
    assert compacting["input"][-1] == {"type": "compaction_trigger"}
    outputs = [i for i in compacting["input"] if i.get("type") == "function_call_output"]
    assert outputs and "hi" in str(outputs[0]["output"])
    assert compacting["tools"] == calls["tools"]
    # …and Codex went on from OpenAI's compaction item instead of the history.
    kinds = [item.get("type", "message") for item in after["input"]]
    assert "compaction" in kinds and "function_call_output" not in kinds
    item = next(i for i in after["input"] if i.get("type") == "compaction")
    assert item["encrypted_content"].startswith("gAAAA-compacted:")
