"""`responses-gateway serve | migrate | check-config`. Flags override the environment."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from pydantic import ValidationError

from app.config import ConfigError, ModelsFile, Settings, describe_routes, load_models_file


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "database_url": getattr(args, "database_url", None),
        "gateway_config": getattr(args, "config", None),
        "gateway_host": getattr(args, "host", None),
        "gateway_port": getattr(args, "port", None),
    }
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def _models(settings: Settings) -> ModelsFile:
    return load_models_file(settings.gateway_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    models = _models(settings)
    print(f"models file: {settings.gateway_config or '(none: GATEWAY_CONFIG is not set)'}")
    for line in describe_routes(models):
        print(line)
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import MigrationNeededError, create_app, require_head
    from app.store.engine import create_engine

    settings = _settings(args)
    models = _models(settings)

    async def check_database() -> None:
        engine = create_engine(settings.database_url)
        try:
            await require_head(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check_database())
    except MigrationNeededError as exc:
        print(f"responses-gateway: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, models)
    # Everything imported and built so far lives as long as the process: move it out of the
    # collector's reach. Otherwise every full (gen-2) collection walks the ~130k import-time
    # objects, a 70-120 ms pause on this class of machine, which is the p99 of a loaded server.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.gateway_log_level,
        # Named rather than "auto" so that a missing uvloop/httptools (both come with
        # uvicorn[standard]) fails loudly instead of silently costing twice the CPU.
        loop="uvloop",
        http="httptools",
    )
    return 0


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

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("--database-url", help="database (DATABASE_URL)")
    migrate.add_argument(
        "--to", default="head", help="target revision (default head; 'base' or -1 to downgrade)"
    )
    migrate.set_defaults(run=cmd_migrate)

    check = commands.add_parser("check-config", help="validate the models file, print the routes")
    check.add_argument("--config", type=Path, help="models file (GATEWAY_CONFIG)")
    check.set_defaults(run=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every upstream request at INFO: one formatted stderr line per request on the
    # hot path (a tenth of the CPU of a request in the profile). Its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"responses-gateway: invalid models file:\n{exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"responses-gateway: invalid settings:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
