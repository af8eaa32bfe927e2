"""The one place that produces OpenAI's error envelope: `{"error": {message, type, param, code}}`
with all four keys, for our errors, validation errors, bad JSON, unknown routes and a 500
catch-all (FastAPI would otherwise answer with its own 422/404 shapes)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import BadRequestError, GatewayError

log = logging.getLogger("app.api")

_TYPE_ERRORS = {
    "string_type",
    "int_type",
    "float_type",
    "bool_type",
    "dict_type",
    "list_type",
    "model_type",
    "model_attributes_type",
    "int_parsing",
    "float_parsing",
    "bool_parsing",
    "int_from_float",
    "is_instance_of",
}


def envelope(
    status: int,
    message: str,
    type_: str,
    param: str | None,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def error_response(exc: GatewayError) -> Response:
    return envelope(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


def param_path(data: Any, loc: tuple[int | str, ...]) -> str | None:
    """The OpenAI-style param (`input[0].content`) for a pydantic error location.

    Pydantic puts union member labels (`str`, `list[...]`, a tag) into locations; walking the
    submitted data alongside keeps only the segments that really are keys or indices.
    """
    if data is None:  # query and path parameters: the location is the name
        return ".".join(str(part) for part in loc) or None
    path = ""
    node = data
    for position, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            path += f"[{part}]"
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            path += f".{part}" if path else part
            node = node[part]
        elif isinstance(part, str) and position == len(loc) - 1 and isinstance(node, dict):
            path += f".{part}" if path else part  # a missing field
    return path or None


def _bound(ctx: dict[str, Any], *keys: str) -> Any:
    return next((ctx[key] for key in keys if key in ctx), "?")


def validation_error(error: ErrorDetails, data: Any) -> BadRequestError:
    """One pydantic error → a 400 worded like OpenAI's."""
    kind = error["type"]
    param = param_path(data, tuple(error["loc"]))
    name = param or "body"
    got = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return BadRequestError(
            f"Missing required parameter: '{name}'.", param=param, code="missing_required_parameter"
        )
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        limit = _bound(ctx, "ge", "gt", "le", "lt")
        number = "decimal" if isinstance(limit, float) else "integer"
        if kind.startswith("greater"):
            bound, side, op = _bound(ctx, "ge", "gt"), "below_min", ">=" if "ge" in ctx else ">"
        else:
            bound, side, op = _bound(ctx, "le", "lt"), "above_max", "<=" if "le" in ctx else "<"
        words = side.replace("_", " ").replace("min", "minimum").replace("max", "maximum")
        return BadRequestError(
            f"Invalid '{name}': {number} {words} value. Expected a value {op} {bound}, "
            f"but got {got} instead.",
            param=param,
            code=f"{number}_{side}_value",
        )
    if kind in _TYPE_ERRORS:
        return BadRequestError(
            f"Invalid type for '{name}': {error['msg'].lower()}.", param=param, code="invalid_type"
        )
    if kind == "unsupported_item_type":
        return BadRequestError(
            f"Invalid value for '{name}.type': input items of type {got.get('type')!r} are not "
            "supported by this gateway."
            if isinstance(got, dict)
            else f"Invalid value for '{name}': {error['msg']}.",
            param=f"{name}.type" if isinstance(got, dict) else param,
            code="invalid_value",
        )
    message = error["msg"].removeprefix("Value error, ")
    return BadRequestError(
        f"Invalid value for '{name}': {message}.", param=param, code="invalid_value"
    )


def most_specific(errors: list[ErrorDetails]) -> ErrorDetails:
    """Of a union's alternatives, the error that got deepest into the data is the useful one."""
    return max(errors, key=lambda error: len(error["loc"]))


def bad_json() -> BadRequestError:
    return BadRequestError(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The API expects a JSON payload, but what was sent "
        "was not valid JSON.)"
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(ValidationError)
    async def body_error(_request: Request, exc: ValidationError) -> Response:
        return error_response(validation_error(most_specific(exc.errors()), None))

    @app.exception_handler(RequestValidationError)
    async def request_error(_request: Request, exc: RequestValidationError) -> Response:
        error = most_specific(list(exc.errors()))
        loc = tuple(part for part in error["loc"] if part not in ("query", "path", "body"))
        return error_response(validation_error({**error, "loc": loc}, None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return envelope(
                exc.status_code,
                f"Invalid URL ({request.method} {request.url.path})",
                "invalid_request_error",
                None,
                None,
                dict(exc.headers or {}),  # a 405's `Allow`
            )
        return envelope(exc.status_code, str(exc.detail), "invalid_request_error", None, None)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return envelope(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            "server_error",
        )
