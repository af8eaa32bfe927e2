"""Background mode across real gateway processes on one real PostgreSQL: cancel and resume on
a replica other than the one running the job, `kill -9` of the running process, the retry
limit, graceful shutdown, and 100 jobs done exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest

from app.store.database import Database
from app.store.engine import create_engine
from app.store.jobs import _RECORD_SQL, JobStore
from tests.conftest import migrate, models_yaml, new_database
from tests.fake_upstream import FakeUpstream, Reply
from tests.wire import restream_raw

TERMINAL = {"completed", "failed", "incomplete", "cancelled"}
LEASE_SECONDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"


class Replica:
    """One `responses-gateway serve` process."""

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, new_session: bool = False
    ) -> None:
        self.name = name
        self.new_session = new_session  # a process group of its own, as a terminal's job
        self.env = env
        self.log = log_dir / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Replica:
        self.port = free_port()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0)


class Cluster:
    def __init__(self, url: str, env: dict[str, str], log_dir: Path) -> None:
        self.database_url = url
        self._env = env
        self._log_dir = log_dir
        self.a = Replica("a", env, log_dir).start()
        self.b = Replica("b", env, log_dir).start()

    def replicas(self) -> list[Replica]:
        return [self.a, self.b]

    def heal(self) -> None:
        """Restart whatever a test killed, so every test starts with two live replicas."""
        for replica in self.replicas():
            if not replica.alive():
                replica.start()

    def job(self, response_id: str) -> asyncpg.Record | None:
        async def fetch() -> asyncpg.Record | None:
            plain = self.database_url.replace("postgresql+asyncpg://", "postgresql://")
            connection = await asyncpg.connect(plain)
            try:
                return await connection.fetchrow(
                    "SELECT status, attempts, lease_owner FROM jobs WHERE response_id = $1",
                    response_id,
                )
            finally:
                await connection.close()

        return asyncio.run(fetch())

    def runner_of(self, response_id: str, timeout: float = 10) -> Replica:
        """The replica whose worker (its own loop, or on PostgreSQL its child worker process)
        holds the job's lease."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(response_id)
            if job is not None and job["lease_owner"]:
                pid = int(job["lease_owner"].split(":")[1])
                pids = {pid, parent_pid(pid)}
                return next(r for r in self.replicas() if r.alive() and r.pid in pids)
            time.sleep(0.02)
        raise AssertionError(f"no worker claimed {response_id}")

    def other(self, replica: Replica) -> Replica:
        return self.b if replica is self.a else self.a

    def stop(self) -> None:
        for replica in self.replicas():
            replica.stop()


@pytest.fixture(scope="module")
def cluster(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    for database in new_database("postgres", tmp):
        migrate(database.url)
        config = tmp / "models.yaml"
        config.write_text(models_yaml(upstream))
        env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "GATEWAY_JOB_POLL_SECONDS": "0.2",
            "GATEWAY_JOB_MAX_ATTEMPTS": "2",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        cluster = Cluster(database.url, env, tmp)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def replicas(cluster: Cluster, upstream: FakeUpstream) -> Iterator[Cluster]:
    cluster.heal()
    upstream.reset()
    yield cluster


def wait_status(client: openai.OpenAI, response_id: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = client.responses.retrieve(response_id).status or ""
        if status in TERMINAL:
            return status
        time.sleep(0.05)
    return status


def slow(words: int = 60, delay: float = 0.05) -> Reply:
    return Reply(content=" ".join(f"w{i}" for i in range(words)), token_delay=delay)


def test_cancel_on_the_other_replica(replicas: Cluster, upstream: FakeUpstream) -> None:
    upstream.enqueue(slow())
    with replicas.a.client() as a:
        created = a.responses.create(model="local-llama", input="x", background=True)
    runner = replicas.runner_of(created.id)
    time.sleep(0.3)
    with replicas.other(runner).client() as elsewhere:
        asked = time.monotonic()
        cancelled = elsewhere.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        deadline = asked + 1.0
        while not upstream.disconnects and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upstream.disconnects and upstream.disconnects[0] - asked < 1.0
        assert cancelled.output_text.startswith("w0")
        assert elsewhere.responses.retrieve(created.id).status == "cancelled"


def test_stream_on_one_replica_resume_on_the_other(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    upstream.enqueue(slow(30))
    first: list[dict] = []
    with httpx.stream(
        "POST",
        f"{replicas.a.url}/v1/responses",
        json={"model": "local-llama", "input": "x", "stream": True, "background": True},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                first.append(json.loads(line[6:]))
                if len(first) == 8:
                    break
    response_id = first[0]["response"]["id"]
    rest = restream_raw(replicas.b.url, response_id, first[-1]["sequence_number"]).events
    events = first + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output_text"] == " ".join(f"w{i}" for i in range(30))


def test_kill_9_of_the_runner_another_replica_finishes(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    upstream.enqueue(slow(200, 0.05))
    with replicas.a.client() as a:
        created = a.responses.create(model="local-llama", input="second try", background=True)
    runner = replicas.runner_of(created.id)
    time.sleep(0.3)
    runner.kill()
    survivor = replicas.other(runner)
    with survivor.client() as client:
        assert wait_status(client, created.id, timeout=LEASE_SECONDS + 10) == "completed"
        done = client.responses.retrieve(created.id)
    assert done.output_text == "echo: second try"  # generated again from the start
    job = replicas.job(created.id)
    assert job is not None and job["status"] == "done" and job["attempts"] == 2


def test_kill_9_mid_stream_the_retry_continues_the_numbering(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    upstream.enqueue(slow(200, 0.05))
    seen: list[dict] = []
    with httpx.stream(
        "POST",
        f"{replicas.a.url}/v1/responses",
        json={"model": "local-llama", "input": "again", "stream": True, "background": True},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if len(seen) == 8:  # persisted: a follower only sees what the worker stored
                    break
    response_id = seen[0]["response"]["id"]
    runner = replicas.runner_of(response_id)
    runner.kill()
    survivor = replicas.other(runner)
    with survivor.client() as client:
        assert wait_status(client, response_id, timeout=LEASE_SECONDS + 10) == "completed"
    events = restream_raw(survivor.url, response_id).events
    # The claim hands the new attempt the last persisted sequence number: no gap, no duplicate.
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[: len(seen)] == seen
    assert [e["type"] for e in events].count("response.in_progress") == 2
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output_text"] == "echo: again"


def test_retry_limit_then_failed(replicas: Cluster, upstream: FakeUpstream) -> None:
    upstream.enqueue(slow(300, 0.05), slow(300, 0.05))
    with replicas.a.client() as a:
        created = a.responses.create(model="local-llama", input="doomed", background=True)
    first = replicas.runner_of(created.id)
    first.kill()
    # After the lease expires the other replica takes the second (last) attempt; kill it too.
    deadline = time.monotonic() + LEASE_SECONDS + 10
    while time.monotonic() < deadline:
        job = replicas.job(created.id)
        if job is not None and job["attempts"] == 2 and job["lease_owner"]:
            break
        time.sleep(0.05)
    second = replicas.runner_of(created.id)
    assert second is not first
    second.kill()
    fresh = Replica("c", replicas._env, replicas._log_dir).start()
    try:
        with fresh.client() as client:
            assert wait_status(client, created.id, timeout=LEASE_SECONDS + 10) == "failed"
            failed = client.responses.retrieve(created.id)
        assert failed.error is not None and "attempted 2 times" in failed.error.message
    finally:
        fresh.stop()


def test_graceful_shutdown_hands_the_job_over(replicas: Cluster, upstream: FakeUpstream) -> None:
    upstream.enqueue(slow(200, 0.05))
    with replicas.a.client() as a:
        created = a.responses.create(model="local-llama", input="handover", background=True)
    runner = replicas.runner_of(created.id)
    time.sleep(0.2)
    stopped_at = time.monotonic()
    assert runner.process is not None
    runner.process.terminate()  # SIGTERM: 1 s grace, then release to the other replica
    runner.process.wait(20)
    survivor = replicas.other(runner)
    with survivor.client() as client:
        assert wait_status(client, created.id, timeout=10) == "completed"
    # Released, not abandoned: picked up without waiting for the lease to expire, and the
    # interrupted attempt does not count against the limit.
    job = replicas.job(created.id)
    assert job is not None and job["attempts"] == 1
    assert time.monotonic() - stopped_at < 15


def test_a_replica_with_free_slots_runs_the_jobs_it_enqueues(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    """Jobs go to the worker of the replica that took the request while it has room (no
    notification, no claim race with the idle other replica)."""
    upstream.enqueue(*[slow(20, 0.05) for _ in range(6)])
    with replicas.a.client() as a:
        ids = [
            a.responses.create(model="local-llama", input=f"local {i}", background=True).id
            for i in range(6)
        ]
        assert {replicas.runner_of(i).name for i in ids} == {replicas.a.name}
        assert [wait_status(a, i) for i in ids] == ["completed"] * 6


def test_hundred_jobs_across_two_replicas_complete_exactly_once(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    ids: list[str] = []
    with replicas.a.client() as a, replicas.b.client() as b:
        for index in range(100):
            client = a if index % 2 == 0 else b
            created = client.responses.create(
                model="local-llama", input=f"job {index}", background=True
            )
            ids.append(created.id)
        deadline = time.monotonic() + 60
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            for response_id in list(pending):
                if a.responses.retrieve(response_id).status in TERMINAL:
                    pending.discard(response_id)
            time.sleep(0.1)
        assert not pending, f"{len(pending)} jobs never finished"
        for index, response_id in enumerate(ids):
            done = b.responses.retrieve(response_id)
            assert done.status == "completed"
            assert done.output_text == f"echo: job {index}"
            assert len(done.output) == 1
    asked = [r.body["messages"][-1]["content"] for r in upstream.requests]
    assert sorted(asked) == sorted(f"job {i}" for i in range(100))  # each exactly once


def test_a_delete_on_one_replica_reaches_the_others_context_cache(
    replicas: Cluster, upstream: FakeUpstream
) -> None:
    """Replica A caches the contexts of the chain it stores; a turn deleted on B must not be
    sent upstream by A's next continuation of a later turn."""
    with replicas.a.client() as a, replicas.b.client() as b:
        first = a.responses.create(model="local-llama", input="one")
        second = a.responses.create(model="local-llama", input="two", previous_response_id=first.id)
        third = a.responses.create(
            model="local-llama", input="three", previous_response_id=second.id
        )
        b.responses.delete(second.id)
        time.sleep(0.3)  # the notification is asynchronous
        a.responses.create(model="local-llama", input="four", previous_response_id=third.id)
    sent = [message["content"] for message in upstream.last.body["messages"]]
    assert sent == ["one", "echo: one", "three", "echo: three", "four"]


def test_cancel_of_a_job_whose_runner_died_still_cancels(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The runner was killed and its lease is long: nobody would answer the cancel for a
    minute, so the replica asked gives up waiting and cancels the job itself."""
    for database in new_database("postgres", tmp_path):
        migrate(database.url)
        config = tmp_path / "models.yaml"
        config.write_text(models_yaml(upstream))
        env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_JOB_LEASE_SECONDS": "60",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        runner = Replica("runner", env, tmp_path).start()
        asked = Replica("asked", {**env, "GATEWAY_WORKER_CONCURRENCY": "0"}, tmp_path).start()
        try:
            upstream.reset()
            upstream.enqueue(slow(400, 0.05))
            with asked.client() as client:
                created = client.responses.create(
                    model="local-llama", input="orphan", background=True
                )
                deadline = time.monotonic() + 10
                while client.responses.retrieve(created.id).status != "in_progress":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                runner.kill()
                started = time.monotonic()
                cancelled = client.responses.cancel(created.id)
                assert cancelled.status == "cancelled" and cancelled.completed_at is None
                assert time.monotonic() - started < 15
                assert client.responses.retrieve(created.id).status == "cancelled"
                assert client.responses.cancel(created.id).status == "cancelled"
        finally:
            runner.stop()
            asked.stop()


def test_a_takeover_waits_for_the_events_a_stale_worker_is_writing(tmp_path: Path) -> None:
    # Two workers, as the job store sees them: "stale" held the lease, which expired while its
    # batch of stream events was being written; "fresh" claims the job at that moment. The
    # stale batch is held uncommitted in a transaction, so the interleaving is exact.
    for database in new_database("postgres", tmp_path):
        migrate(database.url)
        asyncio.run(_takeover_during_a_stale_write(database.url))


async def _takeover_during_a_stale_write(url: str) -> None:
    raw_url = url.replace("+asyncpg", "", 1)
    setup = await asyncpg.connect(raw_url)
    stale = await asyncpg.connect(raw_url)
    engine = create_engine(url, pool_size=2)
    jobs = JobStore(Database(engine))
    try:
        await setup.execute(
            "INSERT INTO responses (id, project, background, stream, created_at, status, model,"
            " body, history_pks, input_pks, output_pks)"
            " VALUES ('resp_1', '', true, true, 0, 'in_progress', 'm',"
            " '{\"status\": \"in_progress\"}', '[]', '[]', '[]');"
            "INSERT INTO jobs (response_id, project, status, attempts, lease_owner,"
            " lease_expires_at, cancel_requested, created_at, request)"
            " VALUES ('resp_1', '', 'running', 1, 'stale', 0, false, 0, '{}');"
            "INSERT INTO response_events (response_id, sequence_number, data)"
            " SELECT 'resp_1', n, json_build_object('sequence_number', n)"
            " FROM generate_series(0, 2) AS n"
        )
        batch = [json.dumps({"sequence_number": n}) for n in (3, 4)]
        async with stale.transaction():
            held = await stale.fetchval(_RECORD_SQL, "resp_1", "stale", [3, 4], batch)
            assert held is not None
            # The row is locked by the write in flight: skipped, not claimed with stale numbers.
            assert await jobs.claim("fresh", 10, 60, 3) == []
        [claimed] = await jobs.claim("fresh", 10, 60, 3)
        assert claimed.attempts == 2 and claimed.last_sequence == 4
        # From now on the stale worker writes nothing.
        assert await stale.fetchval(_RECORD_SQL, "resp_1", "stale", [5], ["{}"]) is None
        assert await jobs.record("resp_1", "fresh", [{"sequence_number": 5}])
    finally:
        await engine.dispose()
        await stale.close()
        await setup.close()
