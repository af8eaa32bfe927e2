#!/usr/bin/env python3
"""Background-mode benchmark: enqueue latency, enqueue-to-start latency and completed jobs per
second, with 1 and 2 gateway processes on one fresh PostgreSQL database and an instant upstream.

    .venv/bin/python bench/background_queue.py [--jobs 400] [--concurrency 16] [--processes 1,2]

Everything runs on loopback with bounded counts. The upstream is an in-process aiohttp server
that answers a streamed Chat Completion at once and records when each job's request arrived;
enqueue-to-start is that arrival time minus the moment the enqueueing POST was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Upstream:
    """Instant streamed Chat Completions; records the arrival time of each job's request."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.arrivals.setdefault(body["messages"][-1]["content"], time.monotonic())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for delta, finish in (({"content": "done"}, None), ({}, "stop")):
            chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


async def run(jobs: int, concurrency: int, processes: int) -> dict[str, float]:
    upstream = Upstream()
    await upstream.start()
    name = f"rg_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    database_url = base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    gateways: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    try:
        config = workdir / "models.yaml"
        config.write_text(
            "models:\n  - name: bench\n    backend: chat_completions\n"
            f"    base_url: http://127.0.0.1:{upstream.port}/v1\n"
        )
        env = {**os.environ, "DATABASE_URL": database_url, "GATEWAY_CONFIG": str(config)}
        env["GATEWAY_LOG_LEVEL"] = "warning"
        cli = [sys.executable, "-m", "app.cli"]
        subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        ports = [free_port() for _ in range(processes)]
        for port in ports:
            gateways.append(
                subprocess.Popen(
                    [*cli, "serve", "--port", str(port)],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=(workdir / f"gw-{port}.log").open("wb"),
                )
            )
        async with httpx.AsyncClient(timeout=30) as client:
            for port in ports:
                for _ in range(300):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{port}/v1/models")).is_success:
                            break
                    await asyncio.sleep(0.1)
            enqueued: dict[str, float] = {}
            enqueue_ms: list[float] = []
            queue: asyncio.Queue[int] = asyncio.Queue()
            for index in range(jobs):
                queue.put_nowait(index)

            async def submit() -> None:
                while not queue.empty():
                    index = queue.get_nowait()
                    port = ports[index % len(ports)]
                    sent = time.monotonic()
                    response = await client.post(
                        f"http://127.0.0.1:{port}/v1/responses",
                        json={"model": "bench", "input": f"job {index}", "background": True},
                    )
                    answered = time.monotonic()
                    assert response.status_code == 200, response.text
                    enqueue_ms.append((answered - sent) * 1000)
                    enqueued[f"job {index}"] = answered

            started = time.monotonic()
            await asyncio.gather(*(submit() for _ in range(concurrency)))
            plain = database_url.replace("postgresql+asyncpg://", "postgresql://")
            watcher = await asyncpg.connect(plain)
            try:
                while True:
                    done = await watcher.fetchval("SELECT count(*) FROM jobs WHERE status='done'")
                    if done >= jobs:
                        break
                    await asyncio.sleep(0.02)
                finished = time.monotonic()
                statuses = await watcher.fetch("SELECT status, count(*) FROM responses GROUP BY 1")
            finally:
                await watcher.close()
        to_start = [
            (upstream.arrivals[key] - enqueued[key]) * 1000
            for key in enqueued
            if key in upstream.arrivals
        ]
        assert {row["status"]: row["count"] for row in statuses} == {"completed": jobs}
        return {
            "processes": processes,
            "jobs": jobs,
            "enqueue p50 ms": statistics.median(enqueue_ms),
            "enqueue p99 ms": pct(enqueue_ms, 0.99),
            "to start p50 ms": statistics.median(to_start),
            "to start p99 ms": pct(to_start, 0.99),
            "jobs/s": jobs / (finished - started),
        }
    finally:
        for gateway in gateways:
            gateway.terminate()
        for gateway in gateways:
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(30)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        await upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent enqueuers")
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    rows = [
        asyncio.run(run(args.jobs, args.concurrency, int(n))) for n in args.processes.split(",")
    ]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print(
            "| "
            + " | ".join(
                f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys
            )
            + " |"
        )


if __name__ == "__main__":
    main()
