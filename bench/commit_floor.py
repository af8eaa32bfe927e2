"""The database's own floor under the background enqueue: a durable one-row INSERT, committed.

The enqueue answers only once its row is committed (`synchronous_commit = on`: the WAL flushed
to disk), so its latency can never be below what this server takes to commit one small row.
This times that alone — one connection, one prepared autocommitted INSERT of a ~1 KB JSON
document at a time, nothing else running — and prints one JSON line with its percentiles.
`overhead.py` runs it pinned to the gateway's CPU just before and just after the enqueue phase,
so each report shows what the window's disk allowed.

    python bench/commit_floor.py --dsn postgresql://postgres@127.0.0.1:5432/test -n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg
from loadgen import pct

TABLE = "bench_commit_floor"
BODY = json.dumps({"object": "response", "status": "queued", "instructions": "x" * 960})


async def measure(dsn: str, samples: int, warmup: int) -> dict[str, float | int]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, body json)"
        )
        insert = await connection.prepare(f"INSERT INTO {TABLE} (id, body) VALUES ($1, $2)")
        prefix = uuid.uuid4().hex[:8]
        latencies: list[float] = []
        for n in range(warmup + samples):
            started = time.perf_counter()
            await insert.fetch(f"{prefix}-{n}", BODY)
            if n >= warmup:
                latencies.append((time.perf_counter() - started) * 1000)
        await connection.execute(f"DROP TABLE {TABLE}")
    finally:
        await connection.close()
    latencies.sort()
    return {
        "samples": samples,
        "p50": round(pct(latencies, 50), 3),
        "p90": round(pct(latencies, 90), 3),
        "p99": round(pct(latencies, 99), 3),
        "max": round(latencies[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="postgresql://… (asyncpg form)")
    parser.add_argument("-n", type=int, default=1000, help="timed commits")
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.dsn, args.n, args.warmup))))


if __name__ == "__main__":
    main()
