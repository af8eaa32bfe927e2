"""One upstream endpoint: the pooled HTTP client every networked backend owns, and the mapping of
its faults to our errors (done once, here, as httpx's `map_httpcore_exceptions()` does).

The client is the gateway's own small HTTP/1.1 client (`app.backends.http`: a connection pool,
httptools for the answers), neither httpx nor aiohttp's `ClientSession`: the gateway only ever
POSTs JSON to a few fixed URLs, and those libraries' general request paths cost more CPU than the
rest of a request's upstream call (README, Dependencies). What httpx did for us is kept here,
explicitly: no redirects followed, no cookies kept, gzip and deflate answers decoded, a read
timeout per read rather than in total, certifi's CA bundle, Basic auth from URL credentials, and
an auth hook (`UpstreamAuth`) that may retry a 401 once.

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
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, unquote, urlencode, urlsplit

import certifi
import orjson

from app.backends.http import ConnectionPool, ReadTimeout, Response, TransportError
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


# How OpenAI-compatible servers say a request does not fit the model's context when they give no
# `context_length_exceeded` code: vLLM ("This model's maximum context length is 4096 tokens",
# "… is longer than the maximum model length of 4096"), SGLang ("… longer than the model's
# context length"), llama.cpp ("the request exceeds the available context size",
# `exceed_context_size_error`), and others ("context window", "context length exceeded").
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length|maximum model length|model's context length|context size"
    r"|context window|context length exceeded|exceed_context_size",
    re.IGNORECASE,
)


def context_overflow(status: int, message: str, code: str | None) -> bool:
    """Whether an upstream's 4xx says the request is longer than the model's context."""
    if code == "context_length_exceeded":
        return True
    return status in (400, 413, 422) and _CONTEXT_OVERFLOW.search(message) is not None


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
    `SSL_CERT_DIR` names another (Python's default would be the system store instead)."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


USER_AGENT = "responses-gateway"
_URL_SAFE = "/?#[]@!$&'()*+,;=:-._~%"
# Idle connections are closed after this long: under uvicorn's (vLLM's) 5 s, since a POST sent on
# a connection the server closes at that moment would fail, and a POST is not retried.
KEEPALIVE_SECONDS = 4.0


class Timeouts(NamedTuple):
    """httpx's semantics: `read` bounds each wait for bytes, not the whole answer (a long stream
    that keeps sending is fine); `connect` bounds waiting for a pooled connection and opening
    one. There is no total."""

    read: float
    connect: float


def _header_block(headers: Mapping[str, str]) -> bytes:
    """Header lines, refused if a name or value could end a line early (header injection)."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid upstream header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1", "strict")
    except UnicodeEncodeError as exc:
        raise ValueError("an upstream header holds a character HTTP/1.1 cannot carry") from exc


class _Target(NamedTuple):
    """One URL: the pool of its server, and the request line and fixed headers, encoded."""

    pool: ConnectionPool
    head: bytes


class UpstreamClient:
    """POSTs JSON to one URL of one upstream. Created with its backend, closed by `aclose`.

    Requests go through `app.backends.http`'s connection pool, one per server (a `url` passed
    to `post_json` may name another path of the same server, or another server)."""

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
            "accept-encoding": "gzip, deflate",
            "user-agent": USER_AGENT,
            **(headers or {}),
        }
        # Credentials in the URL become Basic auth (unless another auth is set): a URL is
        # logged where a header is not.
        parts = urlsplit(url)
        if parts.username and auth is None and not headers:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"  # UTF-8, as httpx
            self._headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        self._fixed = _header_block(self._headers)
        self.url = public_url(url)
        self._params = params or {}
        self._auth = auth
        self.where = f"the upstream of model {config.name!r} ({self.url})"
        self._secrets = secrets or (lambda: [])
        self._max_connections = config.max_connections
        self._timeout = Timeouts(config.timeout, config.connect_timeout)
        # Built now: a bad SSL_CERT_FILE fails at start (and in `check-config`), not as a 500
        # on every request.
        self._ssl = ssl_context()
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}
        self._targets: dict[str, _Target] = {}
        # Parsed once, with the query (Azure's api-version) already in it.
        self._target = self._target_of(self.url)

    def _target_of(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is not None:
            return target
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {public_url(url)}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = ConnectionPool(
                parts.hostname,
                port,
                ssl_context=self._ssl if tls else None,
                limit=self._max_connections,
                connect_timeout=self._timeout.connect,
                keepalive=KEEPALIVE_SECONDS,
            )
        query = "&".join(q for q in (parts.query, urlencode(self._params)) if q)
        # As yarl did: anything outside ASCII (or a space) percent-encoded, escapes kept.
        path = quote((parts.path or "/") + (f"?{query}" if query else ""), safe=_URL_SAFE)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            host += f":{parts.port}"
        if any(c in path for c in " \r\n\0"):
            raise ValueError(f"invalid upstream URL path: {public_url(url)}")
        head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1") + self._fixed
        target = self._targets[url] = _Target(pool, head)
        return target

    def redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    def transport_error(self, exc: TransportError | TimeoutError) -> UpstreamError:
        # The client's timeouts (connect, pool, each read) are TimeoutErrors; every other fault
        # is a failed connection, with what failed.
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(f"Timed out waiting for {self.where}.")
        detail = self.redact(str(exc)) or type(exc).__name__
        return UpstreamUnavailableError(f"The connection to {self.where} failed: {detail}.")

    def status_error(self, response: Response, body: bytes) -> UpstreamError:
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
        else:
            overflow = context_overflow(status, message, code)
            error = UpstreamError(
                f"{self.where.capitalize()} rejected the request ({status}): {message}",
                status=400 if overflow else status,
                type="invalid_request_error",
                # As OpenAI answers a context too long for the model (clients such as Codex
                # tell it from other faults by this code).
                code="context_length_exceeded" if overflow else code or "upstream_error",
                param="input" if overflow else None,
            )
        error.upstream_status = status
        return error

    def malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"{self.where.capitalize()} sent {what}")

    async def _send(self, body: bytes, target: _Target, timeout: Timeouts) -> Response:
        """The upstream's answer, its body unread (the caller releases it). Redirects are not
        followed (httpx did not either): a 3xx comes back as it is."""
        headers = await self._auth.headers() if self._auth is not None else None
        response = await self._post(target, body, headers, timeout)
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
        return await self._post(target, body, retry, timeout)

    @staticmethod
    async def _post(
        target: _Target, body: bytes, headers: Mapping[str, str] | None, timeout: Timeouts
    ) -> Response:
        extra = _header_block(headers) if headers else b""
        data = b"%s%scontent-length: %d\r\n\r\n%s" % (target.head, extra, len(body), body)
        return await target.pool.post(data, timeout.read, timeout.connect)

    async def post_json(
        self, payload: dict[str, Any], *, url: str | None = None, timeout: float | None = None
    ) -> Any:
        """The decoded JSON answer; raises our errors for transport faults and HTTP errors.
        `url` (another endpoint of the same server, with the same auth) and `timeout` replace
        the client's for this call."""
        target = self._target if url is None else self._target_of(url)
        limits = self._timeout if timeout is None else Timeouts(timeout, timeout)
        try:
            response = await self._send(orjson.dumps(payload), target, limits)
            try:
                body = await response.read()
            finally:
                response.release()
        except (TimeoutError, TransportError) as exc:
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
        except (TimeoutError, TransportError) as exc:
            raise self.transport_error(exc) from exc
        try:
            if response.status >= 400:
                try:
                    body = await response.read()
                except (TimeoutError, TransportError) as exc:
                    raise self.transport_error(exc) from exc
                raise self.status_error(response, body)
            if response.headers.get("content-type", "").startswith("application/json"):
                # Not a stream: a 200 carrying an error (Ollama: a model not pulled).
                try:
                    body = await response.read()
                except (TimeoutError, TransportError) as exc:
                    raise self.transport_error(exc) from exc
                message, _code = error_message(body)
                # Unavailable, as a stream that ended with nothing would be: retried, and a
                # route's fallback may answer instead.
                raise UpstreamUnavailableError(
                    f"{self.where.capitalize()} answered with no stream: {self.redact(message)}"
                )
            try:
                yield sse_data(response.iter_any())
            except (TransportError, ReadTimeout) as exc:  # raised while the caller read lines
                raise self.transport_error(exc) from exc
        except BaseException:
            response.close()
            raise
        # Read to the end: released, its connection kept alive. Left early: closed.
        response.release()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        if self._auth is not None:  # an Entra credential owns sessions too
            await self._auth.aclose()
