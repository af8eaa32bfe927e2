"""Upstream faults: a clear status and envelope, a `failed` response kept for 5xx-class faults,
and never a credential in what a client or the database sees."""

from __future__ import annotations

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Stack
from tests.fake_upstream import Disconnect, Fail, Malformed, Reply

SECRET = "sk-upstream-secret"


def create_raw(gw: Stack, model: str = "local-llama", **extra: object) -> httpx.Response:
    return httpx.post(
        f"{gw.gateway.url}/v1/responses",
        json={"model": model, "input": "hi", **extra},
        timeout=30,
    )


def failed_id(message: str) -> str:
    assert "stored as failed: resp_" in message, message
    return message.rsplit(": ", 1)[1].rstrip(".")


def test_upstream_4xx_is_relayed(gw: Stack) -> None:
    gw.upstream.enqueue(
        Fail(400, {"error": {"message": "context too long", "code": "context_length_exceeded"}})
    )
    raw = create_raw(gw)
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert "context too long" in error["message"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert "stored as failed" not in error["message"]  # a rejected request is not a response


def test_a_local_servers_context_error_is_answered_as_openai_answers_it(gw: Stack) -> None:
    """vLLM says the context is too long in words only: the client gets OpenAI's 400 for it
    (`context_length_exceeded`, `param: input`), with the upstream's words kept."""
    message = "This model's maximum context length is 4096 tokens. However, you requested 9000."
    gw.upstream.enqueue(Fail(400, {"object": "error", "message": message, "code": 400}))
    raw = create_raw(gw)
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "context_length_exceeded",
        "input",
        "invalid_request_error",
    )
    assert message in error["message"]


def test_upstream_429_keeps_its_status(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Fail(429, {"error": {"message": "slow down"}}))
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="local-llama", input="hi")


def test_upstream_secret_never_echoed(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}))
    raw = create_raw(gw)
    assert raw.status_code == 401
    assert SECRET not in raw.text and "[redacted]" in raw.text


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        (Fail(500, {"error": {"message": "GPU on fire"}}), 502),
        (Fail(503, "<html>bad gateway</html>"), 502),
        (Malformed(), 502),
        (Malformed('{"choices": []}'), 502),
        (Disconnect(), 502),
    ],
)
def test_upstream_fault_is_502_and_stored_failed(
    client: openai.OpenAI, gw: Stack, behaviour: object, status: int
) -> None:
    gw.upstream.enqueue(behaviour)  # type: ignore[arg-type]
    raw = create_raw(gw)
    assert raw.status_code == status, raw.text
    error = raw.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    stored = client.responses.retrieve(failed_id(error["message"]))
    assert stored.status == "failed"
    assert stored.error is not None and stored.error.code == "server_error"
    assert stored.output == [] and stored.usage is None and stored.completed_at is None


def test_upstream_timeout_is_504(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="too late", delay=2.0))
    raw = create_raw(gw, model="short-timeout")
    assert raw.status_code == 504
    error = raw.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert client.responses.retrieve(failed_id(error["message"])).status == "failed"


def test_unreachable_upstream_hides_url_credentials(gw: Stack) -> None:
    raw = create_raw(gw, model="unreachable")
    assert raw.status_code == 502
    assert "user:pw" not in raw.text and "pw@" not in raw.text
    assert "127.0.0.1:9" in raw.json()["error"]["message"]


def test_store_false_failure_leaves_no_row(gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500))
    raw = create_raw(gw, store=False)
    assert raw.status_code == 502
    assert "stored as failed" not in raw.json()["error"]["message"]


async def _all_rows(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            responses = (await connection.execute(sa.text("SELECT * FROM responses"))).all()
            items = (await connection.execute(sa.text("SELECT * FROM items"))).all()
        return repr(responses) + repr(items)
    finally:
        await engine.dispose()


def test_secrets_never_stored(gw: Stack) -> None:
    import asyncio

    gw.upstream.enqueue(Fail(500, {"error": {"message": f"leaked {SECRET}"}}))
    create_raw(gw)
    rows = asyncio.run(_all_rows(gw.database.url))
    assert SECRET not in rows and "user:pw" not in rows
