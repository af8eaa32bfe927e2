"""The gateway's exception tree. `api/errors.py` is the only place that turns these into HTTP.

    GatewayError                 status, type, code, param, message
    ├── BadRequestError          400 invalid_request_error
    ├── AuthenticationError      401 invalid_request_error / invalid_api_key
    ├── NotFoundError            404 invalid_request_error (also another tenant's objects)
    ├── RateLimitError           429
    ├── StorageError             500 server_error (a database fault, mapped once in `store`)
    └── UpstreamError            502 server_error; an upstream 4xx keeps its own status
        ├── UpstreamTimeoutError 504 server_error
        └── UpstreamUnavailableError  502 (or the upstream's 429): worth trying again or elsewhere

Messages never carry upstream credentials: backends build them from status and body only.
"""

from __future__ import annotations


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    # Extra HTTP headers for the error reply (a 429's `Retry-After` and `x-ratelimit-*`).
    headers: dict[str, str] | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if headers is not None:
            self.headers = headers
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type


class BadRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"


class RateLimitError(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class StorageError(GatewayError):
    status = 500
    type = "server_error"
    code = "server_error"


class UpstreamError(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"
    # The HTTP status the upstream answered with, when it answered with an error status.
    upstream_status: int | None = None


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not take the request: connection refused or dropped, 429, or 5xx.

    Retrying is safe as long as no output has reached the client, which is why backends raise
    this distinct type and the router (`app/backends/routing.py`) retries and falls back on it.
    `retry_after` is the upstream's `Retry-After`, in seconds, when it sent one."""

    retry_after: float | None = None


_SAME = "same"


def missing_or_malformed(
    kind: str,
    value: str,
    prefix: str,
    param: str,
    *,
    not_found_param: str | None = _SAME,
    code: str | None = None,
) -> GatewayError:
    """The error for an id that names nothing: OpenAI's 400 `invalid_value` when it does not
    even have the prefix of its kind (`Expected an ID that begins with 'resp'.`), else the 404
    (with `code`, and `not_found_param`, by default `param`)."""
    if not value.startswith(prefix):
        return BadRequestError(
            f"Invalid '{param}': '{value}'. Expected an ID that begins with '{prefix}'.",
            param=param,
            code="invalid_value",
        )
    return NotFoundError(
        f"{kind} with id '{value}' not found.",
        param=param if not_found_param == _SAME else not_found_param,
        code=code,
    )


# `ResponseErrorCode`: the codes a failed Response's `error` may carry (the spec's list, and the
# openai SDK's `misalignment_policy_violation`). An upstream's own is passed on when it is one.
RESPONSE_ERROR_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)
