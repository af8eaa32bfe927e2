"""What handlers need, reached through the lifespan state (built once in `main`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection
from starlette.responses import Response

from app.api.errors import bad_json, most_specific, validation_error
from app.backends.registry import Registry
from app.core.conversations import ConversationsService
from app.core.keys import KeyService, Principal
from app.core.limits import RateLimiter
from app.core.requests import check_includes
from app.core.responses import ResponsesService
from app.core.usage import UsageMeter
from app.errors import BadRequestError, GatewayError
from app.store.database import Database

M = TypeVar("M", bound=BaseModel)


# Every dependency is `async def` on purpose: FastAPI runs a plain `def` dependency in the thread
# pool, a thread hop (and GIL hand-off) per request for what is an attribute read. (Two of them
# on `POST /v1/responses` cost 18% of the instructions of a request.)
async def _responses(request: Request) -> ResponsesService:
    return cast(ResponsesService, request.state.responses)


async def _conversations(request: Request) -> ConversationsService:
    return cast(ConversationsService, request.state.conversations)


async def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


def _keys(request: HTTPConnection) -> KeyService:
    return cast(KeyService, request.state.keys)


async def _key_service(request: Request) -> KeyService:
    return _keys(request)


async def _usage(request: Request) -> UsageMeter:
    return cast(UsageMeter, request.state.usage)


async def _database(request: Request) -> Database:
    return cast(Database, request.state.database)


async def principal(request: HTTPConnection) -> Principal:
    """The caller of a `/v1` route (or WebSocket), from its API key (401 `invalid_api_key`
    otherwise)."""
    client = request.client.host if request.client is not None else None
    principal = await _keys(request).authenticate(request.headers.get("authorization"), client)
    request.state.project = principal.project  # for the access log
    return principal


async def _admin(request: Request) -> None:
    _keys(request).authenticate_admin(request.headers.get("authorization"))


@dataclass(frozen=True, slots=True)
class CreateServices:
    """What `POST /v1/responses` needs, as one dependency: FastAPI's cost is per dependency
    (each is solved, cached and awaited on its own, its parameters extracted), and this is the
    hot path."""

    caller: Principal
    responses: ResponsesService
    limits: RateLimiter
    usage: UsageMeter


async def create_services(request: Request) -> CreateServices:
    state = request.state
    return CreateServices(await principal(request), state.responses, state.limits, state.usage)


Responses = Annotated[ResponsesService, Depends(_responses)]
CreateDeps = Annotated[CreateServices, Depends(create_services)]
Routes = Annotated[Registry, Depends(_registry)]
Conversations = Annotated[ConversationsService, Depends(_conversations)]


def body_too_large(size: int, limit: int) -> GatewayError:
    return GatewayError(
        f"The request body is {size} bytes; the limit is {limit} bytes.",
        status=413,
        type="invalid_request_error",
        code="request_too_large",
    )


BodyReader = Callable[[], Awaitable[bytes]]


async def read_body(request: Request, model: type[M], reader: BodyReader | None = None) -> M:
    """The JSON body (read by `reader` if given, else by Starlette), validated: bad JSON, a
    non-object or an invalid field is a 400 naming the param (never FastAPI's 422); a body
    over the limit is a 413."""
    limit: int = request.app.state.max_body_bytes
    body = await request.body() if reader is None else await reader()
    if len(body) > limit:
        raise body_too_large(len(body), limit)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_json() from None
    if not isinstance(data, dict):
        raise BadRequestError("The request body must be a JSON object.", code="invalid_type")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(most_specific(exc.errors()), data) from None


async def _include(
    request: Request, _caller: Annotated[Principal, Depends(principal)]
) -> list[str]:
    """The `include` query of a GET (or of adding conversation items), checked after the key
    (a 401 comes first): the SDKs send `include[]=…`, hand-written URLs `include=…`. There is
    nothing extra to include on these objects, but a value OpenAI does not know is a 400, as
    there."""
    values = request.query_params.getlist("include[]") + request.query_params.getlist("include")
    check_includes(values)
    return values


Keys = Annotated[KeyService, Depends(_key_service)]
checked_include = Depends(_include)
Usage = Annotated[UsageMeter, Depends(_usage)]
DatabaseDep = Annotated[Database, Depends(_database)]
Caller = Annotated[Principal, Depends(principal)]
require_key = Depends(principal)
require_admin = Depends(_admin)


class JSONBytes(Response):
    """A JSON answer from bytes already encoded, with its two headers made directly (what
    Starlette's `init_headers` computes from the media type, every time)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def json_response(body: Any, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(body), status)
