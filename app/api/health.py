"""`/healthz` (the process answers), `/readyz` (the database answers and is at the head
migration) and `/metrics` (Prometheus). No key needed: keep them off the public listener, or
behind the load balancer, if the numbers are sensitive."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from app.api.deps import DatabaseDep, json_response
from app.core.health import check_ready, refresh_queue_metrics
from app.metrics import Metrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(database: DatabaseDep) -> Response:
    return json_response(await check_ready(database))


@router.get("/metrics")
async def metrics(request: Request, database: DatabaseDep) -> Response:
    registry: Metrics = request.app.state.metrics
    await refresh_queue_metrics(database, registry)
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
