"""`responses-gateway serve | worker | migrate | check-config | keys | usage`. Flags override
the environment."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from pydantic import ValidationError

from app.config import (
    ConfigError,
    ModelsFile,
    Settings,
    describe_routes,
    load_routing,
    quick_start_warnings,
)
from app.errors import GatewayError

GC_YOUNG_THRESHOLD = 20_000


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "database_url": getattr(args, "database_url", None),
        "gateway_config": getattr(args, "config", None),
        "gateway_host": getattr(args, "host", None),
        "gateway_port": getattr(args, "port", None),
    }
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _models(settings: Settings) -> ModelsFile:
    return load_routing(settings)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    models = _models(settings)
    print(f"models file: {settings.gateway_config or '(none: GATEWAY_CONFIG is not set)'}")
    for line in describe_routes(models):
        print(line)
    for warning in quick_start_warnings(settings):
        print(f"WARNING: {warning}", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.store.engine import alembic_config

    settings = _settings(args)
    config = alembic_config(settings.database_url)
    if args.to.startswith("-") or args.to == "base":
        command.downgrade(config, args.to)
    else:
        command.upgrade(config, args.to)
    print(f"database migrated to {args.to}")
    return 0


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Any]:
    """The database at head migration, for the commands that read or write it."""
    from app.main import require_head
    from app.store.database import Database
    from app.store.engine import create_engine

    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await require_head(engine)
        yield Database(engine)
    finally:
        await engine.dispose()


def open_mode_refusal(settings: Settings, keys_exist: bool) -> str | None:
    """Why `serve` must not start: open mode (no keys) on an address other machines reach."""
    from app.core.keys import is_loopback

    if is_loopback(settings.gateway_host) or keys_exist or settings.gateway_admin_key:
        return None
    return (
        f"refusing to serve on {settings.gateway_host} without API keys: with no keys anyone "
        "who can reach this address could use the gateway (open mode is for loopback only).\n"
        "Create a key first (same DATABASE_URL):\n"
        "    responses-gateway keys create --project NAME\n"
        "or set GATEWAY_ADMIN_KEY and create keys with POST /admin/keys."
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.protocol import GatewayHttpProtocol
    from app.core.keys import KeyService
    from app.logs import configure_logging
    from app.main import MigrationNeededError, create_app

    settings = _settings(args)
    configure_logging(settings.gateway_log_level, settings.gateway_log_format)
    models = _models(settings)

    async def keys_exist() -> bool:
        async with _database(settings) as database:
            return await KeyService(database).keys_exist()

    try:
        refusal = open_mode_refusal(settings, asyncio.run(keys_exist()))
    except MigrationNeededError as exc:
        print(f"responses-gateway: {exc}", file=sys.stderr)
        return 1
    if refusal is not None:
        print(f"responses-gateway: {refusal}", file=sys.stderr)
        return 1
    app = create_app(settings, models)
    # Everything imported and built so far lives as long as the process: move it out of the
    # collector's reach. Otherwise every full (gen-2) collection walks the ~130k import-time
    # objects, a 70-120 ms pause on this class of machine, which is the p99 of a loaded server.
    gc.collect()
    gc.freeze()
    # A request allocates a few thousand containers, nearly all freed by reference counting
    # when it ends; at the default threshold (700) the young-generation collector still ran
    # several times per request, traversing what was in flight: 4% of the instructions of a
    # request. Cycles are collected every GC_YOUNG_THRESHOLD allocations instead.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.gateway_log_level,
        log_config=None,  # configure_logging routes uvicorn's loggers to ours
        access_log=False,  # the middleware writes one access line per request, with its id
        # Named rather than "auto" so that a missing uvloop/httptools (both come with
        # uvicorn[standard]) fails loudly instead of silently costing twice the CPU.
        loop="uvloop",
        http=GatewayHttpProtocol,  # uvicorn's httptools protocol, the head sent with the body
        # WebSocket mode: a frame is a create body. One over the body limit gets a 413 event;
        # one over twice the limit closes the connection (1009) before it is read.
        ws="websockets-sansio",
        ws_max_size=2 * settings.gateway_max_body_bytes,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import uvloop

    from app.logs import configure_logging
    from app.worker import lower_priority, tie_to_parent

    if args.parent_pid is not None:
        tie_to_parent(args.parent_pid)
    lower_priority(args.nice)
    settings = _settings(args)
    configure_logging(settings.gateway_log_level, settings.gateway_log_format)
    if settings.gateway_worker_concurrency == 0:
        print("responses-gateway: GATEWAY_WORKER_CONCURRENCY is 0: nothing to run", file=sys.stderr)
        return 2
    models = _models(settings)
    gc.collect()  # as in `serve`: keep full collections off the import-time objects
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
    uvloop.run(run_worker(settings, models, args.parent_pid, args.ready_fd))
    return 0


async def run_worker(
    settings: Settings, models: ModelsFile, parent_pid: int | None, ready_fd: int | None
) -> None:
    """The background side of a gateway, no HTTP: until SIGTERM or SIGINT, then the runner's
    shutdown (stop claiming, let running jobs finish within the grace, release the rest)."""
    from app.main import open_services
    from app.metrics import Metrics
    from app.worker import watch_parent

    log = logging.getLogger("app")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if parent_pid is None:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    else:
        # Ctrl-C reaches the whole process group; the worker of a `serve` stops when its
        # parent says so (after the HTTP side), not as well, or the parent would restart it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = None
    if parent_pid is not None and sys.platform != "linux":
        watch = asyncio.create_task(watch_parent(parent_pid))
    if not settings.database_url.startswith("postgresql"):
        log.warning(
            "worker on SQLite: jobs and cancels from other processes are seen only by polling "
            "(GATEWAY_JOB_POLL_SECONDS, lease renewals)"
        )
    # The usage meter's numbers stay in this process: it serves no /metrics.
    services_of = open_services(
        settings, models, Metrics(), run_jobs=True, announce=parent_pid is None
    )
    async with services_of as services:
        assert services.runner is not None
        log.info(
            "worker %s runs up to %d background jobs at once",
            services.runner.owner,
            settings.gateway_worker_concurrency,
        )
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        await stop.wait()
        log.info("worker stopping")
    if watch is not None:
        watch.cancel()


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("-" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def cmd_keys(args: argparse.Namespace) -> int:
    from app.core.keys import KeyService, key_object

    settings = _settings(args)

    async def run() -> int:
        async with _database(settings) as database:
            keys = KeyService(database)
            if args.keys_command == "create":
                created = await keys.create(
                    args.project, name=args.name, rpm=args.rpm, tpm=args.tpm
                )
                print(created.secret)
                print(
                    f"created {created.key.id} for project {created.key.project}; the key is "
                    "shown only now, store it safely",
                    file=sys.stderr,
                )
            elif args.keys_command == "list":
                rows = [key_object(key) for key in await keys.list(args.project)]
                _print_table(rows, ["id", "project", "name", "prefix", "rpm", "tpm", "revoked_at"])
            else:
                key = await keys.revoke(args.key_id)
                print(f"revoked {key.id} ({key.prefix}…, project {key.project})")
        return 0

    return asyncio.run(run())


def cmd_usage(args: argparse.Namespace) -> int:
    from app.core.usage import usage_report

    settings = _settings(args)

    async def run() -> int:
        async with _database(settings) as database:
            rows = await usage_report(
                database, project=args.project, start=args.start, end=args.end
            )
        if args.json:
            print(orjson.dumps(rows).decode())
        else:
            _print_table(
                rows,
                [
                    "day",
                    "project",
                    "model",
                    "requests",
                    "input_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                    "cached_tokens",
                    "not_completed",
                ],
            )
        return 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responses-gateway", description="An OpenAI Responses API gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", help="bind address (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (GATEWAY_PORT, default 8000)")
    serve.add_argument("--config", type=Path, help="models file (GATEWAY_CONFIG)")
    serve.add_argument("--database-url", help="database (DATABASE_URL)")
    serve.set_defaults(run=cmd_serve)

    worker = commands.add_parser(
        "worker", help="run background jobs only (no HTTP), e.g. as a separately scaled service"
    )
    worker.add_argument("--config", type=Path, help="models file (GATEWAY_CONFIG)")
    worker.add_argument("--database-url", help="database (DATABASE_URL)")
    worker.add_argument(
        "--nice", type=int, default=0, help="run at this niceness (lower CPU priority), 0-19"
    )
    worker.add_argument(
        "--parent-pid",
        type=int,
        help="die with this process (what `serve` passes to the worker it starts)",
    )
    worker.add_argument(
        "--ready-fd", type=int, help="write a line to this descriptor once running (for `serve`)"
    )
    worker.set_defaults(run=cmd_worker)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--database-url", help="database (DATABASE_URL)")
    migrate.add_argument(
        "--to", default="head", help="target revision (default head; 'base' or -1 to downgrade)"
    )
    migrate.set_defaults(run=cmd_migrate)

    check = commands.add_parser("check-config", help="validate the models file, print the routes")
    check.add_argument("--config", type=Path, help="models file (GATEWAY_CONFIG)")
    check.set_defaults(run=cmd_check_config)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("--project", required=True, help="the project (tenant) it belongs to")
    create.add_argument("--name", help="a label for people")
    create.add_argument("--rpm", type=int, help="requests per minute (default: no limit)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: no limit)")
    listing = keys_commands.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--project", help="only this project's keys")
    revoke = keys_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    for sub in (create, listing, revoke):
        sub.add_argument("--database-url", help="database (DATABASE_URL)")
    keys.set_defaults(run=cmd_keys)

    usage = commands.add_parser("usage", help="usage by day, project and model")
    usage.add_argument("--project", help="only this project")
    usage.add_argument("--start", help="first day, UTC (YYYY-MM-DD)")
    usage.add_argument("--end", help="last day, UTC, inclusive (YYYY-MM-DD)")
    usage.add_argument("--json", action="store_true", help="JSON instead of a table")
    usage.add_argument("--database-url", help="database (DATABASE_URL)")
    usage.set_defaults(run=cmd_usage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.main import MigrationNeededError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"responses-gateway: invalid models file:\n{exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"responses-gateway: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:  # e.g. a bad project name, an unknown key id
        print(f"responses-gateway: {exc.message}", file=sys.stderr)
        return 1
    except MigrationNeededError as exc:
        print(f"responses-gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
