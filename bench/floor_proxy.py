#!/usr/bin/env python3
"""The thinnest honest Python gateway: the floor any FastAPI/uvicorn gateway sits on.

It forwards POST /v1/chat/completions and POST /v1/responses to one upstream, unchanged, JSON or
SSE, with one pooled upstream client, and checks a bearer key. No routing table, no storage, no
translation. Whatever it costs per request is the cost of the stack itself (ASGI server, framework,
HTTP client, JSON handling), so a real gateway on the same stack can only be slower: use it to read
what share of a gateway's overhead is the stack and what share is the gateway's own work.

  --app fastapi|raw       FastAPI routes, or a bare ASGI callable (no framework)
  --client httpx|httpx2|httpx-aiohttp|aiohttp  upstream HTTP client
                          (httpx-aiohttp: the httpx API on an aiohttp transport)
  --parse                 json-decode the request and re-encode it (what any gateway that looks at
                          the body does), instead of passing the bytes through

Run it with uvicorn (uvloop + httptools when installed):
  FLOOR_UPSTREAM=http://127.0.0.1:9000 FLOOR_APP=fastapi FLOOR_CLIENT=httpx \
    taskset -c 1 python -m uvicorn floor_proxy:app --host 127.0.0.1 --port 4100 --no-access-log
"""

import json
import os

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:9000")
# a model name ending in "-paced" goes to this second upstream (the harness's paced mock)
UPSTREAM_PACED = os.environ.get("FLOOR_UPSTREAM_PACED", "http://127.0.0.1:9001")
APP = os.environ.get("FLOOR_APP", "fastapi")
CLIENT = os.environ.get("FLOOR_CLIENT", "httpx")
PARSE = os.environ.get("FLOOR_PARSE", "0") == "1"
KEY = os.environ.get("FLOOR_KEY", "sk-bench").encode()

try:
    import orjson

    jloads, jdumps = orjson.loads, orjson.dumps
except ImportError:  # pragma: no cover
    jloads = json.loads

    def jdumps(o):
        return json.dumps(o, separators=(",", ":")).encode()


class Upstream:
    """One pooled client; returns (status, content_type, body bytes | async byte iterator)."""

    def __init__(self):
        self.c = None

    async def start(self):
        if CLIENT == "aiohttp":
            import aiohttp

            self.c = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
                timeout=aiohttp.ClientTimeout(total=600),
            )
        elif CLIENT == "httpx2":
            import httpx2

            self.c = httpx2.AsyncClient(
                timeout=600,
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=1024),
            )
        elif CLIENT == "httpx-aiohttp":
            import httpx
            from httpx_aiohttp import AiohttpTransport

            self.c = httpx.AsyncClient(timeout=600, transport=AiohttpTransport())
        else:
            import httpx

            self.c = httpx.AsyncClient(
                timeout=600,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=1024),
            )

    async def stop(self):
        if self.c is not None:
            await self.c.close() if CLIENT == "aiohttp" else await self.c.aclose()

    async def post(self, path: str, body: bytes, stream: bool):
        hdr = {"content-type": "application/json", "authorization": "Bearer sk-upstream"}
        base = UPSTREAM_PACED if b'-paced"' in body else UPSTREAM
        if CLIENT == "aiohttp":
            r = await self.c.post(base + path, data=body, headers=hdr)
            ctype = r.headers.get("content-type", "application/json")
            if stream and ctype.startswith("text/event-stream"):

                async def it():
                    try:
                        async for chunk in r.content.iter_any():
                            yield chunk
                    finally:
                        r.release()

                return r.status, ctype, it()
            data = await r.read()
            r.release()
            return r.status, ctype, data
        req = self.c.build_request("POST", base + path, content=body, headers=hdr)
        r = await self.c.send(req, stream=stream)
        ctype = r.headers.get("content-type", "application/json")
        if stream and ctype.startswith("text/event-stream"):

            async def it():
                try:
                    async for chunk in r.aiter_raw():
                        yield chunk
                finally:
                    await r.aclose()

            return r.status_code, ctype, it()
        data = r.content if not stream else await r.aread()
        if stream:
            await r.aclose()
        return r.status_code, ctype, data


UP = Upstream()


def _prep(body: bytes) -> tuple[bytes, bool]:
    if PARSE:
        obj = jloads(body)
        return jdumps(obj), bool(obj.get("stream"))
    # cheap stream detection without a full parse
    return body, b'"stream":true' in body.replace(b" ", b"")


# ----------------------------------------------------------------------------- raw ASGI
async def raw_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await UP.start()
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await UP.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    auth = dict(scope["headers"]).get(b"authorization", b"")
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            break
    if scope["method"] != "POST" or path not in ("/v1/chat/completions", "/v1/responses"):
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"error":{"message":"not found"}}'})
        return
    if auth != b"Bearer " + KEY:
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"error":{"message":"bad key"}}'})
        return
    body, stream = _prep(b"".join(chunks))
    status, ctype, data = await UP.post(path, body, stream)
    if isinstance(data, (bytes, bytearray)):
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode()),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": bytes(data)})
        return
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype.encode()), (b"cache-control", b"no-cache")],
        }
    )
    async for c in data:
        await send({"type": "http.response.body", "body": c, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# ----------------------------------------------------------------------------- FastAPI
def fastapi_app():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    @asynccontextmanager
    async def lifespan(_):
        await UP.start()
        yield
        await UP.stop()

    api = FastAPI(lifespan=lifespan)

    async def forward(request: Request, path: str):
        if request.headers.get("authorization", "").encode() != b"Bearer " + KEY:
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        body, stream = _prep(await request.body())
        status, ctype, data = await UP.post(path, body, stream)
        if isinstance(data, (bytes, bytearray)):
            return Response(content=bytes(data), status_code=status, media_type=ctype)
        return StreamingResponse(
            data, status_code=status, media_type=ctype, headers={"cache-control": "no-cache"}
        )

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        return await forward(request, "/v1/chat/completions")

    @api.post("/v1/responses")
    async def responses(request: Request):
        return await forward(request, "/v1/responses")

    return api


app = raw_app if APP == "raw" else fastapi_app()
