"""`create_app(settings, models)` and the lifespan that owns every long-lived resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import conversations as conversations_routes
from app.api import models as models_routes
from app.api import responses as responses_routes
from app.api.errors import install_error_handlers
from app.backends.registry import Registry
from app.config import ModelsFile, Settings, describe_routes, load_routing
from app.core.background import BackgroundRunner, WorkerSettings
from app.core.conversations import ConversationsService
from app.core.responses import ResponsesService
from app.store.database import Database, asyncpg_url
from app.store.engine import create_engine, current_revision, head_revision

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


def worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        concurrency=settings.gateway_worker_concurrency,
        lease_seconds=settings.gateway_job_lease_seconds,
        max_attempts=settings.gateway_job_max_attempts,
        poll_seconds=settings.gateway_job_poll_seconds,
        shutdown_grace_seconds=settings.gateway_shutdown_grace_seconds,
        event_retention_seconds=settings.gateway_event_retention_seconds,
    )


def create_app(settings: Settings, models: ModelsFile) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Opened in order, closed in reverse: engine, notifications, backends, worker.
        async with AsyncExitStack() as stack:
            engine = create_engine(settings.database_url, settings.gateway_db_pool_size)
            stack.push_async_callback(engine.dispose)
            await require_head(engine)
            database = Database(engine, listen_url=asyncpg_url(settings.database_url))
            await database.start()
            stack.push_async_callback(database.stop)
            registry = Registry(models)
            stack.push_async_callback(registry.aclose)
            log_routes(models)
            runner = BackgroundRunner(database, registry, worker_settings(settings))
            if settings.gateway_worker_concurrency > 0:
                await runner.start()
                stack.push_async_callback(runner.stop)
            yield {
                "responses": ResponsesService(database, registry),
                "conversations": ConversationsService(database),
                "registry": registry,
            }

    app = FastAPI(title="responses-gateway", version="0.1.0", lifespan=lifespan)
    app.state.max_body_bytes = settings.gateway_max_body_bytes
    app.state.sse_keepalive = settings.gateway_sse_keepalive
    install_error_handlers(app)
    app.include_router(responses_routes.router)
    app.include_router(models_routes.router)
    app.include_router(conversations_routes.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:app_from_env`: settings from the environment."""
    settings = Settings()
    return create_app(settings, load_routing(settings))
