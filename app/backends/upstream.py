"""One upstream endpoint: the pooled HTTP client every networked backend owns, and the mapping of
its faults to our errors (done once, here, as httpx's `map_httpcore_exceptions()` does).

Secrets (API keys, Entra tokens, URL credentials) go into headers or `auth` only. Every message
this module builds names the upstream by its public URL and passes the upstream's own text
through `redact`, so an upstream that echoes the key back cannot leak it into an error, a log
line or a stored `failed` response.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.cookiejar import Cookie, CookieJar
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from app.config import ModelConfig, public_url
from app.errors import UpstreamError, UpstreamTimeoutError, UpstreamUnavailableError


def error_message(body: bytes) -> tuple[str, str | None]:
    """The upstream's own error message and code, from the shapes OpenAI and local servers use."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:500].strip() or "(empty body)", None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            return str(error.get("message") or error), code if isinstance(code, str) else None
        for key in ("error", "detail", "message"):
            if isinstance(data.get(key), str):
                return str(data[key]), None
    return str(data)[:500], None


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110 allows both)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an SSE body, from its (decompressed) chunks. One generator instead of
    httpx's `aiter_text` + `aiter_lines` (two more per chunk). SSE ends a line with LF, CR or
    CRLF and nothing else: unlike `str.splitlines` (what `aiter_lines` follows), a U+2028 inside
    a JSON string does not cut its line in two. A CRLF split across two chunks yields one extra
    blank line, which SSE readers skip anyway."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    rest = ""
    async for chunk in chunks:
        text = rest + decoder.decode(chunk)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = text.split("\n")
        for line in lines:
            yield line
    rest += decoder.decode(b"", final=True)
    if rest:
        yield rest


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing. One client serves every tenant's requests, so a cookie
    an upstream sets must not ride along on the next caller's request; and not parsing
    `Set-Cookie` saves work on every answer."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass


class UpstreamClient:
    """POSTs JSON to one URL of one upstream. Created with its backend, closed by `aclose`."""

    def __init__(
        self,
        config: ModelConfig,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: Callable[[], list[str]] | None = None,
    ) -> None:
        # Credentials in the URL become Basic auth (unless another auth is set): the aiohttp
        # transport refuses userinfo in URLs, and a URL is logged where a header is not.
        parts = urlsplit(url)
        if parts.username and auth is None and not headers:
            auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        self.url = public_url(url)
        # Parsed once: httpx would parse a string URL again on every request.
        self._target = httpx.URL(self.url)
        self._auth = auth
        self.where = f"the upstream of model {config.name!r} ({self.url})"
        self._secrets = secrets or (lambda: [])
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        self._client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            headers={
                "content-type": "application/json",
                "accept": "application/json",
                **(headers or {}),
            },
            params=params,
            auth=auth,
            cookies=_NoCookies(),
            timeout=httpx.Timeout(
                config.timeout, connect=config.connect_timeout, pool=config.connect_timeout
            ),
        )

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def transport_error(self, exc: httpx.HTTPError) -> UpstreamError:
        cause = exc.__cause__
        # The aiohttp transport maps every connection error to ConnectTimeout; only a real
        # timeout is a 504.
        timed_out = isinstance(exc, httpx.TimeoutException) and (
            cause is None or isinstance(cause, asyncio.TimeoutError | aiohttp.ServerTimeoutError)
        )
        if timed_out:
            return UpstreamTimeoutError(f"Timed out waiting for {self.where}.")
        detail = type(cause or exc).__name__
        return UpstreamUnavailableError(f"The connection to {self.where} failed: {detail}.")

    def status_error(self, response: httpx.Response, body: bytes) -> UpstreamError:
        status = response.status_code
        message, code = error_message(body)
        message = self.redact(message)
        error: UpstreamError
        if status == 429 or status >= 500:
            verb = "rejected the request" if status == 429 else "failed"
            error = UpstreamUnavailableError(
                f"{self.where.capitalize()} {verb} ({status}): {message}"
            )
            if status == 429:  # relayed as a 429 so that clients back off too
                error.status, error.type = 429, "requests"
                error.code = code or "rate_limit_exceeded"
            error.retry_after = retry_after(response.headers.get("retry-after"))
            if error.retry_after is not None:
                # Relayed with the error, so that the client's own retry (the SDKs honour
                # it) waits as long as the upstream asked rather than hammering it at once.
                error.headers = {"retry-after": str(math.ceil(error.retry_after))}
            return error
        return UpstreamError(
            f"{self.where.capitalize()} rejected the request ({status}): {message}",
            status=status,
            type="invalid_request_error",
            code=code or "upstream_error",
        )

    def malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"{self.where.capitalize()} sent {what}")

    async def post_json(
        self, payload: dict[str, Any], *, url: str | None = None, timeout: float | None = None
    ) -> Any:
        """The decoded JSON answer; raises our errors for transport faults and HTTP errors.
        `url` (another endpoint of the same server, with the same auth) and `timeout` replace
        the client's for this call."""
        try:
            response = await self._client.post(
                self._target if url is None else url,
                content=orjson.dumps(payload),
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from exc
        if response.status_code >= 400:
            raise self.status_error(response, response.content)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(f"a malformed answer: {exc}") from exc

    @asynccontextmanager
    async def stream_lines(self, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        """The answer's lines, for SSE. Transport faults while reading are mapped too; leaving
        the block closes the upstream request at once."""
        try:
            async with self._client.stream(
                "POST", self._target, content=orjson.dumps(payload)
            ) as response:
                if response.status_code >= 400:
                    raise self.status_error(response, await response.aread())
                yield sse_lines(response.aiter_bytes())
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
        close = getattr(self._auth, "aclose", None)  # an Entra credential owns sessions too
        if close is not None:
            await close()
