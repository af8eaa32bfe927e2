"""`create_app(settings, models)` and the lifespan that owns every long-lived resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import models as models_routes
from app.api import responses as responses_routes
from app.api.errors import install_error_handlers
from app.backends.registry import Registry
from app.config import ModelsFile, Settings, describe_routes, load_routing
from app.core.responses import ResponsesService
from app.store.engine import create_engine, current_revision, head_revision
from app.store.responses import ResponseStore

log = logging.getLogger("app")


class MigrationNeededError(RuntimeError):
    """The database schema is behind the code; `responses-gateway migrate` fixes it."""


async def require_head(engine: AsyncEngine) -> None:
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise MigrationNeededError(
            f"The database is at migration {current or '(empty)'}, but this version of the "
            f"gateway needs {head}. Run `responses-gateway migrate` (same DATABASE_URL) first."
        )


def log_routes(models: ModelsFile) -> None:
    level = logging.INFO if models.models else logging.WARNING
    for line in describe_routes(models):
        log.log(level, "route: %s", line)


def create_app(settings: Settings, models: ModelsFile) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = create_engine(settings.database_url)
        try:
            await require_head(engine)
            registry = Registry(models)
            try:
                log_routes(models)
                yield {
                    "responses": ResponsesService(ResponseStore(engine), registry),
                    "registry": registry,
                }
            finally:
                await registry.aclose()
        finally:
            await engine.dispose()

    app = FastAPI(title="responses-gateway", version="0.1.0", lifespan=lifespan)
    app.state.max_body_bytes = settings.gateway_max_body_bytes
    app.state.sse_keepalive = settings.gateway_sse_keepalive
    install_error_handlers(app)
    app.include_router(responses_routes.router)
    app.include_router(models_routes.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:app_from_env`: settings from the environment."""
    settings = Settings()
    return create_app(settings, load_routing(settings))
