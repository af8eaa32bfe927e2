"""What handlers need, reached through the lifespan state (built once in `main`)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.backends.registry import Registry
from app.core.responses import ResponsesService


# `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool, a thread hop
# (and GIL hand-off) per request for what is an attribute read.
async def _responses(request: Request) -> ResponsesService:
    return cast(ResponsesService, request.state.responses)


async def _registry(request: Request) -> Registry:
    return cast(Registry, request.state.registry)


Responses = Annotated[ResponsesService, Depends(_responses)]
Routes = Annotated[Registry, Depends(_registry)]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
