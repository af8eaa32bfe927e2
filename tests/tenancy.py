"""A gateway with keys: the admin key set, two projects' keys (`alpha`, `beta`) created through
the admin API, on both databases. Import the fixtures into a test module to use them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.config import Settings
from tests.conftest import Database, GatewayServer, migrate, models_yaml, new_database
from tests.fake_upstream import FakeUpstream, Reply

ADMIN_KEY = "admin-key-for-tests-0123456789"
CACHE_SECONDS = 0.5
TERMINAL = {"completed", "failed", "incomplete", "cancelled"}


@dataclass
class Tenants:
    gateway: GatewayServer
    upstream: FakeUpstream
    database: Database
    settings: Settings
    a: str  # key of project "alpha"
    b: str  # key of project "beta"

    def client(self, key: str, gateway: GatewayServer | None = None) -> openai.OpenAI:
        url = (gateway or self.gateway).url
        return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

    def admin(self, method: str, path: str, key: str = ADMIN_KEY, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"}
        return httpx.request(
            method, f"{self.gateway.url}{path}", headers=headers, timeout=10, **kwargs
        )

    def new_key(self, project: str, **limits: int) -> str:
        created = self.admin("POST", "/admin/keys", json={"project": project, **limits})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def tenant_settings(database: Database, config: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database.url,
        "gateway_config": config,
        "gateway_sse_keepalive": 0.5,
        "gateway_admin_key": ADMIN_KEY,
        "gateway_key_cache_seconds": CACHE_SECONDS,
        "gateway_usage_flush_seconds": 0.1,
        "gateway_max_input_items": 50,
        "gateway_max_body_bytes": 100_000,
        "gateway_job_poll_seconds": 0.2,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def tenants_stack(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tenants]:
    tmp = tmp_path_factory.mktemp(f"tenants-{request.param}")
    for database in new_database(request.param, tmp):
        migrate(database.url)
        config = tmp / "models.yaml"
        config.write_text(models_yaml(upstream))
        settings = tenant_settings(database, config)
        server = GatewayServer(settings).start()
        try:
            stack = Tenants(server, upstream, database, settings, "", "")
            stack.a = stack.new_key("alpha")
            stack.b = stack.new_key("beta")
            yield stack
        finally:
            server.stop()


@pytest.fixture
def tenants(tenants_stack: Tenants) -> Tenants:
    tenants_stack.upstream.reset()
    return tenants_stack


def failure(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, dict):
            for _ in result:  # a stream: the status arrives with the first read
                pass
    body = caught.value.body
    assert isinstance(body, dict)
    return caught.value.status_code, body


def same_as_missing(
    foreign_id: str, missing_id: str, call: Callable[[str], Any]
) -> tuple[int, dict[str, Any]]:
    """The error for another project's id equals the error for an id that never existed."""
    status, body = failure(lambda: call(foreign_id))
    missing_status, missing_body = failure(lambda: call(missing_id))
    assert status == missing_status == 404
    assert json.dumps(body).replace(foreign_id, "ID") == json.dumps(missing_body).replace(
        missing_id, "ID"
    )
    return status, body


def wait_status(
    client: openai.OpenAI, response_id: str, wanted: set[str], timeout: float = 20
) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = client.responses.retrieve(response_id).status or ""
        if status in wanted:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{response_id} stayed {status}")


def slow(words: int = 60, delay: float = 0.05) -> Reply:
    return Reply(content=" ".join(f"w{i}" for i in range(words)), token_delay=delay)
