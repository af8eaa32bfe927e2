"""One upstream endpoint: the pooled HTTP client every networked backend owns, and the mapping of
its faults to our errors (done once, here, as httpx's `map_httpcore_exceptions()` does).

The client is `aiohttp.ClientSession` itself, not httpx on an aiohttp transport: the gateway only
ever POSTs JSON to a few fixed URLs, and httpx's own layers (its header and URL models, the send/
auth/redirect loop, the transport adapter) were 8-10% of the gateway's CPU in a profile, on top of
aiohttp's; without them a request costs 23-30% less CPU (README, Dependencies). What httpx did
for us is kept here, explicitly: no redirects followed, no cookies kept, a read timeout per read
rather than in total, certifi's CA bundle, Basic auth from URL credentials, and an auth hook
(`UpstreamAuth`) that may retry a 401 once.

Secrets (API keys, Entra tokens, URL credentials) go into headers or `auth` only. Every message
this module builds names the upstream by its public URL and passes the upstream's own text
through `redact`, so an upstream that echoes the key back cannot leak it into an error, a log
line or a stored `failed` response.
"""

from __future__ import annotations

import base64
import codecs
import email.utils
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import certifi
import orjson
from yarl import URL

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


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The payloads of the `data:` lines of an SSE body (stripped), from its (decompressed)
    chunks: all our backends read, since `event:` lines repeat the data's type and blank lines
    only separate events. One generator instead of httpx's `aiter_text` + `aiter_lines` (two
    more per chunk), and one step per payload rather than per line. SSE ends a line with LF, CR
    or CRLF and nothing else: unlike `str.splitlines` (what `aiter_lines` follows), a U+2028
    inside a JSON string does not cut its line in two."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    rest = ""
    async for chunk in chunks:
        text = rest + decoder.decode(chunk)
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, rest = text.split("\n")
        for line in lines:
            if line.startswith("data:"):
                yield line[5:].strip()
    rest += decoder.decode(b"", final=True)
    if rest.startswith("data:"):
        yield rest[5:].strip()


class UpstreamAuth(Protocol):
    """Credentials that change while the client lives (an Entra ID token), asked for per request.

    `headers` is awaited before every request, its answer sent with it. After a 401,
    `refresh_after_401` gets the headers that were refused and the `WWW-Authenticate` challenge;
    the headers it returns are sent once more, with the same body, and its None (a new credential
    would be the same one) leaves the 401 to be the answer. Both may raise our `UpstreamError`.
    The client calls `aclose` when it closes."""

    async def headers(self) -> dict[str, str]: ...

    async def refresh_after_401(
        self, sent: Mapping[str, str], challenge: str
    ) -> dict[str, str] | None: ...

    async def aclose(self) -> None: ...


def ssl_context() -> ssl.SSLContext:
    """httpx's default, kept when httpx left: certifi's CA bundle unless `SSL_CERT_FILE` or
    `SSL_CERT_DIR` names another (aiohttp alone would use the system store instead)."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def client_timeout(read: float, connect: float) -> aiohttp.ClientTimeout:
    """httpx's semantics: `read` bounds each wait for bytes, not the whole answer (a long stream
    that keeps sending is fine); `connect` bounds waiting for a pooled connection and opening
    one. No total: aiohttp's session default (5 minutes) would cut long streams."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)


class UpstreamClient:
    """POSTs JSON to one URL of one upstream. Created with its backend, closed by `aclose`.

    The `aiohttp.ClientSession` is made on first use: aiohttp binds it to the running loop, and
    backends are built before one runs (by `check-config`, by tests)."""

    def __init__(
        self,
        config: ModelConfig,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: UpstreamAuth | None = None,
        secrets: Callable[[], list[str]] | None = None,
    ) -> None:
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            **(headers or {}),
        }
        # Credentials in the URL become Basic auth (unless another auth is set): a URL is
        # logged where a header is not.
        parts = urlsplit(url)
        if parts.username and auth is None and not headers:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"  # UTF-8, as httpx
            self._headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self.url = public_url(url)
        self._params = params or {}
        # Parsed once, with the query (Azure's api-version) already in it.
        self._target = self._with_params(self.url)
        self._auth = auth
        self.where = f"the upstream of model {config.name!r} ({self.url})"
        self._secrets = secrets or (lambda: [])
        self._max_connections = config.max_connections
        self._timeout = client_timeout(config.timeout, config.connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        # Built now, not with the session: a bad SSL_CERT_FILE fails at start (and in
        # `check-config`), not as a 500 on every request.
        self._ssl = ssl_context()

    def _with_params(self, url: str) -> URL:
        return URL(url).update_query(self._params) if self._params else URL(url)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                # Under uvicorn's (vLLM's) 5 s: a POST on a connection the server closes at
                # that moment would fail, and aiohttp does not retry a POST.
                keepalive_timeout=4.0,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # One client serves every tenant's requests, so a cookie an upstream sets must
                # not ride along on the next caller's request.
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._timeout,
                auto_decompress=True,  # gzip and deflate, as httpx decoded them
                raise_for_status=False,
            )
        return self._session

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def transport_error(self, exc: aiohttp.ClientError | TimeoutError) -> UpstreamError:
        # aiohttp's own timeouts (connect, pool, each read) are ServerTimeoutErrors, which are
        # also TimeoutErrors; every other fault is a failed connection, named by type.
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(f"Timed out waiting for {self.where}.")
        detail = type(exc).__name__
        return UpstreamUnavailableError(f"The connection to {self.where} failed: {detail}.")

    def status_error(self, response: aiohttp.ClientResponse, body: bytes) -> UpstreamError:
        status = response.status
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

    async def _send(
        self, body: bytes, url: URL, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """The upstream's answer, its body unread (the caller releases it). Redirects are not
        followed (httpx did not either): a 3xx comes back as it is. `timeout` is always passed:
        aiohttp reads a None there as "no timeouts at all"."""
        session = self._client()
        headers = await self._auth.headers() if self._auth is not None else None
        response = await session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        )
        if response.status != 401 or self._auth is None or headers is None:
            return response
        try:
            challenge = response.headers.get("www-authenticate", "")
            retry = await self._auth.refresh_after_401(headers, challenge)
            if retry is None:
                return response
            await response.read()  # read and released, so that its connection serves the retry
        except BaseException:
            response.close()
            raise
        return await session.post(
            url, data=body, headers=retry, timeout=timeout, allow_redirects=False
        )

    async def post_json(
        self, payload: dict[str, Any], *, url: str | None = None, timeout: float | None = None
    ) -> Any:
        """The decoded JSON answer; raises our errors for transport faults and HTTP errors.
        `url` (another endpoint of the same server, with the same auth) and `timeout` replace
        the client's for this call."""
        target = self._target if url is None else self._with_params(url)
        limits = self._timeout if timeout is None else client_timeout(timeout, timeout)
        try:
            response = await self._send(orjson.dumps(payload), target, limits)
            async with response:
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc
        if response.status >= 400:
            raise self.status_error(response, body)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise self.malformed(f"a malformed answer: {exc}") from exc

    @asynccontextmanager
    async def stream_data(self, payload: dict[str, Any]) -> AsyncIterator[AsyncIterator[str]]:
        """The answer's SSE `data:` payloads (`sse_data`). Transport faults while reading are
        mapped too; leaving the block early (a break, an error, a cancelled task) closes the
        upstream connection at once, which is how the upstream learns that nobody reads any
        more."""
        try:
            response = await self._send(orjson.dumps(payload), self._target, self._timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.transport_error(exc) from exc
        try:
            if response.status >= 400:
                try:
                    body = await response.read()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise self.transport_error(exc) from exc
                raise self.status_error(response, body)
            try:
                yield sse_data(response.content.iter_any())
            except aiohttp.ClientError as exc:  # raised while the caller read the lines
                raise self.transport_error(exc) from exc
        except BaseException:
            response.close()
            raise
        # Read to the end: released, its connection kept alive. Left early: closed.
        response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._auth is not None:  # an Entra credential owns sessions too
            await self._auth.aclose()
