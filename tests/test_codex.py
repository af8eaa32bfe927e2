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
import time
from pathlib import Path

import pytest

from tests.conftest import NativeStack, Stack, access_lines
from tests.fake_responses import Answer
from tests.fake_upstream import Fail, Reply, tool_call

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


# --- Codex's own tools, reasoning, errors, sessions -------------------------------------------
#
# Codex declares `apply_patch` (and asks for reasoning) only for a model its catalog describes;
# `local-agent` is unknown to it, so these runs give Codex a catalog of one entry under that
# name (`model_catalog_json`), the fields Codex 0.171 insists on and nothing else.

LOCAL_AGENT = {
    "slug": "local-agent",
    "display_name": "local-agent",
    "base_instructions": "You are a coding agent.",
    "apply_patch_tool_type": "freeform",
    "shell_type": "unified_exec",
    "supported_reasoning_levels": [],
    "visibility": "list",
    "supported_in_api": True,
    "priority": 1,
    "support_verbosity": False,
    "truncation_policy": {"mode": "tokens", "limit": 10000},
    "experimental_supported_tools": [],
}
REASONING = {
    "supported_reasoning_levels": [{"effort": "medium", "description": "Balanced"}],
    "default_reasoning_level": "medium",
    "supports_reasoning_summaries": True,
    "default_reasoning_summary": "auto",
}


class CodexHome:
    """One Codex home and workspace, for as many `codex exec` runs as a test makes (a session
    resumed in a second run lives in the first one's home). `RUST_LOG` has Codex trace each
    request body it POSTs (`codex_http_client::transport`), which `requests` reads back."""

    def __init__(
        self, gw: Stack, tmp_path: Path, config: str = CONFIG, model: dict | None = None
    ) -> None:
        self.home = tmp_path / "codex-home"
        self.work = tmp_path / "work"
        self.home.mkdir()
        self.work.mkdir()
        text = config.format(base_url=f"{gw.gateway.url}/v1")
        if model is not None:
            catalog = tmp_path / "catalog.json"
            catalog.write_text(json.dumps({"models": [model]}))
            text = f'model_catalog_json = "{catalog}"\n' + text
        (self.home / "config.toml").write_text(text)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "CODEX_HOME": str(self.home),
            "NO_COLOR": "1",
            "RUST_LOG": "warn,codex_http_client::transport=trace",
        }
        self.stderr = ""

    def run(self, codex: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(codex), "exec", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.work,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        self.stderr += done.stderr
        if ok:
            assert done.returncode == 0, done.stderr[-3000:]
        return done

    def exec(self, codex: Path, prompt: str, *flags: str) -> str:
        return self.run(
            codex, "--skip-git-repo-check", "--cd", str(self.work), *flags, prompt
        ).stdout

    def requests(self) -> list[dict]:
        """The bodies Codex POSTed to the gateway's /v1/responses, in order."""
        decoder = json.JSONDecoder()
        bodies = []
        for line in self.stderr.splitlines():
            marker = line.find("/v1/responses: {")
            if "POST to " in line and marker >= 0:
                bodies.append(decoder.raw_decode(line[marker + len("/v1/responses: ") :])[0])
        return bodies

    def rollout(self) -> list[dict]:
        """The items Codex recorded of its sessions (`response_item` lines of the rollouts)."""
        items = []
        for path in sorted(self.home.glob("sessions/**/*.jsonl")):
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("type") == "response_item":
                    items.append(entry["payload"])
        return items


PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"


def test_codex_applies_a_patch(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """Codex 0.171 knows only the freeform `apply_patch` (a `custom` tool with a Lark grammar);
    the gateway offers it upstream as a function of one string `input`."""
    gw.upstream.enqueue(
        Reply(tool_calls=[tool_call("apply_patch", {"input": PATCH}, "call_p")]),
        Reply(content="Created hello.txt for you."),
    )
    home = CodexHome(gw, tmp_path, model=LOCAL_AGENT)
    out = home.exec(codex, "create hello.txt saying hello")
    assert "Created hello.txt for you." in out
    assert (home.work / "hello.txt").read_text() == "hello\n"
    declared = next(t for t in home.requests()[0]["tools"] if t.get("name") == "apply_patch")
    assert declared["type"] == "custom" and declared["format"]["syntax"] == "lark"
    first, second = (recorded.body for recorded in gw.upstream.requests[:2])
    tool = next(t["function"] for t in first["tools"] if t["function"]["name"] == "apply_patch")
    assert tool["parameters"]["properties"]["input"]["type"] == "string"
    assert "*** Begin Patch" in tool["description"]  # the grammar, told in the description
    # Codex got the call back as the custom tool call it declared, the patch as its input…
    recorded = next(i for i in home.rollout() if i.get("call_id") == "call_p")
    assert recorded["type"] == "custom_tool_call" and recorded["input"] == PATCH
    output = next(i for i in home.rollout() if i["type"] == "custom_tool_call_output")
    assert output["call_id"] == "call_p"
    # …and its next request replays the call and pairs the patch's result with it.
    call = second["messages"][-2]["tool_calls"][0]
    assert call["id"] == "call_p" and call["function"]["name"] == "apply_patch"
    assert json.loads(call["function"]["arguments"]) == {"input": PATCH}
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == "call_p"
    assert "hello.txt" in str(result["content"])


def test_codex_reasoning_round_trip(codex: Path, gw: Stack, tmp_path: Path) -> None:
    gw.upstream.enqueue(
        Reply(
            reasoning="Thinking hard about echo.",
            tool_calls=[tool_call("exec_command", {"cmd": "echo r-$((6*7))"}, "call_r")],
        ),
        Reply(reasoning="The output is in.", content="Reasoned: r-42."),
    )
    home = CodexHome(gw, tmp_path, model={**LOCAL_AGENT, **REASONING})
    out = home.exec(codex, "think, then run echo")
    assert "Reasoned: r-42." in out
    codex_first, codex_second = home.requests()
    assert codex_first["store"] is False
    assert codex_first["include"] == ["reasoning.encrypted_content"]
    assert codex_first["reasoning"] == {"effort": "medium", "summary": "auto"}
    first, second = (recorded.body for recorded in gw.upstream.requests[:2])
    assert first["reasoning_effort"] == second["reasoning_effort"] == "medium"
    # Codex kept the model's reasoning as the gateway streamed it (raw reasoning text)…
    thoughts = [i for i in home.rollout() if i["type"] == "reasoning"]
    assert [i["content"] for i in thoughts] == [
        [{"type": "reasoning_text", "text": "Thinking hard about echo."}],
        [{"type": "reasoning_text", "text": "The output is in."}],
    ]
    # …sent it back in its next request (no encrypted_content to send: the gateway has none),
    # and the gateway took it without a 400, leaving it out of the Chat Completions messages.
    replayed = [i for i in codex_second["input"] if i.get("type") == "reasoning"]
    assert len(replayed) == 1 and replayed[0]["content"] == thoughts[0]["content"]
    assert not replayed[0].get("encrypted_content")
    assert "Thinking hard" not in json.dumps(second["messages"])
    call = second["messages"][-2]["tool_calls"][0]
    assert call["id"] == "call_r" and second["messages"][-1]["tool_call_id"] == "call_r"
    assert "r-42" in str(second["messages"][-1]["content"])


# Retries off (CONFIG) unless a test turns Codex's stream retries on: a failed turn that Codex
# would retry shows up as more than one upstream request.
RETRYING = CONFIG.replace("stream_max_retries = 0", "stream_max_retries = 2")


def test_codex_retries_a_failed_upstream_and_answers(
    codex: Path, gw: Stack, tmp_path: Path
) -> None:
    gw.upstream.enqueue(Fail(500), Reply(content="Second time lucky."))
    home = CodexHome(gw, tmp_path, config=RETRYING)
    out = home.exec(codex, "say hi")
    assert "Second time lucky." in out
    # The 500 reached Codex as a failed stream (`response.failed`), which it retries: the same
    # request again, answered this time.
    assert "Reconnecting... 1/2" in home.stderr
    first, second = (recorded.body for recorded in gw.upstream.requests)
    assert first == second
    assert len(home.requests()) == 2


def test_codex_reports_an_upstream_failure(codex: Path, gw: Stack, tmp_path: Path) -> None:
    gw.upstream.enqueue(Fail(500, {"error": {"message": "CUDA out of memory", "code": None}}))
    home = CodexHome(gw, tmp_path)
    started = time.monotonic()
    done = home.run(codex, "--skip-git-repo-check", "say hi", ok=False)
    assert time.monotonic() - started < 30  # neither side hangs on the failed stream
    assert done.returncode != 0 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors and all("failed (500): CUDA out of memory" in line for line in errors), errors
    assert len(gw.upstream.requests) == 1


def test_codex_stops_on_the_context_window_error(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """OpenAI's code for it (as llama.cpp's server and OpenAI-compatible proxies send it) is what
    Codex keys on: its own message, no retry even with retries on."""
    message = "This model's maximum context length is 4096 tokens. You requested 9000 tokens."
    error = {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}
    gw.upstream.enqueue(Fail(400, {"error": error}))
    home = CodexHome(gw, tmp_path, config=RETRYING)
    done = home.run(codex, "--skip-git-repo-check", "say hi", ok=False)
    assert done.returncode != 0
    assert "Codex ran out of room in the model's context window" in done.stderr
    assert len(gw.upstream.requests) == 1


def test_codex_stops_on_vllms_context_length_error(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """vLLM's context-length error is a 400 with no OpenAI code: the gateway recognises its
    words and passes the fault on as OpenAI names it (`context_length_exceeded` on the `error`
    event, `invalid_prompt` on `response.failed`), so Codex says its context is full and does
    not send the same request again, even with retries on."""
    message = "This model's maximum context length is 4096 tokens. However, you requested 9000."
    vllm = {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
    gw.upstream.enqueue(Fail(400, vllm), Fail(400, vllm), Fail(400, vllm))
    home = CodexHome(gw, tmp_path, config=RETRYING)
    done = home.run(codex, "--skip-git-repo-check", "say hi", ok=False)
    assert done.returncode != 0
    assert "Codex ran out of room in the model's context window" in done.stderr
    assert "Reconnecting" not in done.stderr
    assert len(gw.upstream.requests) == 1


def test_codex_does_not_retry_an_upstream_400(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """Another request the upstream refuses: sending it again cannot help. Codex retries only a
    `response.failed` whose code it takes for a passing fault, so an upstream 4xx reaches it as
    `invalid_prompt`, not `server_error`: one upstream call, and the upstream's words shown."""
    message = "'logit_bias' is not supported by this server"
    vllm = {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
    gw.upstream.enqueue(Fail(400, vllm), Fail(400, vllm), Fail(400, vllm))
    home = CodexHome(gw, tmp_path, config=RETRYING)
    done = home.run(codex, "--skip-git-repo-check", "say hi", ok=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Reconnecting" not in done.stderr
    assert len(gw.upstream.requests) == 1


def test_codex_shows_the_gateway_refusal_of_hosted_tools(
    codex: Path, gw: Stack, tmp_path: Path
) -> None:
    """A Chat Completions model without `hosted_tools: drop`: Codex's `web_search` is refused
    with a 400 before anything streams, and Codex prints the gateway's envelope, fix included."""
    config = CONFIG.replace('model = "local-agent"', 'model = "local-llama"')
    home = CodexHome(gw, tmp_path, config=config)
    done = home.run(codex, "--skip-git-repo-check", "say hi", ok=False)
    assert done.returncode != 0
    line = next(line for line in done.stderr.splitlines() if line.startswith("ERROR: {"))
    error = json.loads(line.removeprefix("ERROR: "))["error"]
    assert error["type"] == "invalid_request_error" and error["param"].endswith(".type")
    assert "hosted_tools: drop" in error["message"]
    assert gw.upstream.requests == []


def test_codex_resumes_a_session(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """`codex exec resume --last`: a second process goes on with the first one's history (from
    its rollout, `store: false`), the first turn's reasoning item included."""
    gw.upstream.enqueue(
        Reply(reasoning="A fruit to keep in mind.", content="Noted: banana."),
        Reply(content="The word was banana."),
    )
    home = CodexHome(gw, tmp_path, model={**LOCAL_AGENT, **REASONING})
    assert "Noted: banana." in home.exec(codex, "remember the word banana")
    resumed = home.run(codex, "resume", "--skip-git-repo-check", "--last", "what was the word?")
    assert "The word was banana." in resumed.stdout
    codex_first, codex_second = home.requests()
    assert codex_second["prompt_cache_key"] == codex_first["prompt_cache_key"]  # one session
    kinds = [(i["type"], i.get("role")) for i in codex_second["input"]]
    assert ("reasoning", None) in kinds and kinds[-1] == ("message", "user")
    first, second = (recorded.body for recorded in gw.upstream.requests[:2])
    assert second["messages"][: len(first["messages"])] == first["messages"]
    tail = [(m["role"], m["content"]) for m in second["messages"][len(first["messages"]) :]]
    assert tail[0] == ("assistant", "Noted: banana.")
    assert tail[-1] == ("user", "what was the word?")
    assert "A fruit" not in json.dumps(second["messages"])


def test_codex_structured_final_answer(codex: Path, gw: Stack, tmp_path: Path) -> None:
    """`--output-schema`: Codex asks for its JSON Schema as `text.format`; the upstream gets it
    as `response_format`, and the answer is printed (and written by `-o`) as it came."""
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    answer = '{"answer": "forty-two", "confidence": 0.9}'
    gw.upstream.enqueue(Reply(content=answer))
    home = CodexHome(gw, tmp_path)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    last = tmp_path / "last.txt"
    out = home.exec(
        codex, "answer in JSON", "--output-schema", str(tmp_path / "schema.json"), "-o", str(last)
    )
    assert answer in out and last.read_text().strip() == answer
    text_format = home.requests()[0]["text"]["format"]
    assert text_format["type"] == "json_schema" and text_format["schema"] == schema
    sent = gw.upstream.requests[0].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == text_format["name"]
    assert sent["json_schema"]["schema"] == schema
    assert sent["json_schema"].get("strict") == text_format.get("strict")
