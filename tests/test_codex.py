"""Codex CLI (npm `@openai/codex`) as a client: `codex exec` with a custom model provider
(`wire_api = "responses"`) pointing at the gateway, on a Chat Completions-backed model with
`hosted_tools: drop` (Codex sends `web_search` on every call). A plain answer, and a turn where
the model calls Codex's `exec_command` tool, Codex runs it and sends the output back.

The package is installed by `make codex` (run by `.ci/run`) into `.codex-test/`; where it is
missing and npm cannot install it, these tests are skipped, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.fake_upstream import Reply, tool_call

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / ".codex-test"
CODEX = PREFIX / "node_modules" / ".bin" / "codex"
CODEX_VERSION = "0.169.0"

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


def codex_exec(codex: Path, gw: Stack, tmp_path: Path, prompt: str) -> str:
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(CONFIG.format(base_url=f"{gw.gateway.url}/v1"))
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
