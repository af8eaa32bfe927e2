"""What handlers need, reached through the lifespan state (built once in `main`)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.backends.registry import Registry
from app.core.keys import KeyService, Principal
from app.core.limits import RateLimiter
from app.core.responses import ResponsesService
from app.core.usage import UsageMeter
from app.store.database import Database


def _responses(request: Request) -> ResponsesService:
    return cast(ResponsesService, request.state.responses)


def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


def _keys(request: Request) -> KeyService:
    return cast(KeyService, request.state.keys)


def _limits(request: Request) -> RateLimiter:
    return cast(RateLimiter, request.state.limits)


def _usage(request: Request) -> UsageMeter:
    return cast(UsageMeter, request.state.usage)


def _database(request: Request) -> Database:
    return cast(Database, request.state.database)


async def _principal(request: Request) -> Principal:
    """The caller of a `/v1` route, from its API key (401 `invalid_api_key` otherwise)."""
    client = request.client.host if request.client is not None else None
    principal = await _keys(request).authenticate(request.headers.get("authorization"), client)
    request.state.project = principal.project  # for the access log
    return principal


def _admin(request: Request) -> None:
    _keys(request).authenticate_admin(request.headers.get("authorization"))


Responses = Annotated[ResponsesService, Depends(_responses)]
Routes = Annotated[Registry, Depends(_registry)]
Keys = Annotated[KeyService, Depends(_keys)]
Limits = Annotated[RateLimiter, Depends(_limits)]
Usage = Annotated[UsageMeter, Depends(_usage)]
DatabaseDep = Annotated[Database, Depends(_database)]
Caller = Annotated[Principal, Depends(_principal)]
require_key = Depends(_principal)
require_admin = Depends(_admin)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
