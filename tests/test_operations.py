"""Operating the gateway: health and readiness, Prometheus metrics, request ids, JSON logs that
never carry prompts or upstream secrets, OpenTelemetry spans, retention, the `keys` CLI, and
`serve` refusing open mode on a non-loopback address."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets.exceptions
import websockets.sync.client
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.store.engine import head_revision
from tests.conftest import Database, GatewayServer, Stack, gateway_on, migrate, models_yaml
from tests.fake_upstream import FakeUpstream, Reply

PROMPT_CANARY = "PROMPT-CANARY-7f3a"
UPSTREAM_SECRET = "sk-upstream-TOPSECRET-91"


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


# --- health, readiness, metrics, request ids (the shared open-mode stack) ----------------------


def test_healthz_and_readyz(gw: Stack) -> None:
    health = httpx.get(f"{gw.gateway.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(f"{gw.gateway.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "migration": head_revision()}


def test_metrics_count_requests_tokens_streams_and_queue(gw: Stack, client: openai.OpenAI) -> None:
    client.responses.create(model="local-llama", input="hello")
    with client.responses.stream(model="local-llama", input="streamed") as events:
        for _ in events:
            pass
    page = httpx.get(f"{gw.gateway.url}/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    text = page.text
    requests = {
        (labels["route"], labels["method"], labels["model"], labels["status"]): value
        for labels, value in samples(text, "gateway_requests_total")
    }
    assert requests[("/v1/responses", "POST", "local-llama", "200")] >= 2
    latency = samples(text, "gateway_request_duration_seconds_count")
    assert any(labels["route"] == "/v1/responses" for labels, _ in latency)
    upstream = samples(text, "gateway_upstream_duration_seconds_count")
    assert any(
        labels == {"model": "local-llama", "backend": "chat_completions", "status": "completed"}
        for labels, _ in upstream
    )
    assert samples(text, "gateway_upstream_ttft_seconds_count")[0][1] >= 1
    tokens = {
        labels["kind"]: value
        for labels, value in samples(text, "gateway_tokens_total")
        if labels["model"] == "local-llama"  # the session's stack has served other models too
    }
    assert tokens["input"] >= 22 and tokens["output"] >= 14
    assert samples(text, "gateway_active_streams") == [({}, 0.0)]
    assert samples(text, "gateway_background_queue_depth")
    assert samples(text, "gateway_background_oldest_queued_job_age_seconds")
    # Unknown paths do not mint a label value each.
    httpx.get(f"{gw.gateway.url}/v1/nothing-{time.time()}")
    text = httpx.get(f"{gw.gateway.url}/metrics").text
    routes = {labels["route"] for labels, _ in samples(text, "gateway_requests_total")}
    assert "(unmatched)" in routes and not any("nothing-" in route for route in routes)


def test_request_id_is_accepted_echoed_or_made(gw: Stack) -> None:
    mine = httpx.get(f"{gw.gateway.url}/v1/models", headers={"x-request-id": "client-id-42"})
    assert mine.headers["x-request-id"] == "client-id-42"
    made = httpx.get(f"{gw.gateway.url}/v1/models")
    assert made.headers["x-request-id"].startswith("req_")
    hostile = httpx.get(f"{gw.gateway.url}/v1/models", headers={"x-request-id": "a b\tc" * 50})
    assert hostile.headers["x-request-id"].startswith("req_")
    error = httpx.get(f"{gw.gateway.url}/v1/responses/resp_missing")
    assert error.status_code == 404 and error.headers["x-request-id"].startswith("req_")


# --- gateways of their own ---------------------------------------------------------------------


def own_gateway(
    upstream: FakeUpstream, tmp_path: Path, **overrides: Any
) -> tuple[GatewayServer, str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
    migrate(url)
    config = tmp_path / "models.yaml"
    config.write_text(models_yaml(upstream))
    settings = Settings(database_url=url, gateway_config=config, **overrides)
    return GatewayServer(settings).start(), url


def test_readyz_fails_when_the_database_is_behind(upstream: FakeUpstream, tmp_path: Path) -> None:
    server, url = own_gateway(upstream, tmp_path, gateway_worker_concurrency=0)
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        migrate(url, to="-1")
        behind = httpx.get(f"{server.url}/readyz")
        assert behind.status_code == 503
        error = behind.json()["error"]
        assert error["code"] == "not_ready" and "responses-gateway migrate" in error["message"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive all the same
        migrate(url)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        server.stop()


def test_retention_purges_old_responses_in_the_workers(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The purge keeps its own period, even one shorter than the job poll's."""
    upstream.reset()
    server, _ = own_gateway(
        upstream,
        tmp_path,
        gateway_response_ttl_seconds=1,
        gateway_prune_seconds=0.2,
        gateway_job_poll_seconds=60,
    )
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            old = client.responses.create(model="local-llama", input="forget me")
            assert client.responses.retrieve(old.id).status == "completed"
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.responses.retrieve(old.id)
                except openai.NotFoundError:
                    break
                assert time.monotonic() < deadline, "the response was never purged"
                time.sleep(0.2)
            with pytest.raises(openai.NotFoundError):
                client.responses.input_items.list(old.id)
    finally:
        server.stop()


def test_a_purged_turn_leaves_the_context_of_later_turns(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The process caches the context of each turn it stores; a purged earlier turn must not
    be sent upstream again by a continuation of a later turn that outlived it."""
    migrate(empty_database.url)
    upstream.reset()
    with gateway_on(
        empty_database.url,
        upstream,
        tmp_path,
        gateway_response_ttl_seconds=4,
        gateway_prune_seconds=0.1,
    ) as server:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            old = client.responses.create(model="local-llama", input="old turn")
            time.sleep(2.5)  # the later turn outlives the old one by 2.5 s: room for a slow CI
            later = client.responses.create(
                model="local-llama", input="later turn", previous_response_id=old.id
            )
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.responses.retrieve(old.id)
                except openai.NotFoundError:
                    break
                assert time.monotonic() < deadline, "the old turn was never purged"
                time.sleep(0.05)
            client.responses.create(
                model="local-llama", input="next", previous_response_id=later.id
            )
        sent = [message["content"] for message in upstream.last.body["messages"]]
        assert sent == ["later turn", "echo: later turn", "next"]


# --- processes: CLI, serve, logs, tracing ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def process_env(upstream: FakeUpstream, tmp_path: Path) -> Iterator[dict[str, str]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'proc.db'}"
    migrate(url)
    config = tmp_path / "models.yaml"
    config.write_text(models_yaml(upstream))
    upstream.reset()
    yield {
        **os.environ,
        "DATABASE_URL": url,
        "GATEWAY_CONFIG": str(config),
        "FAKE_UPSTREAM_KEY": UPSTREAM_SECRET,
        "GATEWAY_LOG_LEVEL": "info",
    }


class Served:
    """`responses-gateway serve` in a subprocess, its stdout and stderr in files."""

    def __init__(self, env: dict[str, str], tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.out, self.err = tmp / "serve.out", tmp / "serve.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *args],
                env=env,
                stdout=out,
                stderr=err,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.err.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("serve did not start")

    def stop(self) -> tuple[str, str]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(20)
        return self.out.read_text(), self.err.read_text()


def test_keys_cli_creates_lists_and_revokes(process_env: dict[str, str]) -> None:
    created = cli(process_env, "keys", "create", "--project", "team-a", "--rpm", "5")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("sk-rg-") and len(secret) > 40
    assert "shown only now" in created.stderr

    listed = cli(process_env, "keys", "list")
    assert listed.returncode == 0
    assert "team-a" in listed.stdout and secret[:12] in listed.stdout
    assert secret not in listed.stdout
    key_id = next(word for word in listed.stdout.split() if word.startswith("key_"))

    revoked = cli(process_env, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and key_id in revoked.stdout
    assert cli(process_env, "keys", "revoke", "key_unknown").returncode == 1
    bad = cli(process_env, "keys", "create", "--project", "has space")
    assert bad.returncode == 1 and "project" in bad.stderr


def test_serve_refuses_open_mode_on_a_non_loopback_address(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    refused = cli(process_env, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1
    assert "responses-gateway keys create --project" in refused.stderr
    # With a key (or an admin key) it starts; loopback never needs one.
    assert cli(process_env, "keys", "create", "--project", "p").returncode == 0
    served = Served(process_env, tmp_path, "--host", "0.0.0.0")
    try:
        r = httpx.get(f"{served.url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    finally:
        served.stop()


def test_open_mode_serves_loopback_clients(process_env: dict[str, str], tmp_path: Path) -> None:
    served = Served(process_env, tmp_path)
    try:
        assert httpx.get(f"{served.url}/v1/models").status_code == 200
        # A client a local reverse proxy forwards (uvicorn trusts the loopback proxy's
        # X-Forwarded-For) is not on this machine: refused, and told how to make a key.
        remote = httpx.get(f"{served.url}/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
        assert remote.status_code == 401
        error = remote.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert "responses-gateway keys create --project" in error["message"]
    finally:
        served.stop()


def test_sigterm_ends_an_open_stream_with_a_complete_body(
    process_env: dict[str, str], tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Shutdown ends a stream whose client is still reading as if the client had gone, and
    tells the client so: the body ends properly, it is not a dropped connection."""
    upstream.enqueue(Reply(content="one two three four", stall_after=2, stall=3))
    served = Served(process_env, tmp_path)
    body = {"model": "local-llama", "input": "x", "stream": True}
    try:
        with httpx.stream("POST", f"{served.url}/v1/responses", json=body, timeout=20) as r:
            lines = r.iter_lines()
            for line in lines:
                if "response.output_text.delta" in line:
                    break
            served.process.send_signal(signal.SIGTERM)
            rest = list(lines)  # a dropped connection raises RemoteProtocolError here
    finally:
        _, err = served.stop()
    assert not any("response.completed" in line for line in rest)
    assert "without completing response" not in err


def test_sigterm_closes_a_websocket_as_a_restart_and_stores_its_response_cancelled(
    process_env: dict[str, str], tmp_path: Path, upstream: FakeUpstream
) -> None:
    """`serve` (uvloop, the real WebSocket stack): shutdown closes an open WebSocket with 1012,
    a code the SDK reconnects on, and the generation it cut short is stored cancelled."""
    upstream.enqueue(Reply(content="one two three four", stall_after=2, stall=3))
    served = Served(process_env, tmp_path)
    url = served.url.replace("http://", "ws://") + "/v1/responses"
    try:
        with websockets.sync.client.connect(url) as socket_:
            create = {"type": "response.create", "model": "local-llama", "input": "x"}
            socket_.send(json.dumps(create))
            created = json.loads(socket_.recv(timeout=10))
            while json.loads(socket_.recv(timeout=10))["type"] != "response.output_text.delta":
                pass
            served.process.send_signal(signal.SIGTERM)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    socket_.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    finally:
        served.stop()
    again = Served(process_env, tmp_path)
    try:
        stored = httpx.get(f"{again.url}/v1/responses/{created['response']['id']}").json()
    finally:
        again.stop()
    assert stored["status"] == "cancelled" and stored["output"]


def log_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_carry_request_ids_but_no_prompts_or_secrets(
    process_env: dict[str, str], tmp_path: Path, upstream: FakeUpstream
) -> None:
    served = Served(process_env, tmp_path)
    try:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
            client.responses.create(
                model="local-llama",
                input=PROMPT_CANARY,
                instructions=f"instructions {PROMPT_CANARY}",
                extra_headers={"x-request-id": "rid-logs-1"},
            )
            with client.responses.stream(model="local-llama", input=PROMPT_CANARY) as events:
                for _ in events:
                    pass
            upstream.enqueue(Reply(content=f"model says {PROMPT_CANARY}"))
            client.responses.create(model="local-llama", input="x")
        assert upstream.requests[0].headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
    finally:
        out, err = served.stop()
    lines = log_lines(err)  # every line parses as JSON
    access = [line for line in lines if line["logger"] == "app.access"]
    mine = next(line for line in access if line.get("request_id") == "rid-logs-1")
    assert mine["route"] == "/v1/responses" and mine["status"] == 200
    assert mine["model"] == "local-llama" and mine["method"] == "POST"
    assert all(line["request_id"].startswith("req_") for line in access if line is not mine)
    assert PROMPT_CANARY not in err + out
    assert UPSTREAM_SECRET not in err + out


def test_prompts_are_logged_only_when_asked(process_env: dict[str, str], tmp_path: Path) -> None:
    served = Served({**process_env, "GATEWAY_LOG_PROMPTS": "true"}, tmp_path)
    try:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
            client.responses.create(model="local-llama", input=PROMPT_CANARY)
    finally:
        _, err = served.stop()
    prompt = next(line for line in log_lines(err) if line["message"] == "prompt")
    assert prompt["input"] == PROMPT_CANARY and prompt["request_id"].startswith("req_")
    assert UPSTREAM_SECRET not in err


def test_opentelemetry_spans_per_request(process_env: dict[str, str], tmp_path: Path) -> None:
    served = Served({**process_env, "GATEWAY_OTEL": "console"}, tmp_path)
    try:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
            client.responses.create(
                model="local-llama", input="traced", extra_headers={"x-request-id": "rid-otel"}
            )
    finally:
        out, _ = served.stop()
    assert '"name": "POST /v1/responses"' in out
    assert '"gateway.request_id": "rid-otel"' in out
    assert '"gen_ai.request.model": "local-llama"' in out


def test_serve_logs_its_routing_table(process_env: dict[str, str], tmp_path: Path) -> None:
    served = Served(process_env, tmp_path)
    _, err = served.stop()
    routes = [line["message"] for line in log_lines(err) if line["message"].startswith("route: ")]
    assert any(r.startswith("route: local-llama") and "-> chat_completions" in r for r in routes)
    assert any("(api key set)" in r for r in routes) and UPSTREAM_SECRET not in err


def test_serve_without_models_file_starts_and_says_so(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**process_env, "GATEWAY_CONFIG": "", "GATEWAY_ECHO_MODEL": ""}
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENTS"):
        env.pop(name, None)
    served = Served(env, tmp_path)
    try:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
            assert client.models.list().data == []
    finally:
        _, err = served.stop()
    warning = next(line for line in log_lines(err) if "EMPTY" in line["message"])
    assert warning["level"] in ("warning", "WARNING")


def test_serve_flags_override_the_environment(
    process_env: dict[str, str], tmp_path: Path, upstream: FakeUpstream
) -> None:
    flagged = tmp_path / "flagged.yaml"
    flagged.write_text(
        "models:\n  - name: flagged\n    backend: chat_completions\n"
        f"    base_url: {upstream.base_url}\n"
    )
    env = {**process_env, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}"}
    served = Served(
        env, tmp_path, "--database-url", process_env["DATABASE_URL"], "--config", str(flagged)
    )
    try:
        with openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0) as client:
            assert "flagged" in [model.id for model in client.models.list()]
            assert "local-llama" not in [model.id for model in client.models.list()]
    finally:
        served.stop()


def test_no_route_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain `def` dependency in the thread pool: a thread hop per request."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    from app.api import admin, conversations, health, models, responses

    def sync_calls(dependant: Dependant) -> list[str]:
        call = dependant.call
        asynchronous = inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
        found = [] if call is None or asynchronous else [getattr(call, "__name__", repr(call))]
        for sub in dependant.dependencies:
            found += sync_calls(sub)
        return found

    routes = [
        route
        for module in (admin, conversations, health, models, responses)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    assert len(routes) > 10
    offending = {
        route.path: calls
        for route in routes
        if (calls := [c for sub in route.dependant.dependencies for c in sync_calls(sub)])
    }
    assert offending == {}
