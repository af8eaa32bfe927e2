#!/usr/bin/env python3
"""Bounded, loopback-only HTTP/1.1 load generator for LLM gateway benchmarks (stdlib asyncio).

Sub-commands
  run     closed loop: C connections, each sends its next request as soon as the previous one has
          been read to the end. Stops at --requests or --duration, whichever comes first.
          Reports RPS, latency p50/p90/p99/max, and for streams: time to response head (TTFB),
          time to first content event (TTFT), content events per stream, inter-event gap p50/p99.
  ab      added latency at concurrency 1: rounds of N requests to target A then N to target B
          (order alternates per round), same process, same connection type. Reports each leg's
          percentiles and B - A. This is the number "what does the gateway add" should be quoted as.

Every request is checked: HTTP status, and for streams that the expected number of content
events arrived (--expect-events). CPU of the system under test can be charged per request with
--cpu-pid (sums utime+stime over the pid's whole process tree from /proc across the window).

Only loopback targets are accepted. All loops are bounded by count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from urllib.parse import urlsplit

CLK = time.perf_counter
HZ = os.sysconf("SC_CLK_TCK")

CHAT_CONTENT = re.compile(rb'"delta":\{[^{}]*"content":"[^"]')
RESP_CONTENT = b'"type":"response.output_text.delta"'


# ----------------------------------------------------------------------------- request building
def build_body(
    api: str, model: str, stream: bool, prompt_bytes: int, max_tokens: int | None
) -> bytes:
    prompt = "Say something short. " + ("x" * max(0, prompt_bytes - 21))
    if api == "chat":
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
        if max_tokens:
            body["max_tokens"] = max_tokens
    elif api == "responses":
        body = {"model": model, "input": prompt, "stream": stream}
        if max_tokens:
            body["max_output_tokens"] = max_tokens
    else:
        raise SystemExit(f"unknown --api {api}")
    return json.dumps(body, separators=(",", ":")).encode()


class Target:
    def __init__(
        self,
        url: str,
        api: str,
        model: str,
        stream: bool,
        prompt_bytes: int,
        headers: list[str],
        max_tokens: int | None,
        body_file: str | None,
    ):
        u = urlsplit(url)
        if u.scheme != "http":
            raise SystemExit("loadgen: only http:// targets")
        host = u.hostname or ""
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise SystemExit(f"loadgen: refusing non-loopback target {host!r}")
        self.host, self.port = host, u.port or 80
        self.path = u.path or "/"
        self.api, self.stream = api, stream
        if body_file:
            with open(body_file, "rb") as f:
                body = f.read()
        else:
            body = build_body(api, model, stream, prompt_bytes, max_tokens)
        hdr = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Accept: text/event-stream" if stream else "Accept: application/json",
            "Connection: keep-alive",
        ] + list(headers)
        self.req = ("\r\n".join(hdr) + "\r\n\r\n").encode() + body
        self.label = url


# ----------------------------------------------------------------------------- one connection
class Result:
    __slots__ = (
        "ok",
        "status",
        "lat",
        "ttfb",
        "tfe",
        "ttft",
        "events",
        "all_events",
        "gaps",
        "err",
    )

    def __init__(self):
        self.ok, self.status, self.lat, self.ttfb, self.ttft = False, 0, 0.0, 0.0, None
        self.tfe = None  # time to the first SSE event of any kind (e.g. response.created)
        self.events, self.all_events, self.gaps, self.err = 0, 0, None, None


class Client:
    def __init__(self, t: Target, timeout: float):
        self.t, self.timeout = t, timeout
        self.r = self.w = None

    async def connect(self):
        self.r, self.w = await asyncio.open_connection(self.t.host, self.t.port, limit=1 << 22)

    def close(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def request(self) -> Result:
        res = Result()
        try:
            await asyncio.wait_for(self._request(res), self.timeout)
        except TimeoutError:
            res.ok, res.err = False, "timeout"
            self.close()
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError) as e:
            res.ok, res.err = False, type(e).__name__
            self.close()
        return res

    async def _request(self, res: Result):
        if self.w is None:
            await self.connect()
        t0 = CLK()
        self.w.write(self.t.req)
        r = self.r
        head = await r.readuntil(b"\r\n\r\n")
        res.ttfb = CLK() - t0
        lines = head.split(b"\r\n")
        res.status = int(lines[0].split(b" ", 2)[1])
        h = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            h[k.strip().lower()] = v.strip().lower()
        content_re = None
        if self.t.stream:
            content_re = CHAT_CONTENT if self.t.api == "chat" else None
        sse = b"text/event-stream" in h.get(b"content-type", b"")
        events = 0
        first_event = None
        content_times = []
        pending = b""

        def feed(data: bytes, now: float):
            nonlocal pending, events, first_event
            if not sse:
                return
            pending += data
            while True:
                i = pending.find(b"\n\n")
                if i < 0:
                    break
                ev, pending = pending[:i], pending[i + 2 :]
                if not ev.strip():
                    continue
                events += 1
                if first_event is None:
                    first_event = now
                if (content_re is not None and content_re.search(ev)) or (
                    content_re is None and RESP_CONTENT in ev
                ):
                    content_times.append(now)

        if h.get(b"transfer-encoding") == b"chunked":
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await r.readuntil(b"\r\n")  # end of (empty) trailers
                    break
                data = await r.readexactly(size + 2)
                feed(data[:-2].replace(b"\r\n", b"\n"), CLK())
        elif b"content-length" in h:
            data = await r.readexactly(int(h[b"content-length"]))
            feed(data.replace(b"\r\n", b"\n"), CLK())
        else:  # read to EOF
            while True:
                data = await r.read(65536)
                if not data:
                    break
                feed(data.replace(b"\r\n", b"\n"), CLK())
            self.close()
        t1 = CLK()
        if h.get(b"connection") == b"close":
            self.close()
        res.lat = t1 - t0
        res.events = len(content_times)
        res.all_events = events
        if first_event is not None:
            res.tfe = first_event - t0
        if content_times:
            res.ttft = content_times[0] - t0
            res.gaps = [b - a for a, b in zip(content_times, content_times[1:], strict=False)]
        res.ok = 200 <= res.status < 300
        if not res.ok:
            res.err = f"http {res.status}"


# ----------------------------------------------------------------------------- stats helpers
def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(sorted_vals) - 1)
    return sorted_vals[f] + (sorted_vals[c] - sorted_vals[f]) * (k - f)


def ms(v):
    return None if v is None else round(v * 1000.0, 3)


def summarize(results: list[Result], wall: float, expect_events: int | None) -> dict:
    ok = [x for x in results if x.ok]
    bad_events = 0
    if expect_events is not None:
        for x in ok:
            if x.events != expect_events:
                bad_events += 1
    lat = sorted(x.lat for x in ok)
    ttfb = sorted(x.ttfb for x in ok)
    ttft = sorted(x.ttft for x in ok if x.ttft is not None)
    tfe = sorted(x.tfe for x in ok if x.tfe is not None)
    gaps = sorted(g for x in ok if x.gaps for g in x.gaps)
    errs = {}
    for x in results:
        if not x.ok:
            errs[x.err] = errs.get(x.err, 0) + 1
    out = {
        "requests": len(results),
        "ok": len(ok),
        "errors": errs,
        "wall_s": round(wall, 3),
        "rps": round(len(ok) / wall, 1) if wall > 0 else None,
        "lat_ms": {
            "p50": ms(pct(lat, 50)),
            "p90": ms(pct(lat, 90)),
            "p99": ms(pct(lat, 99)),
            "max": ms(lat[-1] if lat else None),
            "mean": ms(sum(lat) / len(lat) if lat else None),
        },
        "ttfb_ms": {"p50": ms(pct(ttfb, 50)), "p99": ms(pct(ttfb, 99))},
    }
    if tfe:
        out["tfe_ms"] = {"p50": ms(pct(tfe, 50)), "p99": ms(pct(tfe, 99))}
        out["sse_events_mean"] = round(sum(x.all_events for x in ok) / len(ok), 2)
    if ttft:
        out["ttft_ms"] = {"p50": ms(pct(ttft, 50)), "p99": ms(pct(ttft, 99))}
        out["content_events_mean"] = round(sum(x.events for x in ok) / len(ok), 2)
    if gaps:
        out["gap_us"] = {"p50": round(pct(gaps, 50) * 1e6, 1), "p99": round(pct(gaps, 99) * 1e6, 1)}
    if expect_events is not None:
        out["streams_with_wrong_event_count"] = bad_events
    return out


# ----------------------------------------------------------------------------- cpu accounting
def _proc_tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for root in pids:
        for p in _proc_tree(root):
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    s = f.read()
            except OSError:
                continue
            fields = s[s.rfind(b")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / HZ


# ----------------------------------------------------------------------------- modes
async def closed_loop(
    t: Target, conc: int, n_max: int, dur: float, timeout: float, warmup: int, cpu_pids: list[int]
) -> tuple[list[Result], float, dict]:
    clients = [Client(t, timeout) for _ in range(conc)]
    await asyncio.gather(*(c.connect() for c in clients))
    # warmup: spread over the connections, not counted
    if warmup:
        per = max(1, warmup // conc)
        await asyncio.gather(*(_loop(c, per, time.monotonic() + 30, []) for c in clients))
    results: list[Result] = []
    cpu0 = cpu_seconds(cpu_pids) if cpu_pids else None
    me0 = os.times()
    t0 = CLK()
    deadline = time.monotonic() + dur
    budget = [n_max]
    await asyncio.gather(*(_loop(c, None, deadline, results, budget) for c in clients))
    wall = CLK() - t0
    me1 = os.times()
    extra = {"loadgen_cpu_s": round((me1.user - me0.user) + (me1.system - me0.system), 3)}
    if cpu_pids:
        cpu = cpu_seconds(cpu_pids) - cpu0
        ok = sum(1 for r in results if r.ok)
        extra.update(
            {
                "sut_cpu_s": round(cpu, 3),
                "sut_cores_busy": round(cpu / wall, 3),
                "sut_cpu_us_per_req": round(cpu / ok * 1e6, 1) if ok else None,
                "sut_rps_per_core": round(ok / cpu, 1) if cpu > 0 else None,
            }
        )
    for c in clients:
        c.close()
    return results, wall, extra


async def _loop(c: Client, count, deadline, results, budget=None):
    i = 0
    while time.monotonic() < deadline:
        if count is not None and i >= count:
            return
        if budget is not None:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        results.append(await c.request())
        i += 1


def add_target_args(ap, suffix="", req=True):
    ap.add_argument(
        f"--url{suffix}",
        required=req,
        help="full URL, e.g. http://127.0.0.1:9000/v1/chat/completions",
    )
    ap.add_argument(
        f"--api{suffix}",
        choices=["chat", "responses"],
        default=None,
        help="request shape; default inferred from the URL path",
    )
    ap.add_argument(f"--model{suffix}", default=None)
    ap.add_argument(
        f"--body-file{suffix}", default=None, help="send this exact body instead of a generated one"
    )
    ap.add_argument(
        f"--header{suffix}", action="append", default=[], help="extra header 'K: V' (repeatable)"
    )


def make_target(a, suffix=""):
    url = getattr(a, f"url{suffix}")
    api = getattr(a, f"api{suffix}") or (
        "responses" if url.rstrip("/").endswith("/responses") else "chat"
    )
    model = getattr(a, f"model{suffix}") or a.model_default
    return Target(
        url,
        api,
        model,
        a.stream,
        a.prompt_bytes,
        getattr(a, f"header{suffix}"),
        a.max_tokens,
        getattr(a, f"body_file{suffix}", None),
    )


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--stream", action="store_true", help="send stream:true and measure SSE events"
    )
    common.add_argument(
        "--prompt-bytes", type=int, default=64, help="size of the user prompt (default 64)"
    )
    common.add_argument("--max-tokens", type=int, default=None)
    common.add_argument("--model-default", default="mock-model")
    common.add_argument("--timeout", type=float, default=30.0, help="per-request timeout seconds")
    common.add_argument(
        "--expect-events",
        type=int,
        default=None,
        help="streams must carry exactly this many content events (e.g. mock --tokens)",
    )
    common.add_argument("--label", default="")
    common.add_argument(
        "--json-out", default=None, help="append the JSON summary as one line to this file"
    )
    common.add_argument("--uvloop", action="store_true")

    r = sub.add_parser("run", parents=[common], help="closed-loop load at fixed concurrency")
    add_target_args(r)
    r.add_argument("-c", "--concurrency", type=int, default=32)
    r.add_argument("-n", "--requests", type=int, default=5000, help="max measured requests (bound)")
    r.add_argument(
        "-d", "--duration", type=float, default=20.0, help="max measured seconds (bound)"
    )
    r.add_argument("--warmup", type=int, default=200, help="unmeasured requests first")
    r.add_argument(
        "--cpu-pid",
        type=int,
        action="append",
        default=[],
        help="charge this pid's process-tree CPU to the window (repeatable)",
    )

    b = sub.add_parser(
        "ab", parents=[common], help="interleaved added-latency test at concurrency 1"
    )
    add_target_args(b, "_a")
    add_target_args(b, "_b")
    b.add_argument("--rounds", type=int, default=10)
    b.add_argument("--per-round", type=int, default=100)
    b.add_argument("--warmup", type=int, default=50)

    a = ap.parse_args(argv)
    if a.uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
    if a.cmd == "run" and (a.duration > 600 or a.requests > 2_000_000):
        sys.exit("loadgen: bounds too large (max 600 s, 2M requests)")

    if a.cmd == "run":
        t = make_target(a)
        res, wall, extra = asyncio.run(
            closed_loop(t, a.concurrency, a.requests, a.duration, a.timeout, a.warmup, a.cpu_pid)
        )
        out = {
            "label": a.label,
            "mode": "run",
            "url": t.label,
            "api": t.api,
            "stream": t.stream,
            "concurrency": a.concurrency,
            **summarize(res, wall, a.expect_events if t.stream else None),
            **extra,
        }
    else:
        ta, tb = make_target(a, "_a"), make_target(a, "_b")
        if a.rounds * a.per_round > 100_000:
            sys.exit("loadgen: bounds too large")
        out = asyncio.run(ab_test(ta, tb, a))
    line = json.dumps(out)
    print(line, flush=True)
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(line + "\n")
    failed = out.get("ok", 1) == 0 or (out.get("A", {}).get("ok", 1) == 0)
    sys.exit(1 if failed else 0)


async def ab_test(ta: Target, tb: Target, a) -> dict:
    ca, cb = Client(ta, a.timeout), Client(tb, a.timeout)
    await ca.connect()
    await cb.connect()
    for _ in range(a.warmup):
        await ca.request()
        await cb.request()
    ra: list[Result] = []
    rb: list[Result] = []
    t0 = CLK()
    deadline = time.monotonic() + 300
    for rnd in range(a.rounds):
        if time.monotonic() > deadline:
            break
        order = [(ca, ra), (cb, rb)] if rnd % 2 == 0 else [(cb, rb), (ca, ra)]
        for c, sink in order:
            for _ in range(a.per_round):
                sink.append(await c.request())
    wall = CLK() - t0
    ca.close()
    cb.close()
    exp = a.expect_events if ta.stream else None
    sa, sb = summarize(ra, wall, exp), summarize(rb, wall, exp)
    for s in (sa, sb):
        s.pop("rps", None)
        s.pop("wall_s", None)

    def d(k, p):
        x, y = sb[k].get(p), sa[k].get(p)
        return None if x is None or y is None else round(x - y, 3)

    added = {
        "lat_p50_ms": d("lat_ms", "p50"),
        "lat_p90_ms": d("lat_ms", "p90"),
        "lat_p99_ms": d("lat_ms", "p99"),
        "ttfb_p50_ms": d("ttfb_ms", "p50"),
    }
    if "tfe_ms" in sa and "tfe_ms" in sb:
        added["tfe_p50_ms"] = round(sb["tfe_ms"]["p50"] - sa["tfe_ms"]["p50"], 3)
        added["tfe_p99_ms"] = round(sb["tfe_ms"]["p99"] - sa["tfe_ms"]["p99"], 3)
    if "ttft_ms" in sa and "ttft_ms" in sb:
        added["ttft_p50_ms"] = round(sb["ttft_ms"]["p50"] - sa["ttft_ms"]["p50"], 3)
        added["ttft_p99_ms"] = round(sb["ttft_ms"]["p99"] - sa["ttft_ms"]["p99"], 3)
    if "gap_us" in sa and "gap_us" in sb:
        added["gap_p50_us"] = round(sb["gap_us"]["p50"] - sa["gap_us"]["p50"], 1)
        added["gap_p99_us"] = round(sb["gap_us"]["p99"] - sa["gap_us"]["p99"], 1)
    return {
        "label": a.label,
        "mode": "ab",
        "stream": ta.stream,
        "A": {"url": ta.label, "api": ta.api, **sa},
        "B": {"url": tb.label, "api": tb.api, **sb},
        "added_B_minus_A": added,
    }


if __name__ == "__main__":
    main()
