"""Azure OpenAI: the v1 and preview Responses URLs, the classic deployment URL (Chat Completions
only, through the translation), the `api-key` header, and Microsoft Entra ID tokens, fetched by
azure-identity from a local managed-identity endpoint or by an injected credential, cached and
refreshed before they expire."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

import openai
import pytest

from app.backends.azure import REFRESH_MARGIN, azure_backend, azure_url
from app.backends.base import GenerationRequest
from app.config import ModelConfig
from app.errors import UpstreamError
from tests.conftest import AZURE_SECRET, NativeStack
from tests.fake_responses import FakeResponses
from tests.fake_upstream import Fail

USER = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]


def test_v1_with_api_key(native: NativeStack, nclient: openai.OpenAI) -> None:
    response = nclient.responses.create(model="azure-v1", input="hi")
    seen = native.fake.last
    assert (seen.path, seen.query) == ("/openai/v1/responses", {})
    assert seen.headers["api-key"] == AZURE_SECRET and "Authorization" not in seen.headers
    assert seen.body["model"] == "prod-gpt" and seen.body["store"] is False
    assert response.model == "azure-v1" and response.output_text == "native: hi"


def test_endpoint_copied_from_an_sdk_base_url(native: NativeStack, nclient: openai.OpenAI) -> None:
    # `https://<resource>.openai.azure.com/openai/v1/`, as Azure's samples write the SDK's
    # base_url: the same upstream URL as the bare resource endpoint.
    response = nclient.responses.create(model="azure-sdk-url", input="hi")
    assert (native.fake.last.path, native.fake.last.query) == ("/openai/v1/responses", {})
    assert response.output_text == "native: hi"
    for endpoint in ("https://res.openai.azure.com/openai", "https://res.openai.azure.com/"):
        config = ModelConfig(
            name="c",
            backend="azure",
            endpoint=endpoint,
            api_key="k",
            api="chat_completions",
            api_version="2024-10-21",
        )
        assert azure_url(config) == (
            "https://res.openai.azure.com/openai/deployments/c/chat/completions",
            {"api-version": "2024-10-21"},
        )


def test_preview_api_version(native: NativeStack, nclient: openai.OpenAI) -> None:
    nclient.responses.create(model="azure-preview", input="hi")
    seen = native.fake.last
    assert (seen.path, seen.query) == ("/openai/responses", {"api-version": "2025-04-01-preview"})
    assert seen.body["model"] == "azure-preview"


def test_classic_deployment_is_chat_completions(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    response = nclient.responses.create(model="azure-chat", input="hi")
    seen = native.fake.last
    assert seen.path == "/openai/deployments/chat-deployment/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == AZURE_SECRET
    assert response.output_text == "azure chat: hi"


def test_entra_token_from_managed_identity(native: NativeStack, nclient: openai.OpenAI) -> None:
    before = native.fake.tokens_issued
    nclient.responses.create(model="azure-entra", input="hi")
    nclient.responses.create(model="azure-entra", input="again")
    first, second = native.fake.seen
    assert first.headers["Authorization"].startswith("Bearer entra-token-")
    assert second.headers["Authorization"] == first.headers["Authorization"]  # cached
    assert "api-key" not in first.headers
    assert native.fake.tokens_issued - before <= 1


@dataclass
class Token:
    token: str
    expires_on: int


class FakeCredential:
    """What `azure.identity.aio` credentials offer: `get_token(*scopes)` and `close()`."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls: list[tuple[str, ...]] = []
        self.claims: list[str | None] = []
        self.closed = False

    async def get_token(self, *scopes: str, claims: str | None = None) -> Token:
        self.calls.append(scopes)
        self.claims.append(claims)
        return Token(f"injected-{len(self.calls)}", int(time.time() + self.lifetime))

    async def close(self) -> None:
        self.closed = True


def run_twice(
    fake: FakeResponses, credential: FakeCredential, *script: Fail, stream: bool = False
) -> list[str]:
    """Two generations with an injected credential (after `script` is queued upstream); the
    Authorization header of every upstream request, in order."""
    config = ModelConfig(name="entra", backend="azure", endpoint=fake.root, auth="entra_id")

    async def go() -> None:
        backend = azure_backend(config, credential)
        try:
            for _ in range(2):
                request = GenerationRequest(model="dep", items=USER)
                if stream:
                    async for _event in backend.stream(request):
                        pass
                else:
                    await backend.generate(request)
        finally:
            await backend.aclose()

    fake.reset()
    fake.enqueue(*script)
    asyncio.run(go())
    return [seen.headers["Authorization"] for seen in fake.seen]


def test_injected_credential_cached_and_refreshed(responses_upstream: FakeResponses) -> None:
    lasting = FakeCredential(lifetime=3600)
    assert run_twice(responses_upstream, lasting) == ["Bearer injected-1"] * 2
    assert lasting.calls == [("https://cognitiveservices.azure.com/.default",)]
    assert lasting.closed  # the backend closes what it was given, at shutdown
    expiring = FakeCredential(lifetime=REFRESH_MARGIN - 1)  # inside the refresh margin
    assert run_twice(responses_upstream, expiring) == ["Bearer injected-1", "Bearer injected-2"]


def test_entra_token_never_echoed(native: NativeStack, nclient: openai.OpenAI) -> None:
    nclient.responses.create(model="azure-entra", input="hi")
    token = native.fake.last.headers["Authorization"].removeprefix("Bearer ")
    native.fake.enqueue(Fail(401, {"error": {"message": f"Token {token} is not valid here"}}))
    with pytest.raises(openai.AuthenticationError) as caught:
        nclient.responses.create(model="azure-entra", input="hi")
    assert token not in str(caught.value.body) and "[redacted]" in str(caught.value.body)


@pytest.mark.parametrize("stream", [False, True])
def test_entra_token_fetched_again_after_a_401(
    responses_upstream: FakeResponses, stream: bool
) -> None:
    """A token the upstream refuses before its expiry (revoked, clock skew): a new one, once,
    and the request retried once; the next request reuses the new token."""
    credential = FakeCredential(lifetime=3600)
    seen = run_twice(responses_upstream, credential, Fail(401), stream=stream)
    assert seen == ["Bearer injected-1", "Bearer injected-2", "Bearer injected-2"]
    assert len(credential.calls) == 2 and credential.claims == [None, None]


def test_entra_retry_is_once_and_every_token_stays_redacted(
    responses_upstream: FakeResponses,
) -> None:
    credential = FakeCredential(lifetime=3600)
    echo = {"error": {"message": "tokens injected-1 and injected-2 are both unwelcome"}}
    with pytest.raises(UpstreamError) as caught:
        run_twice(responses_upstream, credential, Fail(401), Fail(401, echo))
    assert caught.value.status == 401
    assert "injected-" not in caught.value.message
    assert caught.value.message.count("[redacted]") == 2  # the refreshed one and the one before
    assert len(responses_upstream.seen) == 2 and len(credential.calls) == 2


def test_entra_claims_challenge_refreshes_managed_identity_token(
    native: NativeStack, nclient: openai.OpenAI
) -> None:
    """A CAE challenge's claims make azure-identity skip its cache: DefaultAzureCredential
    fetches a new token from the managed-identity endpoint, and the retry succeeds."""
    nclient.responses.create(model="azure-entra", input="hi")
    before, issued = native.fake.last.headers["Authorization"], native.fake.tokens_issued
    claims = base64.b64encode(b'{"access_token":{"nbf":{"essential":true}}}').decode()
    challenge = f'Bearer error="insufficient_claims", claims="{claims.rstrip("=")}"'
    native.fake.enqueue(Fail(401, headers={"WWW-Authenticate": challenge}))
    response = nclient.responses.create(model="azure-entra", input="again")
    assert response.output_text == "native: again"
    refused, retried = native.fake.seen[-2:]
    assert refused.headers["Authorization"] == before
    assert retried.headers["Authorization"] != before
    assert native.fake.tokens_issued == issued + 1
