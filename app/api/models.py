"""`/v1/models`: what is routable, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import Routes, json_response, require_key
from app.backends.registry import Route
from app.errors import NotFoundError

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[require_key])


def model_object(route: Route, created: int) -> dict[str, Any]:
    return {"id": route.config.name, "object": "model", "created": created, "owned_by": "gateway"}


@router.get("")
async def list_models(routes: Routes) -> Response:
    data = [model_object(route, routes.created_at) for route in routes]
    return json_response({"object": "list", "data": data})


@router.get("/{model_id:path}")
async def retrieve_model(model_id: str, routes: Routes) -> Response:
    route = routes.resolve(model_id)
    if route is None:
        raise NotFoundError(
            f"The model '{model_id}' does not exist", param="model", code="model_not_found"
        )
    return json_response(model_object(route, routes.created_at))
