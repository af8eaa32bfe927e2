"""`/v1/responses` routes: parse, hand to core, serialize. No decisions here."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import (
    BodyReader,
    Caller,
    CreateDeps,
    CreateServices,
    Responses,
    Usage,
    checked_include,
    json_response,
    read_body,
)
from app.api.sse import event_stream
from app.core.limits import check_input_size
from app.schemas.requests import ContextRequest, CreateResponseRequest

router = APIRouter(prefix="/v1/responses", tags=["responses"])
log = logging.getLogger("app.api")
# Names the hosted tool types left out of the upstream call (a model with `hosted_tools: drop`).
DROPPED_TOOLS_HEADER = "x-gateway-dropped-tools"


@router.post(
    "",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateResponseRequest.model_json_schema()}},
        }
    },
)
async def create_response(request: Request, deps: CreateDeps) -> Response:
    """Served by `app.api.fastpath` ahead of FastAPI; registered for the OpenAPI document and as
    the way in the fast path passes on (a `root_path`)."""
    return await create(request, deps)


async def create(
    request: Request, deps: CreateServices, reader: BodyReader | None = None
) -> Response:
    """`POST /v1/responses`, once the caller is known: admit, validate, prepare, answer.
    `reader`: how to read the body, if not through Starlette."""
    caller, responses, usage = deps.caller, deps.responses, deps.usage
    request.state.ratelimit_headers = await deps.limits.admit(caller)
    create = await read_body(request, CreateResponseRequest, reader)
    request.state.model = create.model
    check_input_size(create, request.app.state.max_input_items)
    if request.app.state.log_prompts:  # a debug setting: prompts stay out of logs otherwise
        log.info(
            "prompt",
            extra={"instructions": create.instructions, "input": request_input(create)},
        )
    # Every 4xx is raised here, before any byte.
    prepared = await responses.prepare(create, caller.project, caller.key_id)
    reply: Response
    if create.stream:
        events = usage.stream(await responses.stream(prepared), prepared, caller.key_id)
        reply = event_stream(events, request.app.state.sse_keepalive, request.state.streams)
    else:
        reply = json_response(await usage.create(responses, prepared, caller.key_id))
    if prepared.dropped_tools:
        reply.headers[DROPPED_TOOLS_HEADER] = ",".join(prepared.dropped_tools)
    return reply


def request_input(create: CreateResponseRequest) -> object:
    if isinstance(create.input, str):
        return create.input
    return [item.model_dump(mode="json", exclude_none=True) for item in create.input]


@router.post("/input_tokens")
async def count_input_tokens(request: Request, responses: Responses, caller: Caller) -> Response:
    body = await read_body(request, ContextRequest)
    return json_response(await responses.count_input_tokens(body, caller.project))


@router.post("/compact")
async def compact_response(request: Request, deps: CreateDeps) -> Response:
    """`POST /v1/responses/compact`: the context's user messages and one compaction item
    summarizing the rest (`app.core.compaction`). Admitted and accounted like a create."""
    caller, responses = deps.caller, deps.responses
    request.state.ratelimit_headers = await deps.limits.admit(caller)
    body = await read_body(request, ContextRequest)
    request.state.model = body.model
    check_input_size(body, request.app.state.max_input_items)
    prepared = await responses.prepare_compaction(body, caller.project, caller.key_id)
    return json_response(await deps.usage.compact(responses, prepared, caller.key_id))


@router.get("/{response_id}", dependencies=[checked_include])
async def retrieve_response(
    request: Request,
    response_id: str,
    responses: Responses,
    caller: Caller,
    usage: Usage,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
    # Checked, not honoured: replayed events carry no obfuscation padding (README).
    include_obfuscation: bool = True,
) -> Response:
    del include_obfuscation
    if stream:
        events = await responses.replay(response_id, caller.project, starting_after)
        return event_stream(
            usage.stream(events), request.app.state.sse_keepalive, request.state.streams
        )
    return json_response(await responses.retrieve(response_id, caller.project))


@router.delete("/{response_id}")
async def delete_response(response_id: str, responses: Responses, caller: Caller) -> Response:
    return json_response(await responses.delete(response_id, caller.project))


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, responses: Responses, caller: Caller) -> Response:
    return json_response(await responses.cancel(response_id, caller.project))


@router.get("/{response_id}/input_items", dependencies=[checked_include])
async def list_input_items(
    response_id: str,
    responses: Responses,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    page = await responses.list_input_items(
        response_id, limit=limit, order=order, after=after, project=caller.project
    )
    return json_response(page)
