#!/usr/bin/env python3
"""WebSocket mode against HTTP streaming, on one gateway: the agent-loop case WebSocket mode
is for. Each of three modes runs chains of `--turns` streamed turns (16 tokens each, instant
mock upstream), every turn continuing from the one before with `previous_response_id` and
only its new input, at c=1:

- `http`: `POST /v1/responses` with `stream: true`, `store: true` (HTTP cannot continue a
  `store: false` chain), one keep-alive connection;
- `ws store:true`: the same turns as `response.create` events on one WebSocket per chain;
- `ws store:false`: the same, unstored: the gateway continues from the connection's memory.

The modes alternate round by round (same minutes, same host noise). Per mode: time to the first
delta and to `response.completed` as the client sees it (p50 / p99 over every turn), and the
gateway's CPU per turn (its process's CPU time over the round, divided by turns). The clients
differ (httpx for HTTP, `websockets` for WebSocket), so compare the gateway CPU first; the
latencies include each client's own cost.

Setup as `bench/overhead.py`: the gateway pinned to its CPU, the mock, the client and the
PostgreSQL server on the other, a fresh PostgreSQL database migrated and dropped at the end.

    .venv/bin/python bench/websocket.py            # about a minute
    .venv/bin/python bench/websocket.py --smoke    # tiny, for CI: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets.asyncio.client
from context_depth import DEFAULT_ADMIN_URL, git_commit, migrate, percentile, postgres_database
from loadgen import cpu_seconds
from overhead import (
    Rig,
    cpu_times,
    pinning,
    postgres_pinned,
    start_mocks,
    start_ours,
    steal_percent,
)

MODES = ("http", "ws store:true", "ws store:false")
AUTH = {"authorization": "Bearer sk-bench"}


def body(model: str, turn: int, previous: str | None, store: bool) -> dict[str, Any]:
    return {
        "model": model,
        "input": [{"role": "user", "content": f"turn {turn}: go on"}],
        "previous_response_id": previous,
        "store": store,
    }


async def http_chain(
    client: httpx.AsyncClient, base: str, model: str, turns: int
) -> list[tuple[float, float]]:
    timings = []
    previous = None
    for turn in range(turns):
        request = {**body(model, turn, previous, True), "stream": True}
        started = time.perf_counter()
        first = 0.0
        async with client.stream("POST", f"{base}/v1/responses", json=request) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                if not first and line.startswith("event: response.output_text.delta"):
                    first = time.perf_counter() - started
                elif line.startswith("data: ") and '"response.completed"' in line[:40]:
                    previous = orjson.loads(line[6:])["response"]["id"]
        timings.append((first, time.perf_counter() - started))
    return timings


async def ws_chain(base: str, model: str, turns: int, store: bool) -> list[tuple[float, float]]:
    timings = []
    previous = None
    url = base.replace("http://", "ws://") + "/v1/responses"
    async with websockets.asyncio.client.connect(
        url, additional_headers=AUTH, compression=None, max_size=None
    ) as socket:
        for turn in range(turns):
            started = time.perf_counter()
            await socket.send(
                orjson.dumps(
                    {"type": "response.create", **body(model, turn, previous, store)}
                ).decode()
            )
            first = 0.0
            while True:
                event = orjson.loads(await socket.recv(decode=False))
                kind = event["type"]
                if not first and kind == "response.output_text.delta":
                    first = time.perf_counter() - started
                elif kind == "response.completed":
                    previous = event["response"]["id"]
                    break
                elif kind in ("error", "response.failed"):
                    raise RuntimeError(f"turn {turn}: {event}")
            timings.append((first, time.perf_counter() - started))
    return timings


async def run_mode(
    mode: str, base: str, model: str, chains: int, turns: int
) -> list[tuple[float, float]]:
    timings: list[tuple[float, float]] = []
    if mode == "http":
        async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
            for _ in range(chains):
                timings += await http_chain(client, base, model, turns)
    else:
        for _ in range(chains):
            timings += await ws_chain(base, model, turns, store=mode.endswith("true"))
    return timings


def measure(base: str, pid: int, model: str, args: argparse.Namespace) -> dict[str, Any]:
    modes = [mode for mode in MODES if mode in args.modes.split(",")]
    results: dict[str, dict[str, Any]] = {m: {"timings": [], "cpu": 0.0, "turns": 0} for m in modes}
    for mode in modes:  # warm-up: connections, caches, code paths
        asyncio.run(run_mode(mode, base, model, 2, min(args.turns, 5)))
    times = cpu_times()
    for _ in range(args.rounds):
        for mode in modes:
            before = cpu_seconds([pid])
            timings = asyncio.run(run_mode(mode, base, model, args.chains, args.turns))
            results[mode]["cpu"] += cpu_seconds([pid]) - before
            results[mode]["timings"] += timings
            results[mode]["turns"] += len(timings)
    summary: dict[str, Any] = {"steal_percent": steal_percent(times, cpu_times())}
    for mode, data in results.items():
        firsts = [first * 1000 for first, _ in data["timings"]]
        totals = [total * 1000 for _, total in data["timings"]]
        summary[mode] = {
            "turns": data["turns"],
            "ttft_p50_ms": percentile(firsts, 50),
            "ttft_p99_ms": percentile(firsts, 99),
            "total_p50_ms": percentile(totals, 50),
            "total_p99_ms": percentile(totals, 99),
            "cpu_ms_per_turn": data["cpu"] * 1000 / data["turns"],
        }
    return summary


def report(summary: dict[str, Any], header: str, args: argparse.Namespace) -> None:
    print(f"\n{header}\n")
    print(
        f"{args.chains} chains of {args.turns} turns per mode and round, {args.rounds} rounds, "
        f"modes interleaved; CPU steal over the run: {summary['steal_percent']:.1f}%\n"
    )
    print("| mode | turns | first delta p50 / p99 ms | completed p50 / p99 ms | CPU per turn ms |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        if mode not in summary:
            continue
        row = summary[mode]
        first = f"{row['ttft_p50_ms']:.2f} / {row['ttft_p99_ms']:.2f}"
        total = f"{row['total_p50_ms']:.2f} / {row['total_p99_ms']:.2f}"
        print(f"| {mode} | {row['turns']} | {first} | {total} | {row['cpu_ms_per_turn']:.3f} |")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20, help="turns per chain")
    parser.add_argument("--chains", type=int, default=10, help="chains per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny load: checks it runs")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="which modes, comma-separated (profiling)"
    )
    parser.add_argument("--gw-cpu", default="1")
    parser.add_argument("--rig-cpu", default="0")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--json-out", help="append the summary as one JSON line here")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.smoke:
        args.turns, args.chains, args.rounds = 3, 1, 1
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rg-ws-")))
        rig = Rig(sys.executable, args.rig_cpu, workdir, workdir / "results.jsonl")
        start_mocks(rig, stack)
        database_url = stack.enter_context(postgres_database(args.admin_url))
        where = stack.enter_context(postgres_pinned(args.rig_cpu, args.admin_url))
        migrate(database_url, workdir / "migrate.log")
        system, server = start_ours(rig, stack, database_url, args.gw_cpu)
        try:
            summary = measure(system.base, system.pid, system.model, args)
        except Exception as exc:
            raise RuntimeError(f"{exc}\n--- gateway log (tail) ---\n{server.log_tail()}") from exc
        pinned = "pinned" if pinning(args.gw_cpu) else "NOT pinned"
        header = (
            f"## WebSocket mode vs HTTP streaming — {datetime.date.today().isoformat()}, commit "
            f"{git_commit()}, {os.cpu_count()} CPUs ({platform.machine()}), "
            f"gateway on CPU {args.gw_cpu} ({pinned}), client and mock on CPU {args.rig_cpu}, "
            f"PostgreSQL ({where}), "
            + ("SMOKE load: the numbers mean nothing" if args.smoke else "full load")
        )
        report(summary, header, args)
        if args.json_out:
            with open(args.json_out, "a") as out:
                out.write(json.dumps({"header": header, **summary}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
