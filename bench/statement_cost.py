"""What the gateway's durable statements cost its process, against a trivial one.

The background enqueue writes a response, its input item and its job in one autocommitted
statement (`app.store.responses._ENQUEUE_SQL`); a stored non-stream create writes the response
and its input and output items in one (`_INSERT_RESPONSE_SQL`). This times both on one asyncpg
connection, as the hot path runs them, with arguments shaped like the benchmark's (a
one-message string input, a 16-word answer), and next to them a two-column INSERT into a
temporary table (no WAL flush): per call, the wall time and the client's CPU time
(`time.process_time`: argument encoding, the protocol, the system calls). Each statement runs
twice, the second time on a session with `synchronous_commit = off`: not something the gateway
ever does (a stored response is committed before it is acknowledged), only a way to tell the
WAL flush from the rest of the statement's wall time. Prints one JSON line. It needs a migrated
database; `--create` makes (and drops) one. `--cpu N` pins this process to CPU N and a local
PostgreSQL server to the other CPUs, as `overhead.py` places the gateway and the database.

    python bench/statement_cost.py --create --cpu 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overhead import postgres_pinned  # noqa: E402

from app.store.responses import _ENQUEUE_SQL, _INSERT_RESPONSE_SQL  # noqa: E402


def enqueue_arguments() -> tuple[Any, ...]:
    """The statement's 24 arguments for a new queued response, as `_enqueue_postgres` passes
    them (its job handed to this process's worker: inserted `running`, with a lease)."""
    rid = f"resp_{uuid.uuid4().hex}"
    item = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Say something short. " + "x" * 43}],
    }
    body = {"id": rid, "object": "response", "created_at": 1, "status": "queued", "model": "m"}
    request = {"model": "m", "input": item["content"][0]["text"], "background": True}
    now = time.time()
    return (
        *(rid, "", [item["id"]], [item["type"]], orjson.dumps([item]).decode()),
        *(True, False, int(now), "in_progress", "m", None, orjson.dumps(body).decode()),
        *("[]", [-1], 1),
        *(None, "running", now, orjson.dumps(request).decode(), [], [], 0, "owner", now + 60),
    )


def create_arguments() -> tuple[Any, ...]:
    """The create statement's 15 arguments for a completed response with one new input message
    and a 16-word answer, as `_insert_response_postgres` passes them."""
    rid = f"resp_{uuid.uuid4().hex}"
    items = [
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_text", "text": "Say something short. " + "x" * 43}],
        },
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "word " * 16, "annotations": [], "logprobs": []}
            ],
        },
    ]
    body = {"id": rid, "object": "response", "created_at": 1, "status": "completed", "model": "m"}
    body["usage"] = {"input_tokens": 12, "output_tokens": 16, "total_tokens": 28}
    return (
        *(rid, "", [item["id"] for item in items], [item["type"] for item in items]),
        orjson.dumps(items).decode(),
        *(False, False, int(time.time()), "completed", "m", None, orjson.dumps(body).decode()),
        *("[]", [-1], 1),
    )


async def timed(
    connection: asyncpg.Connection, query: str, calls: list[tuple[Any, ...]]
) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for arguments in calls:
        await connection.execute(query, *arguments)
    n = len(calls)
    return {
        "wall_us": round(1e6 * (time.perf_counter() - wall) / n, 1),
        "cpu_us": round(1e6 * (time.process_time() - cpu) / n, 1),
    }


async def measure(dsn: str, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": n}
    for commit in ("on", "off"):
        settings = {"synchronous_commit": commit}
        connection = await asyncpg.connect(dsn, server_settings=settings)
        try:
            for query, arguments in (
                ("enqueue", enqueue_arguments),
                ("create", create_arguments),
            ):
                sql = _ENQUEUE_SQL if query == "enqueue" else _INSERT_RESPONSE_SQL
                for _ in range(200):  # warm-up: the statement prepared, the caches hot
                    await connection.execute(sql, *arguments())
                name = query if commit == "on" else f"{query}_without_flush"
                out[name] = await timed(connection, sql, [arguments() for _ in range(n)])
        finally:
            await connection.close()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE TEMP TABLE trivial (id text, data text)")
        rows = [(uuid.uuid4().hex, "x" * 200) for _ in range(n)]
        out["trivial_temp_insert"] = await timed(
            connection, "INSERT INTO trivial VALUES ($1, $2)", rows
        )
    finally:
        await connection.close()
    return out


async def create_database(admin_url: str) -> str:
    name = f"rg_stmt_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", help="a migrated database, postgresql://… (asyncpg form)")
    parser.add_argument(
        "--create", action="store_true", help="make a migrated database, then drop it"
    )
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("-n", type=int, default=2000, help="timed calls of each statement")
    parser.add_argument(
        "--cpu", type=int, help="pin to this CPU, and a local PostgreSQL server to the others"
    )
    args = parser.parse_args()
    if not args.create and not args.dsn:
        parser.error("give --dsn or --create")
    name = None
    dsn = args.dsn
    if args.create:
        name = asyncio.run(create_database(args.admin_url))
        dsn = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
        env = {**os.environ, "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://")}
        gateway = Path(sys.executable).parent / "responses-gateway"
        subprocess.run([str(gateway), "migrate"], check=True, env=env, capture_output=True)
    try:
        with contextlib.ExitStack() as stack:
            if args.cpu is not None:
                others = sorted(set(range(os.cpu_count() or 1)) - {args.cpu}) or [args.cpu]
                stack.enter_context(postgres_pinned(",".join(map(str, others)), args.admin_url))
                os.sched_setaffinity(0, {args.cpu})
            print(json.dumps(uvloop.run(measure(dsn, args.n))))
    finally:
        if name is not None:
            asyncio.run(drop_database(args.admin_url, name))


if __name__ == "__main__":
    main()
