#!/usr/bin/env python3
"""Cost of per-key rate limiting: the admission UPSERT alone, sequential and with 32 concurrent
callers on one key and on 32 keys, on a fresh PostgreSQL database.

    .venv/bin/python bench/rate_limit.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.keys import Principal  # noqa: E402
from app.core.limits import RateLimiter  # noqa: E402
from app.errors import RateLimitError  # noqa: E402
from app.store.database import Database  # noqa: E402
from app.store.engine import create_engine  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def admit(limiter: RateLimiter, principal: Principal) -> float:
    started = time.perf_counter()
    try:
        await limiter.admit(principal)
    except RateLimitError:
        pass
    return time.perf_counter() - started


async def run(url: str, n: int) -> None:
    engine = create_engine(url)
    limiter = RateLimiter(Database(engine))
    one = Principal("p", "key_one", rpm=10**9)
    for _ in range(50):  # warm the pool and the statement cache
        await admit(limiter, one)
    sequential = [await admit(limiter, one) for _ in range(n)]
    print(f"sequential, one key:   median {statistics.median(sequential) * 1e3:.3f} ms")  # noqa: T201
    for label, keys in (("32 concurrent, one key", 1), ("32 concurrent, 32 keys", 32)):
        principals = [Principal("p", f"key_{i % keys}", rpm=10**9) for i in range(32)]
        started = time.perf_counter()
        rounds = n // 32
        for _ in range(rounds):
            await asyncio.gather(*(admit(limiter, p) for p in principals))
        per_second = rounds * 32 / (time.perf_counter() - started)
        print(f"{label}: {per_second:,.0f} admissions/s")  # noqa: T201
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    name = f"rg_bench_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(ADMIN_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate", "--database-url", url],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        asyncio.run(run(url, args.n))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
