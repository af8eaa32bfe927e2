"""`POST /v1/responses` answered in plain ASGI, ahead of FastAPI's whole stack.

This is the hot path, and a request through FastAPI pays for all of it before `create_response`
runs: the app and Starlette entry points, the server-error, telemetry and body-limit middleware,
the exception and exit-stack middleware, a regex match over every route, the included router,
the request handler and `solve_dependencies`. `GatewayApp` (the FastAPI app `create_app` makes)
takes this one request before any of that, straight into `ObservabilityMiddleware` and then
`CreateFastPath`, which runs the same steps from the same functions (`create_services`,
`responses.create`); errors go to the app's own exception handlers (the ones `app.api.errors`
installs), an unexpected one to its 500 handler and then on up, as Starlette's
`ServerErrorMiddleware` does; and the response object is called as an ASGI app. Every other
request, and this one under a `root_path`, goes through FastAPI unchanged; the route stays
registered there, for the OpenAPI document and as the one other way in.

`ObservabilityMiddleware` reads `scope["route"]` for the route template: it is set to the
FastAPI route this path stands in for.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import body_too_large, create_services
from app.api.responses import create

_Handler = Any  # an exception handler as FastAPI stores it: (request, exc) -> Response


async def read_request_body(receive: Receive, limit: int) -> bytes:
    """The request's body, read as Starlette's `Request.body` reads it (a disconnect on the way
    is `ClientDisconnect`), without the generator and checks it goes through. Past `limit`
    bytes the rest is read and dropped, not kept, and the answer is a 413 (read to its end, so
    that the client, still sending, gets the answer rather than a reset connection)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif chunks:
            chunks.clear()
        if not message.get("more_body", False):
            if size > limit:
                raise body_too_large(size, limit)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def find_route(routes: list[Any], method: str, path: str) -> APIRoute:
    return next(
        route
        for route in routes
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ())
    )


def exception_handler(handlers: dict[Any, _Handler], exc: Exception) -> _Handler | None:
    """The handler FastAPI's `ExceptionMiddleware` would pick for `exc` (by status, then by
    class); `Exception` itself is left out, as there: an unexpected error goes on to
    `ServerErrorMiddleware` and its 500."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


class CreateFastPath:
    """The create request's ASGI app (`GatewayApp` routes it here)."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        scope["endpoint"] = self.route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive)
        app: FastAPI = scope["app"]
        try:
            limit: int = app.state.max_body_bytes
            reader = partial(read_request_body, receive, limit)
            reply = await create(request, await create_services(request), reader)
        except Exception as exc:
            handler = exception_handler(app.exception_handlers, exc)
            if handler is not None:
                reply = await handler(request, exc)
            else:
                # What `ServerErrorMiddleware` does: the app's 500, then the error goes on up
                # (to the server, which logs it).
                unexpected: _Handler = app.exception_handlers.get(
                    Exception, app.exception_handlers.get(500)
                )
                if unexpected is None:
                    raise
                await (await unexpected(request, exc))(scope, receive, send)
                raise
        # Both kinds of reply send their status line first, so what they raise comes after it,
        # where FastAPI would not have handled it either.
        await reply(scope, receive, send)


class GatewayApp(FastAPI):
    """FastAPI, with the create request taken at the door (`fast_path`)."""

    fast_path: ASGIApp | None = None
    fast_path_url = ""

    def take(self, path: str, fast_path: ASGIApp) -> None:
        """Answer `POST path` with `fast_path` (an ASGI app that gets `scope["app"]` set)."""
        self.fast_path_url, self.fast_path = path, fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        if (
            fast_path is not None
            and scope["type"] == "http"
            and scope["path"] == self.fast_path_url
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.root_path
        ):
            scope["app"] = self
            await fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
