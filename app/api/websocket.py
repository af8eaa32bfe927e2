"""`/v1/responses` over WebSocket: OpenAI's WebSocket mode.

The client opens a WebSocket to the create URL, its key in the handshake's `Authorization`
header (a bad key is the handshake's own 401, in OpenAI's error envelope), and sends
`response.create` events: a create body plus `type` and, optionally, `stream_id`, the lane.
Each is answered with the events an HTTP stream of the same request sends, one text frame
each, echoing the lane's `stream_id`. The responses of one lane run one after another, in the
order sent; lanes run side by side, at most `max_streams` with work at once. A request refused
before its first event gets an `error` event carrying the HTTP status it would have had
(`{"type": "error", "status", "error": {type, code, message, param}}`), in its place among its
lane's answers, and the connection stays open for the next one. The key is checked again on
every `response.create` (a cached lookup, as on HTTP): a key revoked while its connection is
open gets a 401 event, and the connection is closed (1008).

What a connection keeps between turns (`store: false` responses, for `previous_response_id`)
is `app.core.session.LocalContexts`. A connection lives at most `max_seconds` (OpenAI's limit
is 60 minutes): then it takes no new request, answers any with
`websocket_connection_limit_reached`, and closes with code 1001 (which clients reconnect on)
once the responses it already took (running or queued) have ended. When the client goes away,
or the server shuts down (uvicorn closes every WebSocket with 1012), running generations end as
an HTTP stream's do when its client disconnects: stored `cancelled`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.responses import Response

from app.api.deps import body_too_large, principal
from app.api.errors import bad_json, error_response, most_specific, validation_error
from app.api.middleware import request_id
from app.api.responses import request_input
from app.core.keys import Principal
from app.core.limits import check_input_size
from app.core.responses import ResponsesService
from app.core.session import DEFAULT_CAPACITY, LocalContexts
from app.core.usage import ENDING_EVENTS, UsageMeter
from app.errors import AuthenticationError, BadRequestError, GatewayError
from app.logs import REQUEST_ID
from app.schemas.requests import CreateResponseRequest

router = APIRouter(prefix="/v1/responses", tags=["responses"])
log = logging.getLogger("app.api")
access_log = logging.getLogger("app.access")

# OpenAI's pattern for a lane's name.
STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
# Requests taken but not yet answered, at most, on one connection; another is refused.
MAX_PENDING = 64
# What the server does not run over WebSocket, and what `response.create` may carry that a
# create body does not.
STEERING_UNSUPPORTED = "Steering is not supported by this gateway: send a new response.create."


@router.websocket("")
async def responses_socket(websocket: WebSocket) -> None:
    """The handshake: the key first (a refusal is an HTTP answer, not a WebSocket), then the
    connection's life."""
    token = REQUEST_ID.set(request_id(websocket.scope))
    try:
        try:
            caller = await principal(websocket)
        except GatewayError as exc:
            await _deny(websocket, error_response(exc))
            _access(websocket, exc.status, 0.0, None, 0)
            return
        await websocket.accept()
        await Connection(websocket, caller).serve()
    finally:
        REQUEST_ID.reset(token)


def _access(
    websocket: WebSocket, status: int, seconds: float, project: str | None, responses: int
) -> None:
    access_log.info(
        "websocket",
        extra={
            "method": "GET",
            "path": websocket.url.path,
            "route": "/v1/responses",
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "project": project,
            "responses": responses,
        },
    )


async def _deny(websocket: WebSocket, reply: Response) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(reply)
    else:  # a server without the denial extension: the client sees a 403
        await websocket.close(code=1008)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before it ran, answered in its place among its lane's answers: the
    error, and the response it continued from (evicted then, in that order)."""

    error: GatewayError
    previous: str | None


Pending = tuple[CreateResponseRequest, bool] | Refusal


class ClientGoneError(Exception):
    """A frame could not be sent: the connection is closed or closing."""


class Connection:
    """One client's WebSocket, from its accept to its close."""

    def __init__(self, websocket: WebSocket, caller: Principal) -> None:
        state, settings = websocket.state, websocket.app.state
        self.websocket = websocket
        self.caller = caller
        self.responses: ResponsesService = state.responses
        self.usage: UsageMeter = state.usage
        self.limits = state.limits
        self.max_body: int = settings.max_body_bytes
        self.max_items: int = settings.max_input_items
        self.max_streams: int = settings.websocket_max_streams
        self.max_seconds: float = settings.websocket_max_seconds
        self.log_prompts: bool = settings.log_prompts
        self.contexts = LocalContexts(max(DEFAULT_CAPACITY, self.max_streams))
        # Each lane's queue: requests to answer, and refusals to send, in the order received.
        self.lanes: dict[str | None, deque[Pending]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending = 0  # requests taken and not yet answered
        self.refusals = 0  # refusals not yet sent
        self.sending = asyncio.Lock()
        self.expired = False
        self.closed = False
        self.answered = 0
        self.running: dict[str, str | None] = {}  # responses being answered, and their lanes

    async def serve(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.max_seconds, self._expire)
        try:
            while True:
                try:
                    message = await self.websocket.receive()
                except (RuntimeError, WebSocketDisconnect):
                    break
                if message["type"] == "websocket.disconnect":
                    break
                if self.closed:
                    continue  # closing: what still arrives is not answered
                text = message.get("text")
                self._read(text if text is not None else message.get("bytes") or b"")
        finally:
            timer.cancel()
            self.closed = True
            try:
                await self._end_tasks()
            finally:
                seconds = time.perf_counter() - started
                _access(self.websocket, 101, seconds, self.caller.project, self.answered)

    async def _end_tasks(self) -> None:
        """Cancel what still runs and wait for it: each generation's cleanup (closing the
        upstream, storing it cancelled) runs to its end, even if this task is cancelled
        meanwhile (that cancellation is kept for after)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        ending = asyncio.gather(*tasks, return_exceptions=True)
        interrupted = False
        while not ending.done():
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:
                interrupted = True
        if interrupted:
            raise asyncio.CancelledError

    # --- reading ------------------------------------------------------------------------------

    def _read(self, data: str | bytes) -> None:
        """One client frame: a `response.create` (or its refusal) queued on its lane, or an
        error event at once when there is no lane to put it on."""
        lane: str | None = None
        previous: object = None
        queue: deque[Pending] | None = None
        try:
            if _size(data) > self.max_body:
                raise body_too_large(_size(data), self.max_body)
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise bad_json() from None
            if not isinstance(event, dict):
                raise BadRequestError("The event must be a JSON object.", code="invalid_type")
            kind = event.pop("type", None)
            if kind == "response.steer":
                self._refuse_steering(event)
                return
            if kind != "response.create":
                raise BadRequestError(
                    f"Invalid value: {kind!r}. Supported values are: 'response.create'.",
                    param="type",
                    code="invalid_value" if kind is not None else "missing_required_parameter",
                )
            previous = event.get("previous_response_id")
            lane = _lane(event)
            queue = self.lanes.get(lane)
            create, generate = _create_request(event)
            if self.expired:
                raise _connection_limit(self.max_seconds)
            if self.pending >= MAX_PENDING:
                raise BadRequestError(
                    f"This WebSocket connection has reached its stream limit: at most "
                    f"{MAX_PENDING} responses may wait on it. Wait for some to end.",
                    code="websocket_stream_limit_reached",
                )
            if queue is None:
                queue = self._open_lane(lane)
            self.pending += 1
            queue.append((create, generate))
        except GatewayError as exc:
            self._refuse(Refusal(exc, previous if isinstance(previous, str) else None), lane, queue)

    def _refuse(self, refusal: Refusal, lane: str | None, queue: deque[Pending] | None) -> None:
        """A refused continuation leaves nothing to go on from (Open Responses), and the
        refusal keeps its place among its lane's answers. A client that keeps sending what is
        refused without reading the answers is cut off (1008) once they pile up."""
        if self.pending + self.refusals >= 2 * MAX_PENDING:
            log.warning("websocket closed: %d answers unread", self.pending + self.refusals)
            self._spawn(self._close(1008, "too many unanswered requests"))
            return
        self.refusals += 1
        if queue is not None:
            queue.append(refusal)
        else:
            self._spawn(self._send_refusal(refusal, lane))

    async def _send_refusal(self, refusal: Refusal, lane: str | None) -> None:
        self.refusals -= 1
        self.contexts.evict(refusal.previous)
        await self._send_error(refusal.error, lane)

    def _open_lane(self, lane: str | None) -> deque[Pending]:
        if len(self.lanes) >= self.max_streams:
            raise BadRequestError(
                f"This WebSocket connection has reached its stream limit: at most "
                f"{self.max_streams} lanes (stream_id) with responses running or queued.",
                param="stream_id",
                code="websocket_stream_limit_reached",
            )
        queue: deque[Pending] = deque()
        self.lanes[lane] = queue
        self._spawn(self._run_lane(lane, queue))
        return queue

    def _refuse_steering(self, event: dict[str, Any]) -> None:
        target = str(event.get("previous_response_id") or "")
        failed = {
            "type": "response.steer.failed",
            "sequence_number": 0,
            "error": {
                "type": "invalid_request_error",
                "code": "steering_not_supported",
                "message": STEERING_UNSUPPORTED,
            },
            "steer": {
                "input": event.get("input", ""),
                "previous_response_id": target,
            },
        }
        if self.pending + self.refusals >= 2 * MAX_PENDING:
            self._spawn(self._close(1008, "too many unanswered requests"))
            return
        self.refusals += 1
        # The target's lane, if it is running on one here (the SDK: "when the target response
        # is available and its response.create event supplied a stream_id").
        lane = self.running.get(target)
        self._spawn(self._send_steering_refusal(failed, lane))

    async def _send_steering_refusal(self, failed: dict[str, Any], lane: str | None) -> None:
        self.refusals -= 1
        await self._send_quietly(failed, lane)

    # --- answering ----------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("websocket task failed", exc_info=task.exception())

    async def _run_lane(self, lane: str | None, queue: deque[Pending]) -> None:
        try:
            while queue and not self.closed:
                work = queue.popleft()
                if isinstance(work, Refusal):
                    await self._send_refusal(work, lane)
                    continue
                create, generate = work
                try:
                    await self._answer(lane, create, generate)
                except ClientGoneError:
                    return
                except Exception as exc:  # a fault of ours: this request's 500, not the lane's end
                    log.exception("websocket response.create failed", exc_info=exc)
                    self.contexts.evict(create.previous_response_id)
                    await self._send_error(_server_error(), lane)
                finally:
                    self.pending -= 1
        finally:
            del self.lanes[lane]
            if self.expired and not self.lanes:
                self._spawn(self._close_expired())

    async def _answer(
        self, lane: str | None, create: CreateResponseRequest, generate: bool
    ) -> None:
        previous = create.previous_response_id
        try:
            # The key again (cached): one revoked while the connection is open stops here.
            caller = await principal(self.websocket)
            await self.limits.admit(caller)
            check_input_size(create, self.max_items)
            if self.log_prompts:  # a debug setting: prompts stay out of logs otherwise
                log.info(
                    "prompt",
                    extra={"instructions": create.instructions, "input": request_input(create)},
                )
            prepared = await self.responses.prepare(
                create, caller.project, caller.key_id, local=self.contexts
            )
            if generate:
                stream = await self.responses.stream(prepared)
                events = self.usage.stream(stream, prepared, caller.key_id)
            else:
                events = self.usage.stream(self.responses.stand(prepared))
        except GatewayError as exc:
            self.contexts.evict(previous)  # a failed continuation leaves nothing to go on from
            await self._send_error(exc, lane)
            if isinstance(exc, AuthenticationError):
                await self._close(1008, "the API key is no longer valid")
            return
        self.answered += 1
        ending: dict[str, Any] | None = None
        self.running[prepared.id] = lane  # where a steering refusal about it goes
        try:
            async with aclosing(events):
                async for event in events:
                    if event["type"] in ENDING_EVENTS:
                        ending = event["response"]
                    await self._send(event, lane)
        finally:
            del self.running[prepared.id]
        if ending is not None and ending["status"] != "failed":
            self.contexts.remember(prepared, ending)
        else:
            self.contexts.evict(previous)

    async def _send(self, event: dict[str, Any], lane: str | None) -> None:
        data = orjson.dumps(event)
        if lane is not None:  # the event's own bytes, with the lane added at the end
            data = data[:-1] + b',"stream_id":' + orjson.dumps(lane) + b"}"
        async with self.sending:
            try:
                await self.websocket.send({"type": "websocket.send", "text": data.decode()})
            except Exception as exc:  # closed, or the client went away
                raise ClientGoneError from exc

    async def _send_quietly(self, event: dict[str, Any], lane: str | None) -> None:
        try:
            await self._send(event, lane)
        except ClientGoneError:  # the read loop sees it
            log.debug("websocket event not sent: %s", event["type"])

    async def _send_error(self, exc: GatewayError, lane: str | None) -> None:
        error: dict[str, Any] = {
            "type": exc.type,
            "code": exc.code or exc.type,
            "message": exc.message,
            "param": exc.param,
        }
        if exc.headers:  # a 429's Retry-After and x-ratelimit-* headers
            error["headers"] = exc.headers
        await self._send_quietly({"type": "error", "status": exc.status, "error": error}, lane)

    async def _close(self, code: int, reason: str) -> None:
        self.closed = True
        try:
            await self.websocket.close(code=code, reason=reason)
        except Exception:
            log.debug("websocket already closed")

    # --- the connection's time limit --------------------------------------------------------

    def _expire(self) -> None:
        self.expired = True
        if not self.lanes:
            self._spawn(self._close_expired())

    async def _close_expired(self) -> None:
        if self.closed:
            return
        await self._send_error(_connection_limit(self.max_seconds), None)
        await self._close(1001, "connection limit reached")


def _size(data: str | bytes) -> int:
    """A frame's size in bytes (a text frame's characters are 1 to 4 bytes each)."""
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode())


def _lane(event: dict[str, Any]) -> str | None:
    lane = event.pop("stream_id", None)
    if lane is None or (isinstance(lane, str) and STREAM_ID.match(lane)):
        return lane
    raise BadRequestError(
        "Invalid 'stream_id': expected 1 to 256 characters from A-Z, a-z, 0-9, '_', '.' and '-'.",
        param="stream_id",
        code="invalid_value",
    )


def _create_request(event: dict[str, Any]) -> tuple[CreateResponseRequest, bool]:
    """The create body of a `response.create` event, always streamed, and whether it
    generates (`generate: false` prepares a response with no output)."""
    generate = event.pop("generate", True)
    if generate is None:
        generate = True
    if not isinstance(generate, bool):
        raise BadRequestError(
            "Invalid type for 'generate': expected a boolean.",
            param="generate",
            code="invalid_type",
        )
    items = event.get("input")
    if not generate and isinstance(items, list) and items:
        last = items[-1]
        if isinstance(last, dict) and last.get("type") == "compaction_trigger":
            raise BadRequestError(
                "A compaction_trigger asks for a generation: it cannot come with generate=false.",
                param="generate",
                code="invalid_value",
            )
    if event.get("background"):
        raise BadRequestError(
            "background is not supported over WebSocket: use POST /v1/responses.",
            param="background",
            code="unsupported_parameter",
        )
    event["stream"] = True  # implicit; a client may send it (the Agents SDK does)
    try:
        return CreateResponseRequest.model_validate(event), generate
    except ValidationError as exc:
        raise validation_error(most_specific(exc.errors()), event) from None


def _connection_limit(seconds: float) -> BadRequestError:
    minutes = f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"
    return BadRequestError(
        f"This WebSocket connection has reached its {minutes} limit: open a new connection "
        "to continue (with previous_response_id, or the full context for store=false).",
        code="websocket_connection_limit_reached",
    )


def _server_error() -> GatewayError:
    return GatewayError(
        "The server had an error while processing your request. Sorry about that!",
        code="server_error",
    )
