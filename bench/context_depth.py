#!/usr/bin/env python3
"""Context-depth benchmark: the time to create turn N of a `previous_response_id` chain.

Target (from the issue): on Postgres, creating turn 1000 must not take more than 3× as long as
creating turn 10 (compared at p50).

What runs, all on loopback:
- `bench/mock_upstream.py`, an instant OpenAI-compatible upstream, as a subprocess;
- a fresh PostgreSQL database `rg_bench_<random>` (or `--database-url`), migrated with
  `responses-gateway migrate`;
- `responses-gateway serve` as a subprocess, with a temporary models file routing `bench-model`
  to the mock over Chat Completions.

Method: build one chain of max(depths) turns over real HTTP. Then, for each depth N, create
`--samples` responses whose `previous_response_id` is turn N-1 of the chain (none for N = 1). Each
sample branches off the chain, so the depth stays N for every sample. The depths are interleaved
round by round, so drift hits every depth alike. One client, one keep-alive connection, one
request at a time; the time is from sending the request to having read the whole response.

Everything is cleaned up on exit, Ctrl-C and SIGTERM included: the subprocesses are stopped, and
the database is dropped if this script created it.

    .venv/bin/python bench/context_depth.py [--samples 30] [--depths 1,10,100,1000]
    .venv/bin/python bench/context_depth.py --database-url sqlite   # a temporary SQLite file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL = "bench-model"
TARGET_RATIO = 3.0  # p50(turn 1000) / p50(turn 10)
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 60.0


# --- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Summary:
    depth: int
    samples: int
    p50: float
    p90: float
    p99: float
    mean: float
    context_items: int | None

    @classmethod
    def of(cls, depth: int, seconds: Sequence[float], context_items: int | None) -> Summary:
        ms = [s * 1000 for s in seconds]
        return cls(
            depth=depth,
            samples=len(ms),
            p50=percentile(ms, 50),
            p90=percentile(ms, 90),
            p99=percentile(ms, 99),
            mean=sum(ms) / len(ms),
            context_items=context_items,
        )


# --- processes and the database ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A subprocess in its own session (so a terminal Ctrl-C reaches only us, and we stop it),
    with its output in a log file that is shown if it fails."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def wait_until_answering(url: str, child: Child) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not answer {url}:\n{child.log_tail()}")
        time.sleep(0.1)


def admin_execute(admin_url: str, sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def gateway_command() -> list[str]:
    """The `responses-gateway` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "responses-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]


def gateway_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GATEWAY_LOG_LEVEL"] = "warning"  # no access log line per request
    for name in ("DATABASE_URL", "GATEWAY_CONFIG", "GATEWAY_HOST", "GATEWAY_PORT"):
        env.pop(name, None)  # the flags below are the whole configuration
    return env


def migrate(database_url: str, log_path: Path) -> None:
    with log_path.open("wb") as log:
        result = subprocess.run(
            [*gateway_command(), "migrate", "--database-url", database_url],
            cwd=REPO_DIR,
            env=gateway_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{log_path.read_text(errors='replace')}")


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database; its async URL for the gateway. Dropped on exit."""
    name = f"rg_bench_{uuid.uuid4().hex[:12]}"
    admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        base = admin_url.rsplit("/", 1)[0]
        yield base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    finally:
        # A Ctrl-C during the drop must not leave the database behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped database {name}")
        finally:
            signal.signal(signal.SIGINT, previous)


# --- the gateway client ------------------------------------------------------------------------


class Gateway:
    def __init__(self, base_url: str) -> None:
        # One keep-alive connection, as a real client holding a session would use.
        self._client = httpx.Client(
            base_url=base_url,
            timeout=REQUEST_TIMEOUT,
            headers={"Authorization": "Bearer sk-bench"},
            limits=httpx.Limits(max_connections=1),
        )

    def close(self) -> None:
        self._client.close()

    def create(self, text: str, previous: str | None) -> tuple[str, float]:
        """Create one turn; its id and the wall time from request to full response."""
        body: dict[str, Any] = {"model": MODEL, "input": text}
        if previous is not None:
            body["previous_response_id"] = previous
        started = time.perf_counter()
        response = self._client.post("/v1/responses", json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"POST /v1/responses: {response.status_code} {response.text}")
        data = response.json()
        if data.get("status") != "completed":
            raise RuntimeError(f"turn not completed: {data.get('status')} {data.get('error')}")
        return str(data["id"]), elapsed

    def context_items(self, response_id: str) -> int:
        """How many items the response was generated from (inherited context + its input): with
        no instructions and message items only, the number of messages the upstream received."""
        count, after = 0, None
        while True:
            params: dict[str, str | int] = {"limit": 100, "order": "asc"}
            if after is not None:
                params["after"] = after
            response = self._client.get(f"/v1/responses/{response_id}/input_items", params=params)
            response.raise_for_status()
            page = response.json()
            count += len(page["data"])
            if not page["has_more"]:
                return count
            after = page["data"][-1]["id"]


# --- the benchmark -----------------------------------------------------------------------------


@dataclass(slots=True)
class ChainBuild:
    ids: list[str]  # ids[k] is turn k + 1
    seconds: list[float]


def build_chain(gateway: Gateway, turns: int) -> ChainBuild:
    ids: list[str] = []
    seconds: list[float] = []
    previous: str | None = None
    for turn in range(1, turns + 1):
        previous, elapsed = gateway.create(f"Turn {turn}: one short line, please.", previous)
        ids.append(previous)
        seconds.append(elapsed)
        if turn % 100 == 0:
            print(f"  chain: {turn}/{turns} turns", flush=True)
    return ChainBuild(ids, seconds)


def measure(
    gateway: Gateway, chain: list[str], depths: list[int], samples: int, warmup: int
) -> dict[int, list[float]]:
    """`samples` creations of turn N per depth, branching off turn N-1, depths interleaved."""

    def parent(depth: int) -> str | None:
        return chain[depth - 2] if depth > 1 else None

    for _ in range(warmup):
        for depth in depths:
            gateway.create("Warm-up branch.", parent(depth))
    timings: dict[int, list[float]] = {depth: [] for depth in depths}
    for round_index in range(samples):
        # Rotate the order each round so no depth always follows the same one.
        shift = round_index % len(depths)
        for depth in depths[shift:] + depths[:shift]:
            _, elapsed = gateway.create(f"Branch {round_index} at depth {depth}.", parent(depth))
            timings[depth].append(elapsed)
    return timings


def window_mean_ms(seconds: list[float], first: int, last: int) -> float:
    """Mean wall time of chain turns first..last (1-based, inclusive), in ms."""
    window = seconds[first - 1 : last]
    return 1000 * sum(window) / len(window)


def git_commit() -> str:
    """The short commit of the code under test, with `+dirty` if app/ or migrations/ differ."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "app", "migrations")
    return f"{commit}+dirty" if dirty else commit


def print_report(
    summaries: list[Summary], chain: ChainBuild, database_kind: str, samples: int
) -> None:
    print()
    print(
        f"## Turn-N creation time ({database_kind}, {samples} samples per depth, c=1, "
        f"instant upstream)"
    )
    print()
    print("| turn N | context items | p50 ms | p90 ms | p99 ms | mean ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in summaries:
        items = "?" if s.context_items is None else str(s.context_items)
        print(f"| {s.depth} | {items} | {s.p50:.2f} | {s.p90:.2f} | {s.p99:.2f} | {s.mean:.2f} |")
    if samples < 100:
        print(f"\n(p99 of {samples} samples is close to the maximum)")
    print()
    turns = len(chain.seconds)
    print(f"chain build: {turns} turns in {sum(chain.seconds):.1f} s of request time", end="")
    if turns >= 20:
        print(
            f"; mean of turns 1-10 {window_mean_ms(chain.seconds, 1, 10):.2f} ms, "
            f"turns {turns - 9}-{turns} {window_mean_ms(chain.seconds, turns - 9, turns):.2f} ms"
        )
    else:
        print()
    by_depth = {s.depth: s for s in summaries}
    if 10 in by_depth and 1000 in by_depth:
        ratio = by_depth[1000].p50 / by_depth[10].p50
        verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(
            f"ratio p50(turn 1000) / p50(turn 10) = {ratio:.2f} "
            f"(target <= {TARGET_RATIO:g}): {verdict}"
        )
    else:
        print("ratio: needs depths 10 and 1000")


def parse_depths(text: str) -> list[int]:
    try:
        depths = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not depths or depths[0] < 1 or depths[-1] > 100_000:
        raise argparse.ArgumentTypeError("depths must be between 1 and 100000")
    return depths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        help="use this database instead of a fresh Postgres one: migrated, never dropped; "
        "'sqlite' means a temporary SQLite file",
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help=f"Postgres server to create the bench database on (default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--depths", type=parse_depths, default=[1, 10, 100, 1000])
    parser.add_argument("--samples", type=int, default=30, help="timed requests per depth")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per depth first")
    return parser


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    depths: list[int] = args.depths
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rg-bench-")))

    mock_port = free_port()
    mock = Child(
        "mock upstream",
        [
            sys.executable,
            str(BENCH_DIR / "mock_upstream.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(mock_port),
            "--model",
            MODEL,
        ],
        workdir / "mock.log",
        dict(os.environ),
    )
    stack.callback(mock.stop)
    mock_url = f"http://127.0.0.1:{mock_port}"
    wait_until_answering(f"{mock_url}/v1/models", mock)

    if args.database_url is None:
        database_url = stack.enter_context(postgres_database(args.admin_url))
        database_kind = "PostgreSQL, fresh database"
    elif args.database_url == "sqlite":
        database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        database_kind = "SQLite, temporary file"
    else:
        database_url = args.database_url
        database_kind = database_url.split(":", 1)[0]
    migrate(database_url, workdir / "migrate.log")

    models_file = workdir / "models.yaml"
    models_file.write_text(
        f"models:\n  - name: {MODEL}\n    backend: chat_completions\n    base_url: {mock_url}/v1\n",
        encoding="utf-8",
    )
    gateway_port = free_port()
    server = Child(
        "gateway",
        [
            *gateway_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(gateway_port),
            "--config",
            str(models_file),
            "--database-url",
            database_url,
        ],
        workdir / "gateway.log",
        gateway_env(),
    )
    stack.callback(server.stop)
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    wait_until_answering(f"{gateway_url}/v1/models", server)

    gateway = Gateway(gateway_url)
    stack.callback(gateway.close)
    print(
        f"commit {git_commit()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"database: {database_kind}"
    )
    chain_turns = max(depths)
    try:
        print(f"building a chain of {chain_turns} turns ...", flush=True)
        chain = build_chain(gateway, chain_turns)
        print(f"measuring depths {depths}: {args.warmup} warm-up + {args.samples} samples each ...")
        timings = measure(gateway, chain.ids, depths, args.samples, args.warmup)
        summaries = [
            Summary.of(depth, timings[depth], gateway.context_items(chain.ids[depth - 1]))
            for depth in depths
        ]
    except (RuntimeError, httpx.HTTPError) as exc:
        raise RuntimeError(f"{exc}\n--- gateway log (tail) ---\n{server.log_tail()}") from exc
    print_report(summaries, chain, database_kind, args.samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.samples < 1 or args.warmup < 0:
        print("--samples must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with contextlib.ExitStack() as stack:
            run(args, stack)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"context_depth: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
