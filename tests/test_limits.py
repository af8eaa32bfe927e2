"""Per-key limits (requests and tokens per minute, shared by replicas through the database),
request size limits, and usage accounting — over real HTTP with keys on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import GatewayServer
from tests.fake_upstream import Reply
from tests.tenancy import Tenants, failure


def away_from_minute_boundary(margin: float = 8.0) -> None:
    """Windows are fixed minutes: start a counting test where it cannot straddle two."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.2)


def post(url: str, key: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/responses",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_requests_per_minute_gives_429_with_openai_headers(tenants: Tenants) -> None:
    key = tenants.new_key("rpm-project", rpm=2)
    away_from_minute_boundary()
    body = {"model": "local-llama", "input": "hi"}
    first = post(tenants.gateway.url, key, body)
    second = post(tenants.gateway.url, key, body)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit on this key

    upstream_calls = len(tenants.upstream.requests)
    third = post(tenants.gateway.url, key, body)
    assert third.status_code == 429
    error = third.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(tenants.upstream.requests) == upstream_calls  # refused before the upstream

    # The SDK sees a RateLimitError; other keys are not affected.
    with tenants.client(key) as limited:
        status, _ = failure(lambda: limited.responses.create(model="local-llama", input="x"))
        assert status == 429
    with tenants.client(tenants.a) as other:
        assert other.responses.create(model="local-llama", input="x").status == "completed"


def test_tokens_per_minute_counts_usage_then_refuses(tenants: Tenants) -> None:
    key = tenants.new_key("tpm-project", tpm=20)
    away_from_minute_boundary()
    first = post(tenants.gateway.url, key, {"model": "local-llama", "input": "hi"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    time.sleep(0.5)  # usage is flushed every 0.1 s here
    second = post(tenants.gateway.url, key, {"model": "local-llama", "input": "hi"})
    assert second.status_code == 200  # 18 tokens used of 20: still under
    assert second.headers["x-ratelimit-remaining-tokens"] == "2"
    time.sleep(0.5)
    third = post(tenants.gateway.url, key, {"model": "local-llama", "input": "hi"})
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "tokens"
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "retry-after" in third.headers


def test_requests_per_minute_hold_across_two_gateways_under_concurrency(
    tenants: Tenants,
) -> None:
    key = tenants.new_key("shared-limit", rpm=7)
    replica = GatewayServer(tenants.settings).start()
    try:
        away_from_minute_boundary(margin=15)
        urls = [tenants.gateway.url, replica.url] * 15
        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = list(
                pool.map(
                    lambda url: post(url, key, {"model": "local-llama", "input": "x"}).status_code,
                    urls,
                )
            )
    finally:
        replica.stop()
    assert sorted(statuses) == [200] * 7 + [429] * 23


def test_request_size_limits(tenants: Tenants) -> None:
    with tenants.client(tenants.a) as a:
        items = [{"role": "user", "content": "x"}] * 51
        status, error = failure(lambda: a.responses.create(model="local-llama", input=items))
        assert status == 400 and error["param"] == "input"
        assert error["code"] == "array_above_max_length"

        status, error = failure(
            lambda: a.responses.create(model="local-llama", input="x" * 200_000)
        )
        assert status == 413 and error["code"] == "request_too_large"

        metadata = {f"k{i}": "v" for i in range(17)}
        status, error = failure(
            lambda: a.responses.create(model="local-llama", input="x", metadata=metadata)
        )
        assert status == 400 and error["param"] == "metadata"
    assert not tenants.upstream.requests


def usage_rows(rows: list[dict[str, object]], project: str) -> list[dict[str, object]]:
    return [row for row in rows if row["project"] == project]


def test_usage_is_accounted_per_project_model_and_day(tenants: Tenants) -> None:
    key = tenants.new_key("metered")
    with tenants.client(key) as client:
        client.responses.create(model="local-llama", input="one")
        with client.responses.stream(model="local-llama", input="two") as events:
            for _ in events:
                pass
        job = client.responses.create(model="local-llama", input="three", background=True)
        deadline = time.monotonic() + 20
        while client.responses.retrieve(job.id).status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    time.sleep(0.5)  # the usage flush

    today = time.strftime("%Y-%m-%d", time.gmtime())
    report = tenants.admin("GET", "/admin/usage", params={"project": "metered", "start": today})
    assert report.status_code == 200
    [row] = report.json()["data"]
    assert row["day"] == today and row["model"] == "local-llama"
    assert row["requests"] == 3
    assert row["input_tokens"] == 33 and row["output_tokens"] == 21
    assert row["not_completed"] == 0

    # The CLI reads the same numbers from the database.
    env = {**os.environ, "DATABASE_URL": tenants.database.url}
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "usage", "--project", "metered", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert usage_rows(json.loads(out.stdout), "metered") == [row]
    table = subprocess.run(
        [sys.executable, "-m", "app.cli", "usage"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "metered" in table.stdout and "INPUT_TOKENS" in table.stdout

    bad = tenants.admin("GET", "/admin/usage", params={"start": "yesterday"})
    assert bad.status_code == 400


def usage_records(url: str, response_id: str) -> list[dict[str, object]]:
    """The usage rows of one response, read straight from the database."""

    async def read() -> list[dict[str, object]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT * FROM usage WHERE response_id = :id"), {"id": response_id}
                )
                return [dict(row._mapping) for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_each_generation_is_recorded_with_who_what_and_cost(tenants: Tenants) -> None:
    created = tenants.admin("POST", "/admin/keys", json={"project": "itemised"}).json()
    tenants.upstream.enqueue(
        Reply(
            content="thought it through",
            usage={
                "prompt_tokens": 20,
                "completion_tokens": 9,
                "prompt_tokens_details": {"cached_tokens": 5},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        )
    )
    with tenants.client(created["key"]) as client:
        response = client.responses.create(model="local-llama", input="why?")
    time.sleep(0.5)  # the usage flush
    [record] = usage_records(tenants.database.url, response.id)
    assert record["project"] == "itemised" and record["key_id"] == created["id"]
    assert (record["model"], record["backend"], record["status"]) == (
        "local-llama",
        "chat_completions",
        "completed",
    )
    assert (record["input_tokens"], record["output_tokens"]) == (20, 9)
    assert (record["cached_tokens"], record["reasoning_tokens"]) == (5, 4)
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] > 0
    [row] = tenants.admin("GET", "/admin/usage", params={"project": "itemised"}).json()["data"]
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (5, 4)


def test_failed_and_cancelled_generations_are_accounted(tenants: Tenants) -> None:
    from tests.fake_upstream import Fail

    key = tenants.new_key("failing")
    tenants.upstream.enqueue(Fail(500))
    with tenants.client(key) as client:
        status, _ = failure(lambda: client.responses.create(model="local-llama", input="x"))
        assert status == 502
    time.sleep(0.5)
    [row] = usage_rows(tenants.admin("GET", "/admin/usage").json()["data"], "failing")
    assert row["requests"] == 1 and row["not_completed"] == 1
