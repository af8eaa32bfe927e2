"""Background mode in one process, on SQLite and Postgres: queued at once, polled to the end,
streamed and re-streamed from any event, cancelled (running or queued), failed cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from tests.conftest import Database, GatewayServer, Stack, gateway_on, migrate, run_sql
from tests.fake_upstream import Fail, FakeUpstream, Reply
from tests.wire import restream_raw, stream_raw, strict_response, strict_stream

TERMINAL = {"completed", "failed", "incomplete", "cancelled"}


def wait_status(
    client: openai.OpenAI, response_id: str, statuses: set[str], timeout: float = 10
) -> openai.types.responses.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in statuses or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def wait_disconnect(upstream: FakeUpstream, deadline: float) -> None:
    while not upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.01)


def test_background_returns_queued_at_once_then_completes(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="slow answer", delay=1.0))
    started = time.monotonic()
    raw = client.responses.with_raw_response.create(
        model="local-llama", input="hi", background=True
    ).http_response.json()
    assert time.monotonic() - started < 0.5
    queued = strict_response(raw)
    assert queued.status == "queued" and queued.background is True
    assert queued.output == [] and queued.usage is None and queued.completed_at is None
    seen = {wait_status(client, queued.id, {"in_progress"} | TERMINAL, 5).status}
    done = wait_status(client, queued.id, TERMINAL)
    seen.add(done.status)
    assert "in_progress" in seen
    assert done.status == "completed" and done.output_text == "slow answer"
    assert done.completed_at is not None and done.usage is not None
    assert done.usage.total_tokens == 18 and done.background is True
    strict_response(client.responses.with_raw_response.retrieve(done.id).http_response.json())
    # The upstream was asked for a streamed answer (so a cancel can keep the partial output).
    assert gw.upstream.last.body["stream"] is True


def test_background_with_previous_response_id(client: openai.OpenAI, gw: Stack) -> None:
    first = client.responses.create(model="local-llama", input="one")
    second = client.responses.create(
        model="local-llama", input="two", previous_response_id=first.id, background=True
    )
    done = wait_status(client, second.id, TERMINAL)
    assert done.output_text == "echo: two"
    assert [m["content"] for m in gw.upstream.last.body["messages"]] == ["one", "echo: one", "two"]
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert len(listed) == 3


def test_background_stream_and_restream(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="alpha beta gamma delta"))
    live = stream_raw(gw.gateway.url, {"model": "local-llama", "input": "x", "background": True})
    strict_stream(live)
    assert live.types[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert live.events[0]["response"]["status"] == "queued"
    assert live.terminal["type"] == "response.completed"
    response_id = live.terminal["response"]["id"]
    # Re-stream from any point: exactly the events after it, then the end.
    for after in (None, -1, 0, 3, len(live.events) - 2):
        again = restream_raw(gw.gateway.url, response_id, after)
        start = 0 if after is None else after + 1
        assert again.events == live.events[start:]
    # The SDK's own resume call.
    with client.responses.retrieve(response_id, stream=True, starting_after=2) as events:
        resumed = [event.sequence_number for event in events]
    assert resumed == list(range(3, len(live.events)))
    stored = client.responses.with_raw_response.retrieve(response_id).http_response.json()
    assert stored == live.terminal["response"]
    # No HEAD: routes are GET/POST only, so a stream is never opened just to be dropped.
    head = httpx.head(f"{gw.gateway.url}/v1/responses/{response_id}", params={"stream": "true"})
    assert head.status_code == 405


def test_a_background_stream_left_at_its_headers_still_runs(
    client: openai.OpenAI, gw: Stack
) -> None:
    """The job is queued before the stream's first byte: a client that goes away as soon as it
    has the status line (or a stream that ends at once) leaves a response that runs to its end
    and can be streamed again."""
    tag = uuid.uuid4().hex
    body = {"model": "local-llama", "input": "x", "background": True, "metadata": {"tag": tag}}
    with httpx.stream("POST", f"{gw.gateway.url}/v1/responses", json={**body, "stream": True}) as r:
        assert r.status_code == 200  # and gone, without reading a byte of the body
    deadline = time.monotonic() + 10
    query = f"SELECT id FROM responses WHERE CAST(body AS TEXT) LIKE '%{tag}%'"
    while not (rows := run_sql(gw.database, query)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rows, "no response was stored"
    done = wait_status(client, rows[0][0], TERMINAL)
    assert done.status == "completed" and done.output_text == "echo: x"
    again = restream_raw(gw.gateway.url, done.id)
    assert again.types[:2] == ["response.created", "response.queued"]
    assert again.terminal["response"]["status"] == "completed"


def test_resume_follows_a_running_stream(client: openai.OpenAI, gw: Stack) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    gw.upstream.enqueue(Reply(content=words, token_delay=0.05))
    first_part: list[dict] = []
    with httpx.stream(
        "POST",
        f"{gw.gateway.url}/v1/responses",
        json={"model": "local-llama", "input": "x", "stream": True, "background": True},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                first_part.append(json.loads(line[6:]))
                if len(first_part) == 6:
                    break
    response_id = first_part[0]["response"]["id"]
    rest = restream_raw(gw.gateway.url, response_id, first_part[-1]["sequence_number"])
    events = first_part + rest.events
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output_text"] == words
    assert not gw.upstream.disconnects  # a background stream's reader leaving stops nothing


def test_cancel_running_job(client: openai.OpenAI, gw: Stack) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    gw.upstream.enqueue(Reply(content=words, token_delay=0.05))
    created = client.responses.create(model="local-llama", input="x", background=True)
    wait_status(client, created.id, {"in_progress"} | TERMINAL)
    time.sleep(0.4)  # some tokens arrive
    asked = time.monotonic()
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert time.monotonic() - asked < 1.5
    wait_disconnect(gw.upstream, asked + 1.0)
    assert gw.upstream.disconnects and gw.upstream.disconnects[0] - asked < 1.0
    assert cancelled.output_text.startswith("w0 w1")  # the partial output is kept
    assert cancelled.output[0].status == "incomplete"
    assert cancelled.completed_at is None
    again = client.responses.cancel(created.id)  # idempotent
    assert again.model_dump() == cancelled.model_dump()
    assert client.responses.retrieve(created.id).status == "cancelled"


def test_cancel_finished_background_response_returns_it_unchanged(
    client: openai.OpenAI,
) -> None:
    created = client.responses.create(model="local-llama", input="x", background=True)
    done = wait_status(client, created.id, TERMINAL)
    assert client.responses.cancel(created.id).model_dump() == done.model_dump()


def test_cancel_rules(client: openai.OpenAI) -> None:
    foreground = client.responses.create(model="local-llama", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(foreground.id)
    assert caught.value.body["message"] == "Cannot cancel a synchronous response."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_does_not_exist")


def test_restream_needs_background_stream(client: openai.OpenAI, gw: Stack) -> None:
    plain = client.responses.create(model="local-llama", input="x", background=True)
    wait_status(client, plain.id, TERMINAL)
    foreground = client.responses.create(model="local-llama", input="x")
    for response_id in (plain.id, foreground.id):
        raw = httpx.get(f"{gw.gateway.url}/v1/responses/{response_id}?stream=true")
        assert raw.status_code == 400
        assert raw.json()["error"]["param"] == "stream"
    assert httpx.get(f"{gw.gateway.url}/v1/responses/resp_nope?stream=true").status_code == 404


def test_background_upstream_failure(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Fail(500, {"error": {"message": "model crashed"}}))
    live = stream_raw(gw.gateway.url, {"model": "local-llama", "input": "x", "background": True})
    strict_stream(live)
    assert live.types[-2:] == ["error", "response.failed"]
    failed = client.responses.retrieve(live.terminal["response"]["id"])
    assert failed.status == "failed" and failed.error is not None
    assert "model crashed" in failed.error.message
    assert failed.error.code == "server_error"


def test_a_background_job_the_upstream_refuses_fails_as_invalid_prompt(
    client: openai.OpenAI, gw: Stack
) -> None:
    """A job whose request the upstream refuses (here, too long for the model) is stored failed
    with `invalid_prompt`, which tells a poller not to enqueue it again as it is."""
    message = "This model's maximum context length is 4096 tokens. However, you requested 9000."
    gw.upstream.enqueue(Fail(400, {"object": "error", "message": message, "code": 400}))
    queued = client.responses.create(model="local-llama", input="x", background=True)
    failed = wait_status(client, queued.id, TERMINAL)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "invalid_prompt" and message in failed.error.message


def test_background_truncation_is_incomplete(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content="cut short", finish_reason="length"))
    created = client.responses.create(
        model="local-llama", input="x", background=True, max_output_tokens=16
    )
    done = wait_status(client, created.id, TERMINAL)
    assert done.status == "incomplete"
    assert done.incomplete_details is not None
    assert done.incomplete_details.reason == "max_output_tokens"


def test_delete_in_flight_background_response(client: openai.OpenAI, gw: Stack) -> None:
    gw.upstream.enqueue(Reply(content=" ".join("x" * 100), token_delay=0.05))
    created = client.responses.create(model="local-llama", input="x", background=True)
    wait_status(client, created.id, {"in_progress"} | TERMINAL)
    time.sleep(0.2)
    client.responses.delete(created.id)
    wait_disconnect(gw.upstream, time.monotonic() + 1.5)
    assert gw.upstream.disconnects, "deleting did not stop the upstream call"
    time.sleep(0.3)  # the worker's fenced writes must not resurrect it
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


@pytest.fixture
def idle_gateway(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> Iterator[GatewayServer]:
    """A gateway whose worker is off: its background jobs stay queued."""
    migrate(empty_database.url)
    with gateway_on(empty_database.url, upstream, tmp_path, gateway_worker_concurrency=0) as server:
        yield server


def test_cancel_queued_job(idle_gateway: GatewayServer) -> None:
    with openai.OpenAI(base_url=f"{idle_gateway.url}/v1", api_key="x", max_retries=0) as client:
        created = client.responses.create(model="local-llama", input="x", background=True)
        time.sleep(0.2)
        assert client.responses.retrieve(created.id).status == "queued"
        cancelled = client.responses.cancel(created.id)
        assert cancelled.status == "cancelled" and cancelled.output == []
        assert client.responses.cancel(created.id).status == "cancelled"


def test_events_expire_after_the_retention(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    migrate(empty_database.url)
    with gateway_on(
        empty_database.url,
        upstream,
        tmp_path,
        gateway_event_retention_seconds=0.5,
        gateway_prune_seconds=0.2,
    ) as server:
        upstream.reset()
        live = stream_raw(server.url, {"model": "local-llama", "input": "x", "background": True})
        response_id = live.terminal["response"]["id"]
        url = f"{server.url}/v1/responses/{response_id}"
        deadline = time.monotonic() + 10
        while (raw := httpx.get(url, params={"stream": "true"})).status_code == 200:
            assert time.monotonic() < deadline, "the events were never pruned"
            time.sleep(0.2)
        assert raw.status_code == 400
        assert raw.json()["error"]["param"] == "stream"
        assert "expired" in raw.json()["error"]["message"]
        kept = httpx.get(url).json()  # the response itself stays
        assert (
            kept["status"] == "completed" and kept["output"] == live.terminal["response"]["output"]
        )


def test_worker_concurrency_bounds_jobs_per_process(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    migrate(empty_database.url)
    with gateway_on(empty_database.url, upstream, tmp_path, gateway_worker_concurrency=2) as server:
        upstream.reset()
        upstream.enqueue(*[Reply(content="slow", delay=1.5)] * 4)
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            ids = [
                client.responses.create(model="local-llama", input="x", background=True).id
                for _ in range(4)
            ]
            time.sleep(0.7)
            statuses = sorted(client.responses.retrieve(i).status for i in ids)
            assert statuses == ["in_progress", "in_progress", "queued", "queued"]
            assert len(upstream.requests) == 2
            done = [wait_status(client, i, TERMINAL, timeout=15).status for i in ids]
            assert done == ["completed"] * 4


def test_a_claim_in_flight_does_not_hold_back_the_hand_off(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With the worker polling all the time (a claim nearly always in flight), every job
    enqueued while slots are free is still handed to it, none queued for a later claim."""
    migrate(empty_database.url)
    with gateway_on(
        empty_database.url,
        upstream,
        tmp_path,
        gateway_worker_concurrency=32,
        gateway_job_poll_seconds=0.001,
    ) as server:
        upstream.reset()
        upstream.enqueue(*[Reply(content=f"slow {i}", delay=2.0) for i in range(20)])
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            ids = [
                client.responses.create(
                    model="local-llama", input=f"job {index}", background=True
                ).id
                for index in range(20)
            ]
            leases = run_sql(
                empty_database,
                "SELECT response_id, lease_expires_at - created_at FROM jobs "
                "WHERE status = 'running'",
            )
            # Leased in the statement that enqueued it; a claim would have leased it later.
            assert sorted(row[0] for row in leases if abs(row[1] - 30.0) < 1e-5) == sorted(ids)
            done = [wait_status(client, i, TERMINAL, timeout=20) for i in ids]
            assert [d.status for d in done] == ["completed"] * 20


def test_a_worker_whose_storage_fails_retries_once_per_poll(
    empty_database: Database,
    upstream: FakeUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A claim that keeps failing (here: its table gone) is retried once per poll, however
    short the housekeeping's period: no busy loop against a failing database."""
    migrate(empty_database.url)
    with gateway_on(
        empty_database.url,
        upstream,
        tmp_path,
        gateway_job_poll_seconds=0.5,
        gateway_prune_seconds=0.05,
    ):
        caplog.set_level("WARNING", logger="app")
        run_sql(empty_database, "ALTER TABLE jobs RENAME TO jobs_away")
        try:
            time.sleep(2)
        finally:
            run_sql(empty_database, "ALTER TABLE jobs_away RENAME TO jobs")
    failures = [r for r in caplog.records if r.getMessage().startswith("background worker:")]
    assert 1 <= len(failures) <= 8


class RowLock:
    """A PostgreSQL transaction of the test's own, on a thread of its own, holding a response
    row `FOR UPDATE` until `release`: a claim that reaches that row waits for it."""

    def __init__(self, database: Database, response_id: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._connection: asyncpg.Connection = self._run(
            asyncpg.connect(database.url.replace("+asyncpg", "", 1))
        )
        self._run(self._connection.execute("BEGIN"))
        self._run(
            self._connection.execute(
                "SELECT 1 FROM responses WHERE id = $1 FOR UPDATE", response_id
            )
        )

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def release(self) -> None:
        self._run(self._connection.execute("COMMIT"))
        self._run(self._connection.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def claim_waiting_on_a_lock(database: Database, client: openai.OpenAI) -> tuple[str, str, RowLock]:
    """On a gateway with one worker slot: a first job runs, a second is queued and its row
    locked; the first ends and the worker's claim of the second waits on the lock."""
    first = client.responses.create(model="local-llama", input="1", background=True)
    second = client.responses.create(model="local-llama", input="2", background=True)
    status = run_sql(database, f"SELECT status FROM jobs WHERE response_id = '{second.id}'")
    assert status == [("queued",)]
    lock = RowLock(database, second.id)
    deadline = time.monotonic() + 10
    while not run_sql(database, "SELECT 1 FROM pg_locks WHERE NOT granted"):
        if time.monotonic() > deadline:
            lock.release()
            raise AssertionError("the claim never reached the lock")
        time.sleep(0.02)
    return first.id, second.id, lock


def job_row(database: Database, response_id: str) -> list[tuple]:
    return run_sql(
        database,
        f"SELECT status, attempts, lease_owner FROM jobs WHERE response_id = '{response_id}'",
    )


def wait_for_row(database: Database, response_id: str, row: tuple, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while job_row(database, response_id) != [row]:
        assert time.monotonic() < deadline, f"the job is {job_row(database, response_id)}"
        time.sleep(0.02)


def test_a_claim_that_finds_its_slots_taken_gives_the_job_back(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A claim in flight while a hand-off takes the last slot: the claimed job goes back to the
    queue (reads `queued`, the attempt uncounted) and runs once the slot is free again."""
    if empty_database.kind == "sqlite":
        pytest.skip("holds a row lock that a PostgreSQL claim waits for")
    migrate(empty_database.url)
    with gateway_on(empty_database.url, upstream, tmp_path, gateway_worker_concurrency=1) as server:
        upstream.reset()
        upstream.enqueue(
            Reply(content="first", delay=1.0), Reply(content="third", delay=2.0), Reply("second")
        )
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            first, second, lock = claim_waiting_on_a_lock(empty_database, client)
            try:
                third = client.responses.create(model="local-llama", input="3", background=True)
                lease = run_sql(
                    empty_database,
                    "SELECT lease_expires_at - created_at FROM jobs "
                    f"WHERE response_id = '{third.id}'",
                )
                assert abs(lease[0][0] - 30.0) < 1e-5  # handed off, claim or no claim
            finally:
                lock.release()
            wait_for_row(empty_database, second, ("queued", 0, None))
            assert client.responses.retrieve(second).status == "queued"
            assert client.responses.retrieve(third.id).status == "in_progress"
            done = [wait_status(client, i, TERMINAL, timeout=20) for i in (first, third.id)]
            assert [d.output_text for d in done] == ["first", "third"]
            assert wait_status(client, second, TERMINAL, timeout=20).output_text == "second"
    attempts = run_sql(empty_database, "SELECT attempts FROM jobs")
    assert attempts == [(1,)] * 3


def test_a_claim_that_returns_while_the_worker_stops_gives_the_job_back(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Shutdown with a claim in flight: the worker waits for it and queues what it claimed
    again for another replica (the attempt uncounted), rather than starting it or leaving it
    leased to a process that is gone."""
    if empty_database.kind == "sqlite":
        pytest.skip("holds a row lock that a PostgreSQL claim waits for")
    migrate(empty_database.url)
    with gateway_on(empty_database.url, upstream, tmp_path, gateway_worker_concurrency=1) as server:
        upstream.reset()
        upstream.enqueue(Reply(content="first", delay=1.0))
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            first, second, lock = claim_waiting_on_a_lock(empty_database, client)
        stopping = threading.Thread(target=server.stop)
        try:
            stopping.start()
            time.sleep(0.5)
        finally:
            lock.release()
        stopping.join(20)
        assert not stopping.is_alive()
    assert job_row(empty_database, first) == [("done", 1, None)]
    assert job_row(empty_database, second) == [("queued", 0, None)]
    assert len(upstream.requests) == 1  # the second job was not started


def test_a_job_enqueued_with_a_free_slot_is_run_by_the_enqueuing_process(
    empty_database: Database, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The hand-off: while this process's worker has a free slot, the job is stored already
    claimed by it (running, first attempt, leased) and runs at once, with no claim; beyond its
    slots, jobs are queued for any worker, and each job still runs exactly once."""
    migrate(empty_database.url)
    with gateway_on(empty_database.url, upstream, tmp_path, gateway_worker_concurrency=2) as server:
        upstream.reset()
        upstream.enqueue(*[Reply(content=f"slow {i}", delay=1.0) for i in range(4)])
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
            ids = []
            for index in range(4):
                created = client.responses.create(
                    model="local-llama", input=f"job {index}", background=True
                )
                assert created.status == "queued"  # the reply is the enqueue's, as OpenAI's
                ids.append(created.id)
            jobs = {
                row[0]: row[1:]
                for row in run_sql(
                    empty_database,
                    "SELECT response_id, status, attempts, lease_owner, "
                    "lease_expires_at - created_at FROM jobs",
                )
            }
            owner = f":{os.getpid()}:"  # this test's process serves the gateway
            for handed in ids[:2]:
                status, attempts, lease_owner, lease = jobs[handed]
                assert (status, attempts) == ("running", 1)
                assert owner in lease_owner
                # Leased in the statement that enqueued it (a claim comes later: a longer lease).
                assert abs(lease - 30.0) < 1e-5
                assert client.responses.retrieve(handed).status == "in_progress"
            for queued in ids[2:]:
                assert jobs[queued] == ("queued", 0, None, None)
                assert client.responses.retrieve(queued).status == "queued"
            done = [wait_status(client, i, TERMINAL, timeout=15) for i in ids]
            assert [d.status for d in done] == ["completed"] * 4
    assert sorted(r.body["messages"][-1]["content"] for r in upstream.requests) == [
        f"job {i}" for i in range(4)
    ]  # each exactly once
    attempts = run_sql(empty_database, "SELECT status, attempts, lease_owner FROM jobs")
    assert sorted(attempts) == [("done", 1, None)] * 4
