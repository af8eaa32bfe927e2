"""`/v1/responses` routes: parse, hand to core, serialize. No decisions here."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import Responses, json_response, read_body
from app.api.sse import event_stream
from app.schemas.requests import CreateResponseRequest

router = APIRouter(prefix="/v1/responses", tags=["responses"])


@router.post(
    "",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CreateResponseRequest.model_json_schema()}},
        }
    },
)
async def create_response(request: Request, responses: Responses) -> Response:
    create = await read_body(request, CreateResponseRequest)
    prepared = await responses.prepare(create)  # every 4xx is raised here, before any byte
    if create.stream:
        return event_stream(responses.stream(prepared), request.app.state.sse_keepalive)
    return json_response(await responses.create(prepared))


@router.get("/{response_id}")
async def retrieve_response(
    request: Request,
    response_id: str,
    responses: Responses,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> Response:
    if stream:
        events = await responses.replay(response_id, "", starting_after)
        return event_stream(events, request.app.state.sse_keepalive)
    return json_response(await responses.retrieve(response_id))


@router.delete("/{response_id}")
async def delete_response(response_id: str, responses: Responses) -> Response:
    return json_response(await responses.delete(response_id))


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, responses: Responses) -> Response:
    return json_response(await responses.cancel(response_id))


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    responses: Responses,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    page = await responses.list_input_items(response_id, limit=limit, order=order, after=after)
    return json_response(page)
