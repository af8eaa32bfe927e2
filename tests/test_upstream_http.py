"""What the upstream client does on the wire, seen from the fake upstream: no redirects followed,
no cookies kept, compressed answers decoded, URL credentials sent as Basic auth, the pool limit
per model, and a read timeout that bounds each read rather than the whole answer."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import openai

from tests.conftest import Stack
from tests.fake_upstream import Fail, Reply
from tests.test_upstream_faults import create_raw
from tests.wire import stream_raw, strict_stream


def test_redirect_is_not_followed(gw: Stack) -> None:
    elsewhere = f"{gw.upstream.base_url}/chat/completions?moved=1"
    gw.upstream.enqueue(Fail(307, {"moved": True}, headers={"location": elsewhere}))
    raw = create_raw(gw)
    assert raw.status_code == 502, raw.text  # a 3xx is not an answer
    assert len(gw.upstream.requests) == 1


def test_cookies_are_not_kept(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="one", headers={"set-cookie": "session=abc; Path=/"}))
    assert client.responses.create(model="local-llama", input="hi").output_text == "one"
    client.responses.create(model="local-llama", input="again")
    assert "cookie" not in {key.lower() for key in gw.upstream.last.headers}


def test_gzip_answers_are_decoded(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="packed small", gzip=True))
    assert client.responses.create(model="local-llama", input="hi").output_text == "packed small"
    assert "gzip" in gw.upstream.last.headers["Accept-Encoding"]
    gw.upstream.enqueue(Reply(content="packed stream", gzip=True))
    result = stream_raw(gw.gateway.url, {"model": "local-llama", "input": "hi", "stream": True})
    strict_stream(result)
    assert result.terminal["response"]["output"][0]["content"][0]["text"] == "packed stream"


def test_url_credentials_become_basic_auth(client: openai.OpenAI, gw: Stack) -> None:
    client.responses.create(model="url-credentials", input="hi")
    expected = base64.b64encode(b"us er:p@ss").decode()
    assert gw.upstream.last.headers["Authorization"] == f"Basic {expected}"
    assert gw.upstream.last.path == "/v1/chat/completions"


def test_pool_limit_per_model(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(*[Reply(content="slow", delay=0.3)] * 3)
    with ThreadPoolExecutor(3) as pool:
        texts = list(
            pool.map(
                lambda _: client.responses.create(model="one-connection", input="x").output_text,
                range(3),
            )
        )
    assert texts == ["slow"] * 3
    assert gw.upstream.max_in_flight["pool-of-one"] == 1  # two waited for the one connection


def test_read_timeout_is_per_read_not_total(gw: Stack) -> None:
    # short-timeout allows 0.5 s per read; this answer takes ~1.2 s in all, never 0.5 s silent.
    gw.upstream.enqueue(Reply(content="a b c d e f g", token_delay=0.2))
    result = stream_raw(gw.gateway.url, {"model": "short-timeout", "input": "x", "stream": True})
    strict_stream(result)
    assert result.terminal["type"] == "response.completed"
