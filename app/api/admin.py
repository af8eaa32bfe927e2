"""`/admin/`: API keys and usage, for operators. Guarded by `GATEWAY_ADMIN_KEY`."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.api.deps import DatabaseDep, Keys, json_response, require_admin
from app.core.keys import key_object
from app.core.usage import usage_report
from app.schemas.admin import CreateKeyRequest

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[require_admin])


@router.post("/keys")
async def create_key(body: CreateKeyRequest, keys: Keys) -> Response:
    created = await keys.create(body.project, name=body.name, rpm=body.rpm, tpm=body.tpm)
    return json_response(key_object(created.key, created.secret), status=201)


@router.get("/keys")
async def list_keys(keys: Keys, project: str | None = None) -> Response:
    data = [key_object(key) for key in await keys.list(project)]
    return json_response({"object": "list", "data": data})


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, keys: Keys) -> Response:
    return json_response(key_object(await keys.revoke(key_id)))


@router.get("/usage")
async def usage(
    database: DatabaseDep,
    project: str | None = None,
    start: Annotated[date | None, Query(description="first day, UTC (YYYY-MM-DD)")] = None,
    end: Annotated[date | None, Query(description="last day, UTC, inclusive")] = None,
) -> Response:
    data = await usage_report(
        database,
        project=project,
        start=start.isoformat() if start else None,
        end=end.isoformat() if end else None,
    )
    return json_response({"object": "list", "data": data})
