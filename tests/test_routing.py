"""Routing: aliases, retries (only before output, with backoff and `Retry-After`), fallbacks in
order, the model that answered reported, per-model concurrency limits, timeouts, and no
upstream secret in what clients, logs or the database see."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.backends.routing import MAX_RETRY_AFTER, backoff
from app.backends.upstream import retry_after
from tests.conftest import AZURE_SECRET, OPENAI_SECRET, NativeStack
from tests.fake_responses import Answer
from tests.fake_upstream import Disconnect, Fail
from tests.wire import stream_raw, strict_stream


def models_called(native: NativeStack) -> list[str]:
    return [seen.body["model"] for seen in native.fake.seen]


def test_retry_after_429(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Fail(429, headers={"Retry-After": "1"}), Answer(text="finally"))
    started = time.monotonic()
    response = nclient.responses.create(model="latest", input="hi")  # an alias of gpt-4o
    assert time.monotonic() - started >= 1.0
    assert response.output_text == "finally" and response.model == "latest"
    assert models_called(native) == ["gpt-4o", "gpt-4o"]


def test_retries_exhausted_relay_the_status(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(*[Fail(429, headers={"Retry-After": "0"})] * 3)
    with pytest.raises(openai.RateLimitError):
        nclient.responses.create(model="gpt-4o", input="hi")
    assert len(native.fake.seen) == 3  # max_retries: 2


def test_streams_retry_before_output(native: NativeStack) -> None:
    native.fake.enqueue(Fail(503, headers={"Retry-After": "0"}), Disconnect(), Answer(text="ok"))
    result = stream_raw(native.gateway.url, {"model": "gpt-4o", "input": "hi"})
    strict_stream(result)
    assert result.terminal["type"] == "response.completed"
    assert len(native.fake.seen) == 3


def test_no_retry_after_first_byte(native: NativeStack) -> None:
    native.fake.enqueue(Answer(text="a b c d e f g", drop_after=5), Answer(text="again"))
    result = stream_raw(native.gateway.url, {"model": "gpt-4o", "input": "hi"})
    strict_stream(result)
    assert result.types[-2:] == ["error", "response.failed"]
    assert len(native.fake.seen) == 1  # gpt-4o has max_retries: 2, unused once output began


def test_fallbacks_in_order(native: NativeStack, nclient: openai.OpenAI) -> None:
    # flaky: 503 twice (max_retries 1) → dead-end: connection refused twice → backup answers.
    native.fake.enqueue(Fail(503, headers={"Retry-After": "0"}), Fail(503), Answer(text="saved"))
    response = nclient.responses.create(model="flaky", input="hi")
    assert response.output_text == "saved" and response.model == "backup"
    assert models_called(native) == ["flaky", "flaky", "backup"]
    assert nclient.responses.retrieve(response.id).model == "backup"
    native.fake.reset()
    native.fake.enqueue(Fail(500, headers={"Retry-After": "0"}), Fail(500), Answer(text="saved"))
    result = stream_raw(native.gateway.url, {"model": "flaky", "input": "hi"})
    strict_stream(result)
    assert result.events[0]["response"]["model"] == "flaky"
    assert result.terminal["response"]["model"] == "backup"


def test_no_fallback_on_client_errors(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Fail(400, {"error": {"message": "bad input", "code": "invalid_value"}}))
    with pytest.raises(openai.BadRequestError):
        nclient.responses.create(model="flaky", input="hi")
    assert models_called(native) == ["flaky"]


def test_timeout_falls_back_without_retry(native: NativeStack, nclient: openai.OpenAI) -> None:
    native.fake.enqueue(Answer(delay=2), Answer(text="in time"))
    response = nclient.responses.create(model="impatient", input="hi")
    assert response.model == "backup" and response.output_text == "in time"
    assert models_called(native) == ["impatient", "backup"]  # max_retries 3, but not for timeouts


def test_concurrency_limit(native: NativeStack) -> None:
    native.fake.enqueue(Answer(delay=1.5), Answer(delay=1.5))
    outcomes: list[object] = []

    def call() -> None:
        with native.client() as client:
            try:
                outcomes.append(client.responses.create(model="limited", input="hi").status)
            except openai.RateLimitError as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    for thread in threads:
        thread.join(10)
    # The second waited queue_timeout (0.3 s) for the one slot, then got a 429.
    assert sorted(map(str, outcomes)) == ["completed", "rate_limit_exceeded"]
    assert native.fake.max_in_flight["limited"] == 1


def test_queued_request_gets_the_slot(native: NativeStack) -> None:
    native.fake.enqueue(Answer(delay=0.1), Answer(delay=0.1))
    outcomes: list[str] = []

    def call() -> None:
        with native.client() as client:
            outcomes.append(client.responses.create(model="limited", input="hi").status)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == ["completed", "completed"] and native.fake.max_in_flight["limited"] == 1


def test_secrets_never_leak(
    native: NativeStack, nclient: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    echoed = {"error": {"message": f"Incorrect API key provided: {OPENAI_SECRET}"}}
    native.fake.enqueue(Fail(401, echoed))
    with pytest.raises(openai.AuthenticationError) as caught:
        nclient.responses.create(model="gpt-4o", input="hi")
    assert OPENAI_SECRET not in str(caught.value) and "[redacted]" in str(caught.value)
    native.fake.enqueue(*[Fail(500, {"error": {"message": f"bad key {OPENAI_SECRET}"}})] * 3)
    with pytest.raises(openai.InternalServerError) as failed:
        nclient.responses.create(model="gpt-4o", input="hi")  # retried (logged), then stored
    assert OPENAI_SECRET not in str(failed.value)
    native.fake.enqueue(Fail(403, {"error": {"message": f"key {AZURE_SECRET} is wrong"}}))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        nclient.responses.create(model="azure-v1", input="hi")
    assert AZURE_SECRET not in str(denied.value)
    assert "retry 1" in caplog.text
    metrics = httpx.get(f"{native.gateway.url}/metrics").text
    assert "gateway_requests" in metrics
    for secret in (OPENAI_SECRET, AZURE_SECRET):
        assert secret not in caplog.text
        assert secret not in stored_text(native)
        assert secret not in metrics


def stored_text(native: NativeStack) -> str:
    async def dump() -> str:
        engine = create_async_engine(native.database.url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(sa.text("SELECT body FROM responses"))
                items = await connection.execute(sa.text("SELECT data FROM items"))
                return repr(rows.all()) + repr(items.all())
        finally:
            await engine.dispose()

    return asyncio.run(dump())


def test_backoff_and_retry_after() -> None:
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.0 < (retry_after(later) or 0) <= 5.0
    assert backoff(0, 1.5) == 1.5
    assert backoff(0, MAX_RETRY_AFTER + 1) is None  # too long to hold the client: give up
    for attempt in range(6):
        delay = backoff(attempt, None)
        assert delay is not None and 0 < delay <= 8.0


def test_upstream_retry_after_reaches_the_client(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    # Longer than MAX_RETRY_AFTER: no retry here, the client is told how long to wait instead.
    native.fake.enqueue(Fail(429, headers={"Retry-After": "45"}))
    with pytest.raises(openai.RateLimitError) as caught:
        nclient.responses.create(model="gpt-4o", input="hi")
    assert caught.value.response.headers["retry-after"] == "45"
    assert len(native.fake.seen) == 1
    later = email.utils.formatdate(time.time() + 40, usegmt=True)  # an HTTP date, as seconds
    native.fake.enqueue(Fail(503, headers={"Retry-After": later}))
    with pytest.raises(openai.InternalServerError) as failed:
        nclient.responses.create(model="gpt-4o", input="hi")
    assert 35 <= int(failed.value.response.headers["retry-after"]) <= 40


def test_background_job_reports_the_fallback_that_answered(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    native.fake.enqueue(Fail(503, headers={"Retry-After": "0"}), Fail(503), Answer(text="saved"))
    created = nclient.responses.create(model="flaky", input="hi", background=True)
    assert created.model == "flaky"
    deadline = time.monotonic() + 15
    while (done := nclient.responses.retrieve(created.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status == "completed" and done.output_text == "saved"
    assert done.model == "backup"
    assert models_called(native) == ["flaky", "flaky", "backup"]
