"""The HTTP middleware every request passes: request id (accepted from `x-request-id` or made,
echoed back and put on every log line), one access log line, request metrics, the rate-limit
headers a route decided on, and an OpenTelemetry span when tracing is on.

Plain ASGI rather than `BaseHTTPMiddleware`, so streamed bodies pass through untouched.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID
from app.metrics import Metrics

access_log = logging.getLogger("app.access")

# A client's id is echoed only if it is a sane token (no header injection, bounded size).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _CLIENT_ID.match(text):
                return text
            break
    return f"req_{secrets.token_hex(16)}"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, tracer: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                for name, value in (state.get("ratelimit_headers") or {}).items():
                    headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        span = None
        if self.tracer is not None:
            span = self.tracer.start_span(f"{scope['method']} {scope['path']}", kind=_server_kind())
            span.set_attribute("http.request.method", scope["method"])
            span.set_attribute("gateway.request_id", rid)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self._finish(scope, state, status, time.perf_counter() - started, span)
            REQUEST_ID.reset(token)

    def _finish(
        self, scope: Scope, state: dict[str, Any], status: int, seconds: float, span: Any
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "(unmatched)"
        model = str(state.get("model") or "")
        labels = (template, scope["method"], model, str(status))
        metrics = self.metrics
        metrics.child(metrics.requests, *labels).inc()
        metrics.child(metrics.request_seconds, *labels).observe(seconds)
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "project": state.get("project"),
                "model": model or None,
            },
        )
        if span is not None:
            span.update_name(f"{scope['method']} {template}")
            span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            if model:
                span.set_attribute("gen_ai.request.model", model)
            span.end()


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER
