"""Real parts: a fake upstream HTTP server, a real database (SQLite file and PostgreSQL), the
gateway served by uvicorn on a free loopback port, and the official `openai` SDK as the client.

PostgreSQL is expected at 127.0.0.1:5432 (override with TEST_POSTGRES_URL). Where none answers,
the Postgres half is skipped with a loud notice — unless REQUIRE_POSTGRES=1 (set by `.ci/run`),
which turns that skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest
import uvicorn

from app.api.protocol import GatewayHttpProtocol
from app.cli import main as cli_main
from app.config import Settings, load_routing
from app.main import create_app
from tests.fake_responses import FakeResponses
from tests.fake_upstream import FakeUpstream

# Fixtures of a gateway with API keys (`tenants`), for any test module.
pytest_plugins = ["tests.tenancy"]

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("REQUIRE_POSTGRES") == "1"
_postgres_notice_given = False


_postgres_problem = ""


def _postgres_available() -> bool:
    global _postgres_problem

    async def probe() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
        return True
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        # Kept for the message: "too many clients" is not the same trouble as no server at all.
        _postgres_problem = f"{type(exc).__name__}: {exc}"
        return False


def _admin(sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def _skip_or_fail_postgres() -> None:
    global _postgres_notice_given
    message = f"PostgreSQL is not reachable at {POSTGRES_URL} ({_postgres_problem})"
    if REQUIRE_POSTGRES:
        pytest.fail(f"{message}, and REQUIRE_POSTGRES=1 forbids skipping the Postgres half.")
    if not _postgres_notice_given:
        _postgres_notice_given = True
        print(f"\n\n*** NOTICE: {message}: SKIPPING every Postgres test. ***\n")  # noqa: T201
    pytest.skip(message)


@dataclass
class Database:
    kind: str
    url: str  # the gateway's DATABASE_URL (async driver)


def new_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    if kind == "sqlite":
        yield Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
        return
    if not _postgres_available():
        _skip_or_fail_postgres()
    name = f"rg_test_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield Database("postgres", f"{base}/{name}")
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_sql(database: Database, query: str) -> list[tuple]:
    """One statement straight on the gateway's database, committed: for tests that need rows
    as an older version of the gateway wrote them."""
    if database.kind == "sqlite":
        connection = sqlite3.connect(database.url.split("///", 1)[1])
        try:
            with connection:
                return connection.execute(query).fetchall()
        finally:
            connection.close()

    async def run() -> list[tuple]:
        connection = await asyncpg.connect(database.url.replace("+asyncpg", "", 1))
        try:
            return [tuple(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh database with no schema, per test."""
    yield from new_database(request.param, tmp_path)


def migrate(url: str, to: str = "head") -> None:
    assert cli_main(["migrate", "--database-url", url, "--to", to]) == 0


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


class GatewayServer:
    """The app served by uvicorn in a thread, on a pre-bound free loopback port."""

    def __init__(self, settings: Settings) -> None:
        models = load_routing(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings, models),
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            http=GatewayHttpProtocol,  # as `serve` runs it
            ws="websockets-sansio",  # as `serve` runs it
            ws_max_size=2 * settings.gateway_max_body_bytes,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._sock.close()


def models_yaml(upstream: FakeUpstream) -> str:
    # `max_retries: 0`: these models exist to show a single upstream fault as the client sees
    # it; retries have their own tests (test_routing.py).
    return f"""
models:
  - name: local-llama
    backend: chat_completions
    base_url: {upstream.base_url}
    api_key: ${{FAKE_UPSTREAM_KEY:-sk-upstream-secret}}
    upstream_model: llama3.2
    context_window: 131072
    max_retries: 0
  - name: local-agent
    backend: chat_completions
    base_url: {upstream.base_url}
    upstream_model: qwen3
    hosted_tools: drop
    max_retries: 0
  - name: short-timeout
    backend: chat_completions
    base_url: {upstream.base_url}
    timeout: 0.5
    max_retries: 0
  - name: unreachable
    backend: chat_completions
    base_url: http://user:pw@127.0.0.1:9/v1
    connect_timeout: 2
    max_retries: 0
  - name: url-credentials
    backend: chat_completions
    base_url: http://us%20er:p%40ss@127.0.0.1:{upstream.port}/v1
    max_retries: 0
  - name: one-connection
    backend: chat_completions
    base_url: {upstream.base_url}
    upstream_model: pool-of-one
    max_connections: 1
    max_retries: 0
  - name: tiny-window
    backend: chat_completions
    base_url: {upstream.base_url}
    upstream_model: gpt-4o-mini
    context_window: 120
    max_retries: 0
  # A local model under an OpenAI name, as teams alias them (the Agents SDK's compaction
  # session insists on one).
  - name: gpt-4.1-mini
    backend: chat_completions
    base_url: {upstream.base_url}
    upstream_model: llama3.2
    max_retries: 0
"""


@contextmanager
def gateway_on(
    database_url: str, upstream: FakeUpstream, tmp_path: Path, **settings: Any
) -> Iterator[GatewayServer]:
    """A gateway of a test's own on a migrated database: the standard models file (in
    `tmp_path`) in front of `upstream`, with these settings on top."""
    config = tmp_path / "models.yaml"
    config.write_text(models_yaml(upstream))
    server = GatewayServer(
        Settings(database_url=database_url, gateway_config=config, **settings)
    ).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Stack:
    gateway: GatewayServer
    upstream: FakeUpstream
    database: Database

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.gateway.url}/v1", api_key="sk-client", max_retries=0, **kwargs
        )


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A migrated database, the fake upstream and a gateway in front of both (one per database
    kind for the whole session; tests reset the upstream, never the database)."""
    tmp = tmp_path_factory.mktemp(f"stack-{request.param}")
    for database in new_database(request.param, tmp):
        migrate(database.url)
        config = tmp / "models.yaml"
        config.write_text(models_yaml(upstream))
        settings = Settings(
            database_url=database.url, gateway_config=config, gateway_sse_keepalive=0.5
        )
        server = GatewayServer(settings).start()
        try:
            yield Stack(server, upstream, database)
        finally:
            server.stop()


@pytest.fixture
def gw(stack: Stack) -> Iterator[Stack]:
    stack.upstream.reset()
    yield stack


@pytest.fixture
def client(gw: Stack) -> Iterator[openai.OpenAI]:
    with gw.client() as c:
        yield c


# --- backends that speak Responses natively, Azure, routing ----------------------------------


@pytest.fixture(scope="session")
def responses_upstream() -> Iterator[FakeResponses]:
    fake = FakeResponses().start()
    yield fake
    fake.stop()


OPENAI_SECRET = "sk-openai-secret"
AZURE_SECRET = "azure-secret-key"


def native_models_yaml(fake: FakeResponses, chat: FakeUpstream) -> str:
    v1 = f"{fake.root}/v1"
    return f"""
models:
  - {{name: gpt-5-mini, backend: openai, base_url: {v1}, api_key: {OPENAI_SECRET}, max_retries: 0}}
  - name: gpt-4o
    backend: openai
    base_url: {v1}
    api_key: {OPENAI_SECRET}
    aliases: [latest]
    max_retries: 2
  - {{name: openai-drop, backend: openai, base_url: {v1}, hosted_tools: drop, max_retries: 0}}
  - {{name: vllm/*, backend: responses, base_url: {v1}, max_retries: 0}}
  - {{name: local-codex, backend: responses, base_url: {v1}, hosted_tools: drop, max_retries: 0}}
  - name: azure-v1
    backend: azure
    endpoint: {fake.root}
    upstream_model: prod-gpt
    api_key: {AZURE_SECRET}
    max_retries: 0
  - name: azure-sdk-url
    backend: azure
    endpoint: {fake.root}/openai/v1/
    upstream_model: prod-gpt
    api_key: {AZURE_SECRET}
    max_retries: 0
  - name: azure-preview
    backend: azure
    endpoint: {fake.root}
    api_version: 2025-04-01-preview
    api_key: {AZURE_SECRET}
  - name: azure-chat
    backend: azure
    api: chat_completions
    endpoint: {fake.root}
    api_version: 2024-10-21
    upstream_model: chat-deployment
    api_key: {AZURE_SECRET}
  - {{name: azure-entra, backend: azure, endpoint: {fake.root}, auth: entra_id}}
  - name: flaky
    backend: openai
    base_url: {v1}
    max_retries: 1
    fallbacks: [dead-end, backup]
  - {{name: dead-end, backend: openai, base_url: "http://127.0.0.1:9/v1", max_retries: 1}}
  - {{name: backup, backend: responses, base_url: {v1}, max_retries: 0}}
  - name: limited
    backend: responses
    base_url: {v1}
    max_concurrency: 1
    queue_timeout: 0.3
  - name: impatient
    backend: responses
    base_url: {v1}
    timeout: 0.5
    max_retries: 3
    fallbacks: [backup]
  - {{name: mixed, backend: openai, base_url: {v1}, fallbacks: [chat-fallback]}}
  - {{name: chat-fallback, backend: chat_completions, base_url: {chat.base_url}}}
"""


@dataclass
class NativeStack:
    gateway: GatewayServer
    fake: FakeResponses
    database: Database

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway.url}/v1", api_key="sk-client", max_retries=0)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def native_stack(
    request: pytest.FixtureRequest,
    upstream: FakeUpstream,
    responses_upstream: FakeResponses,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NativeStack]:
    """A gateway whose models speak Responses natively (OpenAI, Azure, local servers) to the
    fake Responses server. Entra ID tokens come from the fake's managed-identity endpoint,
    found by azure-identity's `DefaultAzureCredential` through App Service's variables."""
    tmp = tmp_path_factory.mktemp(f"native-{request.param}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IDENTITY_ENDPOINT", f"{responses_upstream.root}/msi/token")
        env.setenv("IDENTITY_HEADER", "fake-identity-header")
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
            env.delenv(name, raising=False)
        for database in new_database(request.param, tmp):
            migrate(database.url)
            config = tmp / "models.yaml"
            config.write_text(native_models_yaml(responses_upstream, upstream))
            settings = Settings(database_url=database.url, gateway_config=config)
            server = GatewayServer(settings).start()
            try:
                yield NativeStack(server, responses_upstream, database)
            finally:
                server.stop()


@pytest.fixture
def native(native_stack: NativeStack, upstream: FakeUpstream) -> Iterator[NativeStack]:
    native_stack.fake.reset()
    upstream.reset()
    yield native_stack


@pytest.fixture
def nclient(native: NativeStack) -> Iterator[openai.OpenAI]:
    with native.client() as c:
        yield c


def access_lines(
    caplog: pytest.LogCaptureFixture, closed_websockets: int = 0, requests: int = 0
) -> list[Any]:
    """The access-log records captured so far, once `closed_websockets` WebSocket lines and
    `requests` others are among them: a line is written by the server when it is done with the
    request (or has seen a WebSocket's close), a moment after a client may have moved on."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r for r in caplog.records if hasattr(r, "path")]
        sockets = sum(r.getMessage() == "websocket" for r in lines)
        if sockets >= closed_websockets and len(lines) - sockets >= requests:
            return lines
        assert time.monotonic() < deadline, "the access lines did not all come"
        time.sleep(0.02)
