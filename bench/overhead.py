#!/usr/bin/env python3
"""Gateway overhead benchmark: what responses-gateway adds on top of its upstream (issue 8's
table, plus issue 3's streaming TTFB / per-event numbers), optionally side by side with LiteLLM
and the bare FastAPI floor in the same run.

What runs, all on loopback, every load bounded in requests and seconds:
- three instances of `bench/mock_upstream.py` on the rig CPU: instant (16 tokens), instant long
  (128 tokens, for the marginal CPU per event) and paced (20 ms to the first token, then 5 ms
  between 32 tokens);
- a fresh PostgreSQL database `rg_bench_<random>`, migrated, dropped at the end;
- `responses-gateway serve` pinned to the gateway CPU (`taskset -c 1`), routing three models to
  the three mocks over Chat Completions (the Responses → Chat translation, `store: true`);
- `bench/loadgen.py` on the rig CPU (`taskset -c 0`) for every measurement.

With `--compare`: LiteLLM (its Responses → Chat bridge, no database; installed into its own
throwaway venv, by default /tmp/litellm-venv) and `bench/floor_proxy.py` (FastAPI + httpx on the
aiohttp transport, a byte pass-through: the floor of our stack) are measured the same way, one
after the other, on the same CPU.

    .venv/bin/python bench/overhead.py             # our gateway (about 3 minutes)
    .venv/bin/python bench/overhead.py --compare   # + LiteLLM + floor (about 8 minutes)
    .venv/bin/python bench/overhead.py --smoke     # tiny loads, for CI: checks it runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
from context_depth import (
    DEFAULT_ADMIN_URL,
    Child,
    free_port,
    gateway_command,
    gateway_env,
    git_commit,
    migrate,
    postgres_database,
    wait_until_answering,
)
from loadgen import cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
LITELLM_VERSION = "1.108.7"
MOCK_MODEL = "mock-model"  # the model name the mocks answer as
TOKENS, LONG_TOKENS, PACED_TOKENS = 16, 128, 32
PACED_TTFT_MS, PACED_ITL_MS = 20, 5


@dataclass(frozen=True, slots=True)
class Load:
    """How much to send in each measurement."""

    ab_rounds: int = 10
    ab_per_round: int = 100
    ab_warmup: int = 50
    conc: int = 32
    stream_conc: int = 64
    duration: float = 10.0
    requests: int = 20_000
    warmup: int = 200
    paced_rounds: int = 4
    paced_per_round: int = 10
    paced_duration: float = 6.0
    depth: int = 100
    background_jobs: int = 3000
    memory_requests: int = 0


FULL = Load()
SMOKE = Load(
    ab_rounds=2,
    ab_per_round=5,
    ab_warmup=2,
    conc=4,
    stream_conc=4,
    duration=1.0,
    requests=40,
    warmup=4,
    paced_rounds=2,
    paced_per_round=2,
    paced_duration=1.0,
    depth=5,
    background_jobs=20,
)


# --- the rig -----------------------------------------------------------------------------------


def pinning(cpu: str) -> list[str]:
    """`taskset -c CPU` where that makes sense (two or more CPUs and taskset present)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpu]


def _postgres_pids(admin_url: str) -> list[int]:
    """The processes of the PostgreSQL server at `admin_url` (its postmaster, from
    `postmaster.pid` in its data directory, and the postmaster's children), if it runs here."""

    async def data_directory() -> str:
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            return str(await connection.fetchval("SHOW data_directory"))
        finally:
            await connection.close()

    try:
        lines = (Path(asyncio.run(data_directory())) / "postmaster.pid").read_text().split()
    except (OSError, asyncpg.PostgresError):
        return []  # not readable from here (another user's, another host's, a container's)
    postmaster = int(lines[0]) if lines and lines[0].isdigit() else 0
    return [postmaster, *_children(postmaster)] if postmaster else []


def _cpu_list(text: str) -> set[int]:
    """`taskset -c` syntax: `0`, `0,2`, `0-3`."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


@contextlib.contextmanager
def postgres_pinned(cpu: str, admin_url: str) -> Iterator[str]:
    """Move a local PostgreSQL server's processes to `cpu` for the run (new backends fork from
    the postmaster and inherit it), and give them back their CPUs after. PostgreSQL is, like
    the upstream, a server the gateway talks to: on the gateway's core it takes a fifth of it
    under load, which then shows as gateway latency. The gateway's CPU per request is measured
    on its own process tree either way. Yields what the report says about it."""
    host = urlsplit(admin_url).hostname or "localhost"
    if cpu == "none" or (os.cpu_count() or 1) < 2 or host not in ("127.0.0.1", "localhost", "::1"):
        yield "not pinned"
        return
    saved: dict[int, set[int]] = {}
    try:
        for pid in _postgres_pids(admin_url):
            with contextlib.suppress(ProcessLookupError):
                mask = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, _cpu_list(cpu))
                saved[pid] = mask
        where = f"on CPU {cpu}" if saved else "not pinned (its processes are not visible here)"
    except (OSError, ValueError) as exc:  # no permission, a CPU outside its cpuset, a bad list
        where = f"not pinned ({type(exc).__name__})"
        _restore(saved)
        saved = {}
    try:
        yield where
    finally:
        _restore(saved)


def _restore(saved: dict[int, set[int]]) -> None:
    for pid, mask in saved.items():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, mask)


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children, in MB."""
    total = 0
    for child in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        tasks = Path(f"/proc/{pid}/task")
        found: list[int] = []
        for task in tasks.iterdir():
            text = (task / "children").read_text().split()
            found += [int(p) for p in text]
        return found + [g for c in found for g in _children(c)]
    return []


@dataclass(slots=True)
class Rig:
    python: str
    rig_cpu: str
    workdir: Path
    json_out: Path
    instant: str = ""
    long: str = ""
    paced: str = ""

    def loadgen(self, args: list[str], timeout: float = 900) -> dict[str, Any]:
        argv = [
            *pinning(self.rig_cpu),
            self.python,
            str(BENCH_DIR / "loadgen.py"),
            *args,
            "--uvloop",
            "--json-out",
            str(self.json_out),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen failed: {' '.join(args[:3])}\n{result.stderr[-2000:]}")
        data: dict[str, Any] = json.loads(lines[-1])
        return data


@dataclass(slots=True)
class System:
    """One gateway under test."""

    name: str
    base: str
    pid: int
    model: str
    paced_model: str
    long_model: str | None
    auth: str = "Bearer sk-bench"
    stateful: bool = False  # stores responses: the depth and background phases apply
    database_url: str | None = None
    served: int = 0  # requests it answered during the run
    rss: list[tuple[int, float]] = field(default_factory=list)

    def note_rss(self) -> None:
        self.rss.append((self.served, rss_mb(self.pid)))


# --- measurements ------------------------------------------------------------------------------


def _stream_args(stream: bool, events: int) -> list[str]:
    return ["--stream", "--expect-events", str(events)] if stream else []


def ab(
    rig: Rig,
    system: System,
    load: Load,
    *,
    label: str,
    stream: bool = False,
    direct: str | None = None,
    model: str | None = None,
    events: int = TOKENS,
    body_b: Path | None = None,
    body_a: Path | None = None,
    rounds: int | None = None,
    per_round: int | None = None,
) -> dict[str, Any]:
    args = [
        "ab",
        *_stream_args(stream, events),
        "--label",
        f"{system.name} {label}",
        "--url_a",
        f"{direct or rig.instant}/v1/responses",
        "--url_b",
        f"{system.base}/v1/responses",
        "--model_b",
        model or system.model,
        "--header_b",
        f"Authorization: {system.auth}",
        "--rounds",
        str(rounds or load.ab_rounds),
        "--per-round",
        str(per_round or load.ab_per_round),
        "--warmup",
        str(load.ab_warmup),
    ]
    if body_b is not None:
        args += ["--body-file_b", str(body_b)]
    if body_a is not None:
        args += ["--body-file_a", str(body_a)]
    times = cpu_times()
    result = rig.loadgen(args)
    # The c=1 rows are the ones a busy host moves most: each report says how busy it was.
    result["steal_percent"] = steal_percent(times, cpu_times())
    system.served += result["B"]["requests"] + load.ab_warmup
    return result


def closed_loop(
    rig: Rig,
    system: System | None,
    load: Load,
    *,
    label: str,
    stream: bool = False,
    conc: int | None = None,
    model: str | None = None,
    events: int = TOKENS,
    url: str | None = None,
    duration: float | None = None,
    requests: int | None = None,
    body: Path | None = None,
    warmup: int | None = None,
) -> dict[str, Any]:
    """A closed loop against `system` (gateway CPU charged per request), or against `url`
    (direct, no CPU accounting) when `system` is None."""
    target = url if system is None else f"{system.base}/v1/responses"
    args = [
        "run",
        *_stream_args(stream, events),
        "--label",
        f"{system.name if system else 'direct'} {label}",
        "--url",
        str(target),
        "-c",
        str(conc or load.conc),
        "-n",
        str(requests or load.requests),
        "-d",
        str(duration or load.duration),
        "--warmup",
        str(load.warmup if warmup is None else warmup),
    ]
    if system is not None:
        args += [
            "--model",
            model or system.model,
            "--header",
            f"Authorization: {system.auth}",
            "--cpu-pid",
            str(system.pid),
        ]
    if body is not None:
        args += ["--body-file", str(body)]
    result = rig.loadgen(args)
    if system is not None:
        system.served += result["requests"] + (load.warmup if warmup is None else warmup)
    return result


def build_chain(system: System, turns: int) -> tuple[list[str], list[dict[str, str]]]:
    """A `previous_response_id` chain of `turns` responses: their ids, and the conversation they
    hold as Responses input messages (what a client without stored state would send)."""
    ids: list[str] = []
    conversation: list[dict[str, str]] = []
    with httpx.Client(base_url=system.base, headers={"Authorization": system.auth}) as client:
        previous: str | None = None
        for turn in range(turns):
            prompt = f"Turn {turn + 1}, briefly."
            body: dict[str, Any] = {"model": system.model, "input": prompt}
            if previous is not None:
                body["previous_response_id"] = previous
            response = client.post("/v1/responses", json=body, timeout=60)
            response.raise_for_status()
            answer = response.json()
            previous = str(answer["id"])
            ids.append(previous)
            text = "".join(
                part.get("text", "")
                for item in answer["output"]
                if item["type"] == "message"
                for part in item["content"]
            )
            conversation += [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": text},
            ]
    system.served += turns
    return ids, conversation


def commit_floor(rig: Rig, system: System, dsn: str, samples: int) -> dict[str, Any]:
    """`commit_floor.py` on the gateway's CPU: what one durable INSERT + COMMIT takes on this
    database right now, the floor under every enqueue."""
    cpus = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(system.pid)))
    argv = [*pinning(cpus), rig.python, str(BENCH_DIR / "commit_floor.py"), "--dsn", dsn]
    result = subprocess.run(
        [*argv, "-n", str(samples)], capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"commit_floor failed:\n{result.stderr[-2000:]}")
    floor: dict[str, Any] = json.loads(lines[-1])
    return floor


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (`/proc/stat`, jiffies; the 8th is steal: time a
    hypervisor gave this VM's CPUs to someone else), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two `cpu_times`."""
    if before is None or after is None or len(before) < 8:
        return None
    deltas = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(deltas[:8])  # user … steal (guest time is already counted in user)
    return 100 * deltas[7] / total if total else None


def measure_background(rig: Rig, system: System, load: Load) -> dict[str, Any]:
    """Enqueue latency at c=1 (between two timings of the database's commit floor), then
    jobs/s: enqueue `background_jobs` at c=32 and wait until the workers have finished them
    all; the gateway's CPU over that window per job."""
    body = rig.workdir / "background.json"
    prompt = "Say something short. " + "x" * 43
    body.write_text(json.dumps({"model": system.model, "input": prompt, "background": True}))
    assert system.database_url is not None
    dsn = system.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    floor_samples = load.ab_rounds * load.ab_per_round
    floor_before = commit_floor(rig, system, dsn, floor_samples)
    # As many samples as the non-stream c=1 row (until 2026-12-02 evening: 2 rounds, 200
    # samples, whose p99 is the second-slowest request); the jobs they queue finish first.
    enqueue = ab(rig, system, load, label="background enqueue", body_b=body)

    async def drain(interval: float) -> None:
        """Wait until every job is done, on one connection (a connection per poll fails
        when the server is near `max_connections`)."""
        for _ in range(300):  # the server may be full for a moment (other clients)
            try:
                connection = await asyncpg.connect(dsn)
                break
            except asyncpg.TooManyConnectionsError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("PostgreSQL refused a connection for 30 s: too many clients")
        try:
            while time.monotonic() < deadline and await connection.fetchval(
                "SELECT count(*) FROM jobs WHERE status <> 'done'"
            ):
                await asyncio.sleep(interval)
        finally:
            await connection.close()

    deadline = time.monotonic() + 300
    asyncio.run(drain(0.2))  # the enqueue test's own jobs finish first
    floor_after = commit_floor(rig, system, dsn, floor_samples)  # with nothing else running
    cpu0, t0 = cpu_seconds([system.pid]), time.perf_counter()
    run = closed_loop(
        rig,
        system,
        load,
        label="background jobs",
        body=body,
        requests=load.background_jobs,
        duration=120,
        warmup=0,
    )
    asyncio.run(drain(0.05))
    wall, cpu = time.perf_counter() - t0, cpu_seconds([system.pid]) - cpu0
    jobs = run["ok"]
    return {
        "enqueue": enqueue,
        "commit_floor": {"before": floor_before, "after": floor_after},
        "jobs": jobs,
        "jobs_per_s": jobs / wall,
        "jobs_per_core_s": jobs / cpu if cpu else None,
        "cpu_ms_per_job": 1000 * cpu / jobs if jobs else None,
    }


def measure(
    rig: Rig, system: System, load: Load, say: Callable[[str], None], only: str | None = None
) -> dict[str, Any]:
    """Every measurement for one system (or only the background phase). The keys are what
    `report` prints."""
    out: dict[str, Any] = {"name": system.name}
    system.note_rss()
    if only == "background":
        say(f"[{system.name}] background: enqueue latency, {load.background_jobs} jobs")
        out["background"] = measure_background(rig, system, load)
        out["rss"], out["served"] = list(system.rss), system.served
        return out
    say(f"[{system.name}] non-streaming: c=1 interleaved, then c={load.conc}")
    out["ab"] = ab(rig, system, load, label="ab nonstream")
    if system.stateful:
        # The same request with `store: false`: what is left without the durable commit.
        unstored = rig.workdir / "unstored.json"
        prompt = "Say something short. " + "x" * 43
        unstored.write_text(json.dumps({"model": system.model, "input": prompt, "store": False}))
        out["ab_unstored"] = ab(rig, system, load, label="ab nonstream unstored", body_b=unstored)
    system.note_rss()
    out["load"] = closed_loop(rig, system, load, label="load nonstream")
    say(f"[{system.name}] streaming: c=1 interleaved, c={load.conc}, {LONG_TOKENS}-token streams")
    out["ab_stream"] = ab(rig, system, load, label="ab stream", stream=True)
    out["load_stream"] = closed_loop(rig, system, load, label="load stream", stream=True)
    if system.long_model is not None:
        out["load_stream_long"] = closed_loop(
            rig,
            system,
            load,
            label="load stream long",
            stream=True,
            model=system.long_model,
            events=LONG_TOKENS,
        )
    say(f"[{system.name}] streaming through the paced upstream, c=1 and c={load.stream_conc}")
    out["paced_ab"] = ab(
        rig,
        system,
        load,
        label="paced-ab stream",
        stream=True,
        direct=rig.paced,
        model=system.paced_model,
        events=PACED_TOKENS,
        rounds=load.paced_rounds,
        per_round=load.paced_per_round,
    )
    for kind, model, events, duration in (
        ("instant", system.model, TOKENS, load.duration),
        ("paced", system.paced_model, PACED_TOKENS, load.paced_duration),
    ):
        out[f"c{load.stream_conc}_{kind}"] = closed_loop(
            rig,
            system,
            load,
            label=f"c{load.stream_conc} {kind} stream",
            stream=True,
            conc=load.stream_conc,
            model=model,
            events=events,
            duration=duration,
            requests=load.requests // 4,
        )
    if system.stateful:
        say(f"[{system.name}] previous_response_id: depth 1 and depth {load.depth}")
        chain, conversation = build_chain(system, load.depth - 1)
        prompt = "Say something short. " + "x" * 43
        deep = rig.workdir / "deep.json"
        deep.write_text(
            json.dumps({"model": system.model, "input": prompt, "previous_response_id": chain[-1]})
        )
        # The direct request of the depth-N pairs carries the same conversation, as a client
        # without stored state sends it: "added" is then what the gateway adds over an upstream
        # doing the same work (reading and answering a 2N-message context), not that work.
        deep_direct = rig.workdir / "deep-direct.json"
        deep_direct.write_text(
            json.dumps(
                {"model": MOCK_MODEL, "input": [*conversation, {"role": "user", "content": prompt}]}
            )
        )
        out["depth_1"] = ab(
            rig, system, load, label="ab depth 1", rounds=max(2, load.ab_rounds // 2)
        )
        out["depth_n"] = ab(
            rig,
            system,
            load,
            label=f"ab depth {load.depth}",
            body_b=deep,
            body_a=deep_direct,
            rounds=max(2, load.ab_rounds // 2),
        )
        say(f"[{system.name}] background: enqueue latency, {load.background_jobs} jobs")
        out["background"] = measure_background(rig, system, load)
    # The memory target is ours: 100,000 requests through LiteLLM alone would take ~20 minutes.
    if load.memory_requests and system.stateful:
        say(f"[{system.name}] memory: {load.memory_requests} more requests")
        for _ in range(5):
            closed_loop(
                rig,
                system,
                load,
                label="memory",
                requests=load.memory_requests // 5,
                duration=600,
                warmup=0,
            )
            system.note_rss()
    system.note_rss()
    out["rss"] = list(system.rss)
    out["served"] = system.served
    return out


# --- the report --------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _per_event_us(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """Gateway CPU per SSE event: averaged over every event of a 16-token stream (fixed costs
    included), and marginal (the extra CPU per extra event of a 128-token stream)."""
    short = result.get("load_stream") or {}
    long = result.get("load_stream_long") or {}
    per_stream = short.get("sut_cpu_us_per_req")
    events = short.get("sse_events_mean")
    average = per_stream / events if per_stream and events else None
    marginal = None
    if per_stream and long.get("sut_cpu_us_per_req") and long.get("sse_events_mean") and events:
        marginal = (long["sut_cpu_us_per_req"] - per_stream) / (long["sse_events_mean"] - events)
    return average, marginal


def _steal(ab_result: dict[str, Any] | None) -> str:
    """The text " (CPU steal x%)" for an A/B phase that measured it, else nothing."""
    steal = (ab_result or {}).get("steal_percent")
    return "" if steal is None else f" (CPU steal {steal:.1f}%)"


def rows(result: dict[str, Any]) -> dict[str, str]:
    """The issue-8 table's cells for one system."""
    cells: dict[str, str] = {}
    added = _get(result, "ab", "added_B_minus_A") or {}
    load = result.get("load") or {}
    cells["added"] = f"{_f(added.get('lat_p50_ms'))} / {_f(added.get('lat_p99_ms'))}"
    cells["added"] += _steal(result.get("ab"))
    unstored = _get(result, "ab_unstored", "added_B_minus_A") or {}
    if unstored:
        cells["unstored"] = (
            f"{_f(unstored.get('lat_p50_ms'))} / {_f(unstored.get('lat_p99_ms'))}"
            + _steal(result.get("ab_unstored"))
        )
    cells["rps"] = (
        f"{_f(load.get('sut_rps_per_core'), 0)} ({_f(load.get('rps'), 0)} req/s, p99 "
        f"{_f(_get(load, 'lat_ms', 'p99'), 1)} ms, {sum(load.get('errors', {}).values())} errors)"
    )
    cpu = load.get("sut_cpu_us_per_req")
    cells["cpu"] = _f(cpu / 1000 if cpu else None)
    stream_added = _get(result, "ab_stream", "added_B_minus_A") or {}
    cells["ttft"] = f"{_f(stream_added.get('ttft_p50_ms'))} / {_f(stream_added.get('ttft_p99_ms'))}"
    cells["ttft"] += _steal(result.get("ab_stream"))
    paced = result.get("paced_ab") or {}
    first = _get(paced, "B", "tfe_ms", "p99")
    upstream_first_token = _get(paced, "A", "ttft_ms", "p50")
    verdict = (
        "yes"
        if first is not None and upstream_first_token and first < upstream_first_token
        else "no"
    )
    cells["created"] = (
        f"{verdict} (first event p99 {_f(first)} ms vs upstream TTFT {_f(upstream_first_token)} ms)"
    )
    average, marginal = _per_event_us(result)
    cells["event"] = f"{_f(average, 1)} avg / {_f(marginal, 1)} marginal"
    stream = result.get("load_stream") or {}
    cells["streams"] = (
        f"{_f(stream.get('sut_rps_per_core'), 0)} ({_f(stream.get('rps'), 0)} streams/s, "
        f"{sum(stream.get('errors', {}).values())} errors, "
        f"{stream.get('streams_with_wrong_event_count', '–')} bad)"
    )
    d1 = _get(result, "depth_1", "added_B_minus_A", "lat_p50_ms")
    dn = _get(result, "depth_n", "added_B_minus_A", "lat_p50_ms")
    cells["depth"] = (
        f"{_f(dn / d1 if d1 and dn else None)}× ({_f(d1)} → {_f(dn)} ms added p50)"
        if d1 is not None
        else "– (no storage)"
    )
    background = result.get("background")
    if background:
        enqueue = background["enqueue"]["B"]["lat_ms"]
        cells["enqueue"] = f"{_f(enqueue['p50'])} / {_f(enqueue['p99'])}"
        cells["enqueue"] += _steal(background["enqueue"])
        floors = background.get("commit_floor") or {}
        cells["floor"] = " · ".join(
            f"{_f(floors[when]['p50'])} / {_f(floors[when]['p99'])} ({when})"
            for when in ("before", "after")
            if when in floors
        )
        cells["jobs"] = (
            f"{_f(background['jobs_per_core_s'], 0)} ({_f(background['jobs_per_s'], 0)} jobs/s, "
            f"{_f(background['cpu_ms_per_job'])} ms CPU/job)"
        )
    else:
        cells["enqueue"] = cells["jobs"] = "– (no background mode)"
        cells["floor"] = "–"
    rss = result.get("rss") or []
    if rss:
        cells["rss"] = (
            f"{_f(rss[-1][1], 0)} after {rss[-1][0]:,} requests "
            f"({_f(rss[1][1] if len(rss) > 1 else rss[0][1], 0)} after warm-up)"
        )
        if len(rss) > 3:  # the memory phase's samples show whether it stays flat
            path = " → ".join(f"{mb:.0f} ({served // 1000}k)" for served, mb in rss[1:])
            cells["rss"] += f"; along the run: {path}"
    return cells


ROWS = [
    ("added", "Non-stream added latency c=1, p50 / p99 ms", "≤ 1.5 / ≤ 3"),
    ("unstored", "… the same with `store: false` (no commit), p50 / p99 ms", "–"),
    ("rps", "Non-stream requests/s per gateway core, c=32", "≥ 1,000, p99 ≤ 50 ms, 0 errors"),
    ("cpu", "Gateway CPU per non-stream request, ms", "–"),
    ("ttft", "Stream added TTFT c=1, p50 / p99 ms", "p50 ≤ 1"),
    ("created", "`response.created` before the upstream answers (paced)", "yes"),
    ("event", "Gateway CPU per translated event, µs", "≤ 50"),
    ("streams", "Streams/s per gateway core (16 tokens), c=32", "≥ 800"),
    ("depth", "Added latency, depth 100 ÷ depth 1 (p50)", "≤ 1.5×"),
    ("enqueue", "Background enqueue c=1, p50 / p99 ms", "p99 ≤ 2"),
    ("floor", "Its floor: one durable INSERT + COMMIT alone, p50 / p99 ms", "–"),
    ("jobs", "Background jobs/s per gateway core", "≥ 500"),
    ("rss", "RSS, MB", "≤ 150 after 100k, flat"),
]


def streaming_rows(result: dict[str, Any], conc: int) -> list[str]:
    """Issue 3: TTFB and per-event overhead over the upstream direct, instant and paced,
    c=1 and c=`conc`."""
    lines = []
    for label, key in (("instant", "ab_stream"), ("paced", "paced_ab")):
        data = result.get(key) or {}
        added = data.get("added_B_minus_A") or {}
        lines.append(
            f"| {result['name']} | {label} | 1 | {_f(_get(data, 'A', 'ttfb_ms', 'p50'))} / "
            f"{_f(_get(data, 'A', 'ttfb_ms', 'p99'))} | {_f(_get(data, 'B', 'ttfb_ms', 'p50'))} / "
            f"{_f(_get(data, 'B', 'ttfb_ms', 'p99'))} | {_f(_get(data, 'B', 'tfe_ms', 'p50'))} | "
            f"{_f(added.get('ttft_p50_ms'))} / {_f(added.get('ttft_p99_ms'))} | "
            f"{_f(added.get('gap_p50_us'), 0)} / {_f(added.get('gap_p99_us'), 0)} |"
        )
        direct = result.get(f"direct_c{conc}_{label}") or {}
        gateway = result.get(f"c{conc}_{label}") or {}

        def diff(
            metric: str, q: str, direct: dict[str, Any] = direct, gateway: dict[str, Any] = gateway
        ) -> float | None:
            a, b = _get(direct, metric, q), _get(gateway, metric, q)
            return None if a is None or b is None else b - a

        lines.append(
            f"| {result['name']} | {label} | {conc} | {_f(_get(direct, 'ttfb_ms', 'p50'))} / "
            f"{_f(_get(direct, 'ttfb_ms', 'p99'))} | {_f(_get(gateway, 'ttfb_ms', 'p50'))} / "
            f"{_f(_get(gateway, 'ttfb_ms', 'p99'))} | {_f(_get(gateway, 'tfe_ms', 'p50'))} | "
            f"{_f(diff('ttft_ms', 'p50'))} / {_f(diff('ttft_ms', 'p99'))} | "
            f"{_f(diff('gap_us', 'p50'), 0)} / {_f(diff('gap_us', 'p99'), 0)} |"
        )
    return lines


def report(results: list[dict[str, Any]], load: Load, header: str) -> None:
    print()
    print(header)
    print()
    names = [r["name"] for r in results]
    cells = [rows(r) for r in results]
    print("| metric | target | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for key, title, target in ROWS:
        print(f"| {title} | {target} | " + " | ".join(c.get(key, "–") for c in cells) + " |")
    ours = results[0]
    for other in results[1:]:
        a, b = (
            _get(ours, "ab", "added_B_minus_A", "lat_p50_ms"),
            _get(other, "ab", "added_B_minus_A", "lat_p50_ms"),
        )
        ra, rb = _get(ours, "load", "sut_rps_per_core"), _get(other, "load", "sut_rps_per_core")
        target = " (target: ≥ 15× both)" if other["name"].startswith("LiteLLM") else ""
        unstored = _get(ours, "ab_unstored", "added_B_minus_A", "lat_p50_ms")
        without_commit = (
            f"; with `store: false`, {_f(b / unstored, 2)}× less added latency"
            if unstored and b
            else ""
        )
        print(
            f"\n{ours['name']} vs {other['name']}: {_f(b / a if a and b else None, 2)}× less added "
            f"latency (p50), {_f(ra / rb if ra and rb else None, 2)}× more requests per core"
            + target
            + without_commit
        )
    print(
        "\nStreaming over the upstream direct (issue 3): ms unless marked; added = gateway − "
        "direct at the same concurrency; first event = `response.created`."
    )
    print()
    print(
        "| system | upstream | conc | direct TTFB p50 / p99 | gateway TTFB p50 / p99 | "
        "gateway first event p50 | added TTFT p50 / p99 | added inter-event gap p50 / p99 µs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        for line in streaming_rows(result, load.stream_conc):
            print(line)


# --- systems under test ------------------------------------------------------------------------


def start_mocks(rig: Rig, stack: contextlib.ExitStack) -> None:
    for attr, extra in (
        ("instant", ["--tokens", str(TOKENS)]),
        ("long", ["--tokens", str(LONG_TOKENS)]),
        (
            "paced",
            [
                "--tokens",
                str(PACED_TOKENS),
                "--ttft-ms",
                str(PACED_TTFT_MS),
                "--itl-ms",
                str(PACED_ITL_MS),
            ],
        ),
    ):
        port = free_port()
        mock = Child(
            f"mock {attr}",
            [
                *pinning(rig.rig_cpu),
                rig.python,
                str(BENCH_DIR / "mock_upstream.py"),
                "--port",
                str(port),
                *extra,
            ],
            rig.workdir / f"mock-{attr}.log",
            dict(os.environ),
        )
        stack.callback(mock.stop)
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/v1/models", mock)
        setattr(rig, attr, url)


def start_ours(
    rig: Rig, stack: contextlib.ExitStack, database_url: str, gw_cpu: str
) -> tuple[System, Child]:
    models = rig.workdir / "models.yaml"
    models.write_text(
        "models:\n"
        + "".join(
            f"  - name: {name}\n    backend: chat_completions\n    base_url: {url}/v1\n"
            f"    upstream_model: {MOCK_MODEL}\n"
            for name, url in (
                ("bench-model", rig.instant),
                ("bench-model-long", rig.long),
                ("bench-model-paced", rig.paced),
            )
        )
    )
    port = free_port()
    server = Child(
        "gateway",
        [
            *pinning(gw_cpu),
            *gateway_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            str(models),
            "--database-url",
            database_url,
        ],
        rig.workdir / "gateway.log",
        gateway_env(),
    )
    stack.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    wait_until_answering(f"{base}/v1/models", server)
    system = System(
        "responses-gateway",
        base,
        server.process.pid,
        "bench-model",
        "bench-model-paced",
        "bench-model-long",
        stateful=True,
        database_url=database_url,
    )
    return system, server


def ensure_litellm(venv: Path) -> Path:
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
    )
    return binary


def start_litellm(
    rig: Rig, stack: contextlib.ExitStack, venv: Path, gw_cpu: str
) -> tuple[System, Child]:
    binary = ensure_litellm(venv)
    config = (BENCH_DIR / "litellm" / "litellm_config.yaml").read_text()
    config = config.replace("http://127.0.0.1:9000", rig.instant)
    config = config.replace("http://127.0.0.1:9001", rig.paced)
    config = config.replace("http://127.0.0.1:9002", rig.long)
    path = rig.workdir / "litellm_config.yaml"
    path.write_text(config)
    port = free_port()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    server = Child(
        "litellm",
        [
            *pinning(gw_cpu),
            str(binary),
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        rig.workdir / "litellm.log",
        env,
    )
    stack.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if not server.alive():
            raise RuntimeError(f"litellm exited:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError(f"litellm did not start:\n{server.log_tail()}")
        time.sleep(0.5)
    system = System(
        f"LiteLLM {LITELLM_VERSION}",
        base,
        server.process.pid,
        "mock-bridge",
        "mock-bridge-paced",
        "mock-bridge-long",
    )
    return system, server


def start_floor(
    rig: Rig, stack: contextlib.ExitStack, gw_cpu: str, combo: str
) -> tuple[System, Child]:
    app, client = combo.split(":")
    port = free_port()
    env = dict(
        os.environ,
        FLOOR_APP=app,
        FLOOR_CLIENT=client,
        FLOOR_UPSTREAM=rig.instant,
        FLOOR_UPSTREAM_PACED=rig.paced,
    )
    server = Child(
        f"floor {combo}",
        [
            *pinning(gw_cpu),
            rig.python,
            "-m",
            "uvicorn",
            "floor_proxy:app",
            "--app-dir",
            str(BENCH_DIR),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        rig.workdir / f"floor-{app}-{client}.log",
        env,
    )
    stack.callback(server.stop)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # the floor has no GET route: any HTTP answer means it is up
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(base, timeout=2)
            break
        if not server.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"floor did not start:\n{server.log_tail()}")
        time.sleep(0.1)
    # No long-stream route: the floor forwards by a `-paced"` marker only.
    system = System(
        f"floor {app}+{client}", base, server.process.pid, MOCK_MODEL, f"{MOCK_MODEL}-paced", None
    )
    return system, server


# --- main --------------------------------------------------------------------------------------


def measure_direct(rig: Rig, load: Load, say: Callable[[str], None]) -> dict[str, Any]:
    """The upstream mocks alone at the streaming concurrency (issue 3's 'direct' column)."""
    say(f"[direct] the mocks alone, streaming at c={load.stream_conc}")
    out = {}
    for kind, url, events, duration in (
        ("instant", rig.instant, TOKENS, load.duration),
        ("paced", rig.paced, PACED_TOKENS, load.paced_duration),
    ):
        out[f"direct_c{load.stream_conc}_{kind}"] = closed_loop(
            rig,
            None,
            load,
            label=f"c{load.stream_conc} {kind} stream",
            stream=True,
            conc=load.stream_conc,
            url=f"{url}/v1/responses",
            events=events,
            duration=duration,
            requests=load.requests // 4,
        )
    return out


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    load = SMOKE if args.smoke else FULL
    if args.memory_requests is not None:
        load = _with(load, memory_requests=args.memory_requests)
    if args.background_jobs is not None:
        load = _with(load, background_jobs=args.background_jobs)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rg-overhead-")))
    json_out = Path(args.json_out) if args.json_out else workdir / "results.jsonl"
    rig = Rig(sys.executable, args.rig_cpu, workdir, json_out)

    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    start_mocks(rig, stack)
    database_url = stack.enter_context(postgres_database(args.admin_url))
    postgres_where = stack.enter_context(
        postgres_pinned(args.pg_cpu or args.rig_cpu, args.admin_url)
    )
    migrate(database_url, workdir / "migrate.log")
    commit = git_commit()
    direct = measure_direct(rig, load, say) if args.only is None else {}
    results = []
    with contextlib.ExitStack() as ours_stack:
        system, server = start_ours(rig, ours_stack, database_url, args.gw_cpu)
        try:
            results.append({**measure(rig, system, load, say, args.only), **direct})
        except (RuntimeError, httpx.HTTPError) as exc:
            raise RuntimeError(f"{exc}\n--- gateway log (tail) ---\n{server.log_tail()}") from exc
    if args.compare:
        with contextlib.ExitStack() as other:
            system, _ = start_litellm(rig, other, Path(args.litellm_venv), args.gw_cpu)
            results.append({**measure(rig, system, load, say), **direct})
        for combo in args.floors.split(","):
            with contextlib.ExitStack() as other:
                system, _ = start_floor(rig, other, args.gw_cpu, combo)
                results.append({**measure(rig, system, load, say), **direct})
    pinned = "pinned" if pinning(args.gw_cpu) else "NOT pinned (fewer than 2 CPUs or no taskset)"
    header = (
        f"## Gateway overhead — {datetime.date.today().isoformat()}, commit {commit}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, gateway on CPU {args.gw_cpu} ({pinned}), rig on CPU "
        f"{args.rig_cpu}, PostgreSQL storage (its server {postgres_where}), "
        + ("SMOKE load: the numbers mean nothing" if args.smoke else "full load")
    )
    report(results, load, header)
    print(f"\nraw JSON lines: {json_out if args.json_out else '(temporary; pass --json-out)'}")


def _with(load: Load, **changes: Any) -> Load:
    values = {name: getattr(load, name) for name in Load.__dataclass_fields__}
    values.update(changes)
    return Load(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", action="store_true", help="add LiteLLM and the floor")
    parser.add_argument("--smoke", action="store_true", help="tiny loads (CI): checks it runs")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help=f"Postgres server to create the bench database on (default {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--gw-cpu", default=os.environ.get("GW_CPU", "1"))
    parser.add_argument("--rig-cpu", default=os.environ.get("RIG_CPU", "0"))
    parser.add_argument(
        "--pg-cpu",
        default=os.environ.get("PG_CPU"),
        help="CPU for a local PostgreSQL server's processes during the run (default: the rig "
        "CPU; 'none' leaves them where they are)",
    )
    parser.add_argument(
        "--litellm-venv", default=os.environ.get("LITELLM_VENV", "/tmp/litellm-venv")
    )
    parser.add_argument(
        "--floors",
        default="fastapi:httpx-aiohttp",
        help="floor variants app:client, comma-separated (app: fastapi|raw; client: httpx|"
        "httpx-aiohttp|aiohttp)",
    )
    parser.add_argument(
        "--memory-requests",
        type=int,
        default=None,
        help="extra non-stream requests (in 5 steps, RSS sampled after each) for the memory row",
    )
    parser.add_argument("--json-out", help="append every loadgen result here (JSON lines)")
    parser.add_argument(
        "--only",
        choices=["background"],
        help="measure just this phase of our gateway (~1 minute for background)",
    )
    parser.add_argument(
        "--background-jobs", type=int, default=None, help="jobs in the background phase"
    )
    return parser


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = build_parser().parse_args()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with contextlib.ExitStack() as stack:
            run(args, stack)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"overhead: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
