#!/usr/bin/env python3
"""Minimal, fast mock of an OpenAI-compatible upstream, for gateway overhead benchmarks.

Serves, over plain HTTP/1.1 with keep-alive (stdlib asyncio; uvloop/orjson used if importable):
  POST /v1/chat/completions   JSON, or SSE when "stream": true (chat.completion.chunk events, [DONE])
  POST /v1/responses          JSON Response object, or SSE when "stream": true (response.* events)
  GET  /v1/models             model list
  GET  /mock/stats            request counts per (path, stream) - proves which upstream path a gateway used
  POST /mock/reset            zero the counters

Timing knobs simulate a model: --ttft-ms delays the response head (and first token), --itl-ms spaces
the streamed tokens. Defaults are 0/0: an instant upstream, so that whatever latency a client sees
through a gateway, minus what it sees direct, is the gateway's own cost.

Only what a benchmark needs: Content-Length and chunked request bodies, no TLS, no HTTP/2.
Bind to loopback only.
"""  # noqa: E501 (the header is kept as in the shared harness)

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

try:  # optional speedups
    import orjson

    def jloads(b: bytes):
        return orjson.loads(b)

    def jdumps(o) -> bytes:
        return orjson.dumps(o)
except ImportError:  # pragma: no cover

    def jloads(b: bytes):
        return json.loads(b)

    def jdumps(o) -> bytes:
        return json.dumps(o, separators=(",", ":")).encode()


STATS: dict[str, int] = {}
CFG = argparse.Namespace()

REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def _head(status: int, ctype: bytes, length: int | None) -> bytes:
    h = [
        b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"X")),
        b"content-type: " + ctype + b"\r\n",
    ]
    if length is None:
        h.append(b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n")
    else:
        h.append(b"content-length: %d\r\n" % length)
    h.append(b"\r\n")
    return b"".join(h)


def json_response(status: int, obj) -> bytes:
    body = obj if isinstance(obj, (bytes, bytearray)) else jdumps(obj)
    return _head(status, b"application/json", len(body)) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(data: bytes, event: str | None = None) -> bytes:
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"


# ----------------------------------------------------------------------------- payload builders
def usage_chat(n):
    return {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}


def usage_resp(n):
    return {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 10 + n,
    }


def chat_json(model: str) -> bytes:
    n = CFG.tokens
    return jdumps(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CFG.token_text * n},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage_chat(n),
        }
    )


def chat_stream_events(model: str, include_usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    ev = [
        sse(
            jdumps(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
    ]
    tok = jdumps(
        {
            **base,
            "choices": [{"index": 0, "delta": {"content": CFG.token_text}, "finish_reason": None}],
        }
    )
    ev += [sse(tok)] * CFG.tokens
    ev.append(
        sse(jdumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    )
    if include_usage:
        ev.append(sse(jdumps({**base, "choices": [], "usage": usage_chat(CFG.tokens)})))
    ev.append(sse(b"[DONE]"))
    return ev


def resp_object(model: str, status: str, output: list, usage) -> dict:
    return {
        "id": "resp_mock",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def resp_message(text: str, status: str) -> dict:
    return {
        "type": "message",
        "id": "msg_mock",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]
        if status == "completed"
        else [],
    }


def resp_json(model: str) -> bytes:
    text = CFG.token_text * CFG.tokens
    return jdumps(
        resp_object(model, "completed", [resp_message(text, "completed")], usage_resp(CFG.tokens))
    )


def resp_stream_events(model: str) -> list[bytes]:
    text = CFG.token_text * CFG.tokens
    seq = iter(range(1 << 30))
    ev = []

    def add(etype: str, **fields):
        ev.append(sse(jdumps({"type": etype, "sequence_number": next(seq), **fields}), etype))

    add("response.created", response=resp_object(model, "in_progress", [], None))
    add("response.in_progress", response=resp_object(model, "in_progress", [], None))
    add("response.output_item.added", output_index=0, item=resp_message("", "in_progress"))
    add(
        "response.content_part.added",
        item_id="msg_mock",
        output_index=0,
        content_index=0,
        part={"type": "output_text", "text": "", "annotations": []},
    )
    for _ in range(CFG.tokens):
        add(
            "response.output_text.delta",
            item_id="msg_mock",
            output_index=0,
            content_index=0,
            delta=CFG.token_text,
            logprobs=[],
        )
    add(
        "response.output_text.done",
        item_id="msg_mock",
        output_index=0,
        content_index=0,
        text=text,
        logprobs=[],
    )
    add(
        "response.content_part.done",
        item_id="msg_mock",
        output_index=0,
        content_index=0,
        part={"type": "output_text", "text": text, "annotations": []},
    )
    add("response.output_item.done", output_index=0, item=resp_message(text, "completed"))
    add(
        "response.completed",
        response=resp_object(
            model, "completed", [resp_message(text, "completed")], usage_resp(CFG.tokens)
        ),
    )
    return ev


# ----------------------------------------------------------------------------- server
class Conn(asyncio.Protocol):
    __slots__ = ("t", "buf", "busy", "closed")

    def connection_made(self, transport):
        self.t = transport
        self.buf = bytearray()
        self.busy = False
        self.closed = False

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.process()

    def process(self):
        while not self.busy and not self.closed:
            req = self.parse()
            if req is None:
                return
            self.handle(*req)

    def parse(self):
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                self.t.close()
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, _ = lines[0].split(b" ", 2)
        except ValueError:
            self.t.close()
            return None
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            headers[k.strip().lower()] = v.strip()
        pos = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = bytearray()
            while True:
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    return None
                size = int(bytes(buf[pos:le]).split(b";")[0], 16)
                if size == 0:
                    te = buf.find(b"\r\n\r\n", le)  # trailers end (normally right away)
                    if te < 0:
                        if len(buf) >= le + 4 and buf[le : le + 4] == b"\r\n\r\n":
                            te = le
                        else:
                            return None
                    pos = te + 4
                    break
                if len(buf) < le + 2 + size + 2:
                    return None
                body += buf[le + 2 : le + 2 + size]
                pos = le + 2 + size + 2
            body = bytes(body)
        else:
            cl = int(headers.get(b"content-length", b"0") or 0)
            if len(buf) < pos + cl:
                return None
            body = bytes(buf[pos : pos + cl])
            pos += cl
        del buf[:pos]
        return method, target.split(b"?", 1)[0], headers, body

    def handle(self, method: bytes, path: bytes, headers, body: bytes):
        p = path.decode("latin-1")
        if method == b"GET" and p == "/mock/stats":
            self.t.write(json_response(200, STATS))
            return
        if method == b"POST" and p == "/mock/reset":
            STATS.clear()
            self.t.write(json_response(200, {"ok": True}))
            return
        if method == b"GET" and p.endswith("/models"):
            self.t.write(
                json_response(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": CFG.model, "object": "model", "created": 0, "owned_by": "mock"}
                        ],
                    },
                )
            )
            return
        if method != b"POST" or not (p.endswith("/chat/completions") or p.endswith("/responses")):
            STATS["unknown " + method.decode() + " " + p] = (
                STATS.get("unknown " + method.decode() + " " + p, 0) + 1
            )
            self.t.write(
                json_response(
                    404, {"error": {"message": "mock: no route " + p, "type": "not_found"}}
                )
            )
            return
        try:
            req = jloads(body) if body else {}
        except Exception:
            self.t.write(
                json_response(
                    400, {"error": {"message": "mock: bad json", "type": "invalid_request"}}
                )
            )
            return
        stream = bool(req.get("stream"))
        model = req.get("model") or CFG.model
        kind = "chat" if p.endswith("/chat/completions") else "responses"
        key = f"{kind} stream={stream}"
        STATS[key] = STATS.get(key, 0) + 1
        if stream:
            if kind == "chat":
                so = req.get("stream_options") or {}
                events = chat_stream_events(model, bool(so.get("include_usage")))
            else:
                events = resp_stream_events(model)
            head = _head(200, b"text/event-stream", None)
            if CFG.ttft_ms <= 0 and CFG.itl_ms <= 0:
                self.t.write(head + b"".join(chunk(e) for e in events) + b"0\r\n\r\n")
                return
            self.busy = True
            asyncio.ensure_future(self.stream_paced(head, events, kind))
            return
        payload = chat_json(model) if kind == "chat" else resp_json(model)
        if CFG.ttft_ms <= 0:
            self.t.write(json_response(200, payload))
            return
        self.busy = True
        asyncio.ensure_future(self.delayed(json_response(200, payload), CFG.ttft_ms / 1000.0))

    async def delayed(self, data: bytes, delay: float):
        await asyncio.sleep(delay)
        if not self.closed:
            self.t.write(data)
        self.busy = False
        self.process()

    async def stream_paced(self, head: bytes, events: list[bytes], kind: str):
        # Head and the scaffolding events before the first token go out after ttft;
        # each token after itl.
        if CFG.ttft_ms > 0:
            await asyncio.sleep(CFG.ttft_ms / 1000.0)
        first_tok = 1 if kind == "chat" else 4
        if self.closed:
            return
        self.t.write(head + b"".join(chunk(e) for e in events[: first_tok + 1]))
        for i, e in enumerate(events[first_tok + 1 :], start=first_tok + 1):
            is_tok = i < first_tok + CFG.tokens
            if is_tok and CFG.itl_ms > 0:
                await asyncio.sleep(CFG.itl_ms / 1000.0)
            if self.closed:
                return
            self.t.write(chunk(e))
        self.t.write(b"0\r\n\r\n")
        self.busy = False
        self.process()


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--model", default="mock-model")
    ap.add_argument(
        "--tokens", type=int, default=16, help="completion tokens per reply (default 16)"
    )
    ap.add_argument("--token-text", default="tok ", help="text of one token (default 'tok ')")
    ap.add_argument(
        "--ttft-ms", type=float, default=0.0, help="delay before head / first token (default 0)"
    )
    ap.add_argument(
        "--itl-ms", type=float, default=0.0, help="delay between streamed tokens (default 0)"
    )
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args(argv)
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        sys.exit("mock_upstream: refusing to bind a non-loopback address")
    CFG.__dict__.update(vars(args))
    if not args.no_uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass

    async def serve():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Conn, args.host, args.port, backlog=4096, reuse_address=True)
        print(
            f"mock_upstream listening on http://{args.host}:{args.port} tokens={args.tokens} "
            f"ttft_ms={args.ttft_ms} itl_ms={args.itl_ms}",
            flush=True,
        )
        async with srv:
            await srv.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
