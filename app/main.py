"""`create_app(settings, models)` and the lifespan that owns every long-lived resource."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import admin as admin_routes
from app.api import conversations as conversations_routes
from app.api import health as health_routes
from app.api import models as models_routes
from app.api import responses as responses_routes
from app.api import websocket as websocket_routes
from app.api.errors import install_error_handlers
from app.api.fastpath import CreateFastPath, GatewayApp, find_route
from app.api.middleware import ObservabilityMiddleware
from app.api.sse import OpenStreams
from app.backends.registry import Registry
from app.config import ModelsFile, Settings, describe_routes, load_routing, quick_start_warnings
from app.core.background import BackgroundRunner, WorkerSettings
from app.core.conversations import ConversationsService
from app.core.keys import KeyService
from app.core.limits import RateLimiter
from app.core.responses import ResponsesService
from app.core.usage import UsageMeter
from app.logs import configure_logging
from app.metrics import Metrics
from app.store.database import Database, asyncpg_url
from app.store.engine import create_engine, current_revision, head_revision
from app.worker import WorkerProcess

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


def _no_native_telemetry() -> dict[str, Any]:
    """Newer FastAPI releases have OpenTelemetry of their own, on whenever a global provider is
    set. The gateway traces in `ObservabilityMiddleware` (`GATEWAY_OTEL`), so FastAPI's is off:
    no second server span per request, and no per-request look at the global providers (three
    environment lookups, 1% of a request)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        concurrency=settings.gateway_worker_concurrency,
        lease_seconds=settings.gateway_job_lease_seconds,
        max_attempts=settings.gateway_job_max_attempts,
        poll_seconds=settings.gateway_job_poll_seconds,
        shutdown_grace_seconds=settings.gateway_shutdown_grace_seconds,
        event_retention_seconds=settings.gateway_event_retention_seconds,
        response_ttl_seconds=settings.gateway_response_ttl_seconds,
        prune_seconds=settings.gateway_prune_seconds,
    )


@dataclass(frozen=True, slots=True)
class Services:
    """What the HTTP app and the `worker` command share, open for as long as the process runs."""

    database: Database
    registry: Registry
    limits: RateLimiter
    usage: UsageMeter
    runner: BackgroundRunner | None


@asynccontextmanager
async def open_services(
    settings: Settings,
    models: ModelsFile,
    metrics: Metrics,
    *,
    run_jobs: bool,
    announce: bool = True,
) -> AsyncIterator[Services]:
    """The database (at head, with its notifications), the backends, the usage meter and, if
    `run_jobs` and the concurrency allows, the background runner. Opened in order and closed
    in reverse, so the runner's shutdown grace still has the database and backends.
    `announce` logs the routing table and the quick-start warnings."""
    async with AsyncExitStack() as stack:
        engine = create_engine(settings.database_url, settings.gateway_db_pool_size)
        stack.push_async_callback(engine.dispose)
        await require_head(engine)
        database = Database(
            engine,
            listen_url=asyncpg_url(settings.database_url),
            context_cache_items=settings.gateway_context_cache_items,
        )
        await database.start()
        stack.push_async_callback(database.stop)
        registry = Registry(models)
        stack.push_async_callback(registry.aclose)
        if announce:  # the child worker of a `serve` leaves this to its parent
            log_routes(models)
            for warning in quick_start_warnings(settings):
                log.warning("%s", warning)
        limits = RateLimiter(database)
        usage = UsageMeter(database, limits, metrics, settings.gateway_usage_flush_seconds)
        await usage.start()
        stack.push_async_callback(usage.stop)
        runner = None
        if run_jobs and settings.gateway_worker_concurrency > 0:
            runner = BackgroundRunner(database, registry, worker_settings(settings), usage)
            await runner.start()
            stack.push_async_callback(runner.stop)
        yield Services(database, registry, limits, usage, runner)


def create_app(settings: Settings, models: ModelsFile) -> FastAPI:
    metrics = Metrics()
    tracer, tracer_provider = None, None
    if settings.gateway_otel != "none":
        from app.tracing import create_tracer

        tracer, tracer_provider = create_tracer(settings.gateway_otel)
    admin_key = settings.gateway_admin_key

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Opened in order, closed in reverse: the shared services (engine, notifications,
        # backends, usage, worker), the watch that ends open event streams when the server
        # shuts down.
        async with AsyncExitStack() as stack:
            if tracer_provider is not None:
                stack.callback(tracer_provider.shutdown)
            services = await stack.enter_async_context(
                open_services(settings, models, metrics, run_jobs=not settings.worker_in_child)
            )
            if settings.worker_in_child:
                child = WorkerProcess(settings)
                await child.start()
                stack.push_async_callback(child.stop)
            streams = OpenStreams()
            await streams.start()
            stack.push_async_callback(streams.stop)
            database, registry = services.database, services.registry
            keys = KeyService(
                database,
                admin_key=admin_key.get_secret_value() if admin_key is not None else None,
                cache_seconds=settings.gateway_key_cache_seconds,
            )
            yield {
                "responses": ResponsesService(database, registry, services.runner),
                "conversations": ConversationsService(database),
                "registry": registry,
                "keys": keys,
                "limits": services.limits,
                "usage": services.usage,
                "database": database,
                "streams": streams,
            }

    app = GatewayApp(
        title="responses-gateway",
        version="0.1.0",
        lifespan=lifespan,
        # `/v1/responses/{id}/` is an invalid URL, as on OpenAI's API, not a redirect.
        redirect_slashes=False,
        **_no_native_telemetry(),
    )
    app.state.max_body_bytes = settings.gateway_max_body_bytes
    app.state.max_input_items = settings.gateway_max_input_items
    app.state.sse_keepalive = settings.gateway_sse_keepalive
    app.state.websocket_max_seconds = settings.gateway_websocket_max_seconds
    app.state.websocket_max_streams = settings.gateway_websocket_max_streams
    app.state.log_prompts = settings.gateway_log_prompts
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(responses_routes.router)
    app.include_router(websocket_routes.router)
    app.include_router(models_routes.router)
    app.include_router(conversations_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(health_routes.router)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, tracer=tracer)
    # The create request skips FastAPI's stack, not the request id, access log and metrics.
    create_route = find_route(responses_routes.router.routes, "POST", "/v1/responses")
    app.take(
        create_route.path,
        ObservabilityMiddleware(CreateFastPath(create_route), metrics=metrics, tracer=tracer),
    )
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory app.main:app_from_env`: settings from the environment."""
    settings = Settings()
    configure_logging(settings.gateway_log_level, settings.gateway_log_format)
    return create_app(settings, load_routing(settings))
