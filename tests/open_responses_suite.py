"""Run the Open Responses compliance suite against a gateway of its own (`make compliance`).

The suite is `bun scripts/compliance-test.ts` in a checkout of
github.com/openresponses/openresponses (its dependencies installed); it sends its scenarios
(basic, streaming, system prompt, tool calling, streamed tool calling, image input, multi-turn)
to a base URL and validates every response and stream event with the zod schemas generated
from the Open Responses spec. This starts what it talks to: the tests' fake Chat Completions
upstream, answering a request that offers tools with a call to the first one (arguments filled
from its schema's required properties) and any other with an echo, and a gateway in front of it
on a temporary SQLite database, in open mode (no keys). The suite's exit code is this script's.

    .venv/bin/python tests/open_responses_suite.py --suite DIR [-- SUITE-ARGS...]

`tests/test_open_responses_schema.py` runs the same scenarios with the same spec inside the
suite; this runs the suite itself, where its checkout can be had (it is not vendored here).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings  # noqa: E402
from tests.conftest import GatewayServer, migrate  # noqa: E402
from tests.fake_upstream import FakeUpstream, Reply, tool_call  # noqa: E402

MODEL = "suite-model"
_SAMPLES: dict[str, Any] = {
    "string": "San Francisco, CA",
    "number": 1,
    "integer": 1,
    "boolean": True,
    "array": [],
    "object": {},
}


def sample_arguments(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Arguments a model might send for a tool with this JSON schema: each required property
    with a value of its type (its first enum value, if it has an enum)."""
    properties = (parameters or {}).get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in (parameters or {}).get("required") or []:
        spec = properties.get(name) or {}
        if spec.get("enum"):
            arguments[name] = spec["enum"][0]
            continue
        kind = spec.get("type", "string")
        arguments[name] = _SAMPLES.get(kind if isinstance(kind, str) else kind[0], "x")
    return arguments


class ToolCallingUpstream(FakeUpstream):
    """The fake upstream, calling the first tool of a request that offers any."""

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        tools = body.get("tools") or []
        if tools:
            function = tools[0].get("function") or {}
            arguments = sample_arguments(function.get("parameters"))
            # No await between this and the script's read in `_answer`: the reply is this one.
            self.enqueue(Reply(tool_calls=[tool_call(function["name"], arguments, "call_suite")]))
        return await super()._answer(request, body)


def find_bun(suite: Path) -> str:
    found = shutil.which("bun") or suite / "node_modules" / ".bin" / "bun"
    if not Path(found).exists():
        raise SystemExit(
            f"no bun: install it (`npm install --prefix {suite} bun`, or https://bun.sh)"
        )
    return str(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", type=Path, required=True, help="the suite's checkout")
    parser.add_argument("suite_args", nargs="*", help="passed on to compliance-test.ts")
    args = parser.parse_args()
    suite: Path = args.suite.resolve()
    script = suite / "scripts" / "compliance-test.ts"
    if not script.exists():
        raise SystemExit(f"{script} is missing: is {suite} a checkout of openresponses?")
    bun = find_bun(suite)
    upstream = ToolCallingUpstream().start()
    try:
        with tempfile.TemporaryDirectory(prefix="rg-suite-") as work:
            config = Path(work) / "models.yaml"
            config.write_text(
                "models:\n"
                f"  - name: {MODEL}\n"
                "    backend: chat_completions\n"
                f"    base_url: {upstream.base_url}\n"
                "    max_retries: 0\n"
            )
            database = f"sqlite+aiosqlite:///{work}/suite.db"
            settings = Settings(database_url=database, gateway_config=config)
            migrate(database)
            gateway = GatewayServer(settings).start()
            try:
                command = [
                    bun,
                    str(script),
                    "--base-url",
                    f"{gateway.url}/v1",
                    "--api-key",
                    "sk-suite",
                    "--model",
                    MODEL,
                    *args.suite_args,
                ]
                return subprocess.run(command, cwd=suite, check=False).returncode
            finally:
                gateway.stop()
    finally:
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
