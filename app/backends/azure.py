"""Azure OpenAI: the same dialects as OpenAI, at Azure's URLs, with Azure's auth.

URL forms (`endpoint` is `https://<resource>.openai.azure.com`, with or without the `/openai/v1`
of Azure's SDK samples; the model is the deployment):

- `api: responses`, `api_version` unset or `v1`: `{endpoint}/openai/v1/responses`, the
  deployment in the body's `model`; `api_version: preview` adds `?api-version=preview`.
- `api: responses`, a dated `api_version` (`2025-04-01-preview`): the older preview surface,
  `{endpoint}/openai/responses?api-version=…`, deployment in `model`.
- `api: chat_completions`, `api_version` unset, `v1` or `preview`:
  `{endpoint}/openai/v1/chat/completions`.
- `api: chat_completions`, a dated `api_version` (`2024-10-21`), the classic form:
  `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`.

Azure never had a deployment-scoped Responses path: the classic `deployments/{deployment}/…`
form exists for Chat Completions only, so that is served through the Chat Completions
translation (no hosted tools there).

Auth: the `api-key` header, or a Microsoft Entra ID bearer token from an `azure-identity` async
credential (`DefaultAzureCredential` unless one is injected), cached and refreshed five minutes
before it expires, by one request at a time. An upstream 401 means the token expired early or
was revoked: it is fetched again once (with the claims of a CAE challenge, if the 401 carries
one, which makes azure-identity skip its own cache) and the request is retried once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from app.backends.base import Backend
from app.backends.chat_completions import ChatCompletionsBackend
from app.backends.responses import OpenAIBackend
from app.backends.upstream import UpstreamClient
from app.config import ConfigError, ModelConfig
from app.errors import UpstreamError

log = logging.getLogger(__name__)

# Refresh this many seconds before expiry, so that no request leaves with a token about to lapse.
REFRESH_MARGIN = 300.0
# Tokens replaced by a refresh are still redacted: a request that left with one may fail after.
RETIRED_TOKENS = 4
_V1_VERSIONS = {None, "v1", "preview", "latest"}


class TokenCredential(Protocol):
    """What we need of an `azure.identity.aio` credential."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...

    async def close(self) -> None: ...


def challenge_claims(header: str) -> str | None:
    """The claims of a CAE challenge (`WWW-Authenticate: Bearer …, claims="<base64 JSON>"`),
    decoded as azure-core's BearerTokenCredentialPolicy decodes them; None without one."""
    found = re.search(r'claims="([^"]+)"', header)
    if found is None:
        return None
    encoded = found.group(1)
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


class EntraAuth:
    """Bearer auth with a cached Entra ID token, fetched again once on an upstream 401 (an
    `UpstreamAuth`: the client sends the retry)."""

    def __init__(self, credential: TokenCredential, scope: str, where: str) -> None:
        self._credential = credential
        self._scope = scope
        self._where = where
        self._token = ""
        self._expires_on = 0.0
        self._retired: deque[str] = deque(maxlen=RETIRED_TOKENS)
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return time.time() < self._expires_on - REFRESH_MARGIN

    async def token(self, rejected: str | None = None, claims: str | None = None) -> str:
        """The current token; with `rejected` (a token the upstream refused), a new one unless
        another request already replaced it."""
        if rejected is None and self._fresh():
            return self._token
        async with self._lock:  # one refresh at a time; the others reuse its token
            stale = self._token == rejected if rejected is not None else not self._fresh()
            if stale:
                await self._fetch(claims)
        return self._token

    async def _fetch(self, claims: str | None) -> None:
        options = {"claims": claims} if claims else {}
        try:
            access = await self._credential.get_token(self._scope, **options)
        except Exception as exc:  # any credential's failure: azure-identity has many
            log.warning("Entra ID token for %s: %s: %s", self._where, type(exc).__name__, exc)
            raise UpstreamError(
                f"Could not get a Microsoft Entra ID token for {self._where} "
                f"({type(exc).__name__}; see the gateway log)."
            ) from None
        if self._token and self._token != access.token:
            self._retired.append(self._token)
        self._token, self._expires_on = access.token, float(access.expires_on)

    async def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {await self.token()}"}

    async def refresh_after_401(
        self, sent: Mapping[str, str], challenge: str
    ) -> dict[str, str] | None:
        # Expired before its `expires_on` (clock skew) or revoked: once more with a new token.
        token = sent["authorization"].removeprefix("Bearer ")
        fresh = await self.token(rejected=token, claims=challenge_claims(challenge))
        if fresh == token:  # the same token again (a credential's own cache) would fail again
            return None
        return {"authorization": f"Bearer {fresh}"}

    def secrets(self) -> list[str]:
        return [self._token, *self._retired]

    async def aclose(self) -> None:
        await self._credential.close()


def azure_url(config: ModelConfig) -> tuple[str, dict[str, str]]:
    """The URL and query of the upstream, per the table above."""
    # Azure's own v1 samples give the OpenAI SDK `base_url=https://<resource>.openai.azure.com/
    # openai/v1/`; an endpoint copied from there means the resource, not a path below it.
    endpoint = re.sub(r"/openai(/v1)?$", "", config.endpoint or "")
    version = config.api_version
    v1 = version in _V1_VERSIONS
    params = {"api-version": version} if version and version not in ("v1", "latest") else {}
    if config.api == "responses":
        return (f"{endpoint}/openai/v1/responses" if v1 else f"{endpoint}/openai/responses"), params
    if v1:
        return f"{endpoint}/openai/v1/chat/completions", params
    return f"{endpoint}/openai/deployments/{config.target_model}/chat/completions", params


def default_credential() -> TokenCredential:
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            "auth: entra_id needs azure-identity: pip install 'responses-gateway[azure]'"
        ) from None
    return DefaultAzureCredential()


def azure_backend(config: ModelConfig, credential: TokenCredential | None = None) -> Backend:
    """The backend for an `azure` model; `credential` replaces `DefaultAzureCredential`."""
    url, params = azure_url(config)
    where = f"the upstream of model {config.name!r}"
    if config.azure_auth == "entra_id":
        auth = EntraAuth(credential or default_credential(), config.entra_scope, where)
        upstream = UpstreamClient(config, url, params=params, auth=auth, secrets=auth.secrets)
    else:
        secret = config.api_key.get_secret_value() if config.api_key else ""
        upstream = UpstreamClient(
            config, url, params=params, headers={"api-key": secret}, secrets=lambda: [secret]
        )
    if config.api == "chat_completions":
        return ChatCompletionsBackend(config, upstream)
    backend = OpenAIBackend(config, upstream)
    # OpenAI's compaction (its endpoint, `compaction_trigger`, `context_management`) is on the
    # v1 API; a dated version gets the gateway's.
    backend.native_compaction = config.api_version in _V1_VERSIONS
    return backend
