"""`POST /v1/responses` is answered by the raw-ASGI fast path (app/api/fastpath.py), and a
client cannot tell it from the FastAPI route it stands in for."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import app.api.fastpath
from app.core.responses import ResponsesService
from tests.conftest import Stack
from tests.test_operations import samples

BODY = {"model": "local-llama", "input": "hello"}
AUTH = {"authorization": "Bearer sk-client"}


def test_create_is_served_by_the_fast_path(gw: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    create = app.api.fastpath.create

    async def counted(*args: Any) -> Any:
        calls.append("fast")
        return await create(*args)

    monkeypatch.setattr(app.api.fastpath, "create", counted)
    # A query string does not take the request off the fast path.
    reply = httpx.post(f"{gw.gateway.url}/v1/responses?x=1", json=BODY, headers=AUTH)
    assert reply.status_code == 200 and reply.json()["object"] == "response"
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"].startswith("req_")
    assert calls == ["fast"]
    # The FastAPI route is still there for the OpenAPI document.
    paths = httpx.get(f"{gw.gateway.url}/openapi.json").json()["paths"]
    assert "post" in paths["/v1/responses"]


def test_fast_path_errors_keep_the_envelope(gw: Stack) -> None:
    bad = httpx.post(
        f"{gw.gateway.url}/v1/responses", content=b"{nope", headers={**AUTH, "x-request-id": "r-1"}
    )
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "r-1"
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    wrong = httpx.get(f"{gw.gateway.url}/v1/responses")  # another method: FastAPI's 405
    assert wrong.status_code == 405
    assert wrong.json()["error"]["message"] == "Invalid URL (GET /v1/responses)"


def test_unexpected_error_in_create_is_the_500_envelope_and_counted_on_the_route(
    gw: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ResponsesService, "prepare", broken)
    reply = httpx.post(f"{gw.gateway.url}/v1/responses", json=BODY, headers=AUTH)
    assert reply.status_code == 500
    assert reply.json() == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }
    text = httpx.get(f"{gw.gateway.url}/metrics").text
    requests = {
        (labels["route"], labels["method"], labels["model"], labels["status"])
        for labels, _ in samples(text, "gateway_requests_total")
    }
    assert ("/v1/responses", "POST", "local-llama", "500") in requests
