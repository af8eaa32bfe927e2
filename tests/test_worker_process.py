"""Where background jobs run: `serve` on PostgreSQL with `GATEWAY_WORKER_PROCESS=auto` starts a
child `responses-gateway worker` at a lower CPU priority, replaces it when it dies and takes it
down when it stops (or dies); `GATEWAY_WORKER_PROCESS=inline` and SQLite keep the worker in the
HTTP process; and the `worker` command alone runs what a `serve` without a worker queued. Real
processes, real PostgreSQL, the `openai` SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.conftest import migrate, models_yaml, new_database
from tests.fake_upstream import FakeUpstream
from tests.test_background_replicas import Replica, slow, wait_status


def state(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None once it is gone (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else (fields[0], int(fields[1]))


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = state(int(entry.name))
            if info is not None and info[1] == pid:
                found.append(int(entry.name))
    return found


def eventually(check: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def only_child(replica: Replica) -> int:
    found = children(replica.pid)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def env(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("worker-process")
    for database in new_database("postgres", tmp):
        migrate(database.url)
        config = tmp / "models.yaml"
        config.write_text(models_yaml(upstream))
        yield {
            **os.environ,
            "DATABASE_URL": database.url,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_JOB_POLL_SECONDS": "0.2",
            "GATEWAY_WORKER_PROCESS": "auto",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "1",
            "GATEWAY_LOG_LEVEL": "warning",
        }


@pytest.fixture
def serve(
    env: dict[str, str], upstream: FakeUpstream, tmp_path: Path
) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(**overrides: str) -> Replica:
        replica = Replica(f"serve-{len(started)}", {**env, **overrides}, tmp_path).start()
        started.append(replica)
        return replica

    upstream.reset()
    yield start
    for replica in started:
        replica.stop()


def completes(client: openai.OpenAI, text: str) -> None:
    created = client.responses.create(model="local-llama", input=text, background=True)
    assert wait_status(client, created.id) == "completed"
    assert client.responses.retrieve(created.id).output_text == f"echo: {text}"


def test_serve_on_postgres_runs_jobs_in_a_child_at_lower_priority(
    serve: Callable[..., Replica], upstream: FakeUpstream
) -> None:
    replica = serve()
    child = only_child(replica)
    assert os.getpriority(os.PRIO_PROCESS, child) > os.getpriority(os.PRIO_PROCESS, replica.pid)
    assert b"worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    with replica.client() as client:
        completes(client, "in the child")
        # A running job, cancelled through the HTTP process: rg_cancels reaches the child.
        upstream.enqueue(slow(200, 0.05))
        created = client.responses.create(model="local-llama", input="x", background=True)
        eventually(
            lambda: client.responses.retrieve(created.id).status == "in_progress",
            what="the job to start",
        )
        asked = time.monotonic()
        cancelled = client.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        eventually(lambda: bool(upstream.disconnects), timeout=2, what="the upstream call to end")
        assert upstream.disconnects[0] - asked < 1.0
        assert client.responses.retrieve(created.id).status == "cancelled"


def test_a_killed_worker_is_replaced(serve: Callable[..., Replica]) -> None:
    replica = serve()
    first = only_child(replica)
    os.kill(first, signal.SIGKILL)
    eventually(lambda: [c for c in children(replica.pid) if c != first] != [], what="a new child")
    second = only_child(replica)
    assert second != first
    assert os.getpriority(os.PRIO_PROCESS, second) > os.getpriority(os.PRIO_PROCESS, replica.pid)
    with replica.client() as client:
        completes(client, "after the restart")


def test_sigterm_to_serve_stops_the_worker_too(serve: Callable[..., Replica]) -> None:
    replica = serve()
    child = only_child(replica)
    assert replica.process is not None
    replica.process.terminate()
    # uvicorn re-raises the signal it caught once its shutdown is complete.
    assert replica.process.wait(15) in (0, -signal.SIGTERM)
    eventually(lambda: state(child) is None, what="the worker to exit")


def test_ctrl_c_stops_serve_and_its_worker_without_a_restart(
    env: dict[str, str], tmp_path: Path
) -> None:
    replica = Replica("ctrl-c", env, tmp_path, new_session=True).start()
    try:
        child = only_child(replica)
        os.killpg(replica.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the group
        assert replica.process is not None
        assert replica.process.wait(15) in (0, -signal.SIGINT)
        eventually(lambda: state(child) is None, what="the worker to exit")
        assert "died" not in replica.log.read_text()  # stopped by its parent, not restarted
    finally:
        replica.stop()


def test_kill_9_of_serve_leaves_no_orphan(serve: Callable[..., Replica]) -> None:
    replica = serve()
    child = only_child(replica)
    replica.kill()
    eventually(lambda: state(child) is None, timeout=5, what="the orphaned worker to die")


def test_inline_runs_jobs_in_the_http_process(serve: Callable[..., Replica]) -> None:
    replica = serve(GATEWAY_WORKER_PROCESS="inline")
    assert children(replica.pid) == []
    with replica.client() as client:
        completes(client, "inline")


def test_sqlite_auto_runs_jobs_inline(serve: Callable[..., Replica], tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    migrate(url)
    replica = serve(DATABASE_URL=url)
    assert children(replica.pid) == []
    with replica.client() as client:
        completes(client, "on sqlite")


def test_the_worker_command_runs_the_jobs_of_a_serve_without_a_worker(
    serve: Callable[..., Replica], env: dict[str, str], tmp_path: Path
) -> None:
    replica = serve(GATEWAY_WORKER_CONCURRENCY="0")
    assert children(replica.pid) == []
    with replica.client() as client:
        queued = client.responses.create(model="local-llama", input="waiting", background=True)
        with (tmp_path / "worker.log").open("ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            assert wait_status(client, queued.id) == "completed"
            completes(client, "while it runs")
        finally:
            worker.terminate()
            code = worker.wait(15)
        assert code == 0, (tmp_path / "worker.log").read_text()


def test_worker_process_setting() -> None:
    postgres = "postgresql://u@h/db"
    assert not Settings(database_url=postgres).worker_in_child  # the default: inline
    assert Settings(database_url=postgres, gateway_worker_process="auto").worker_in_child
    assert not Settings(gateway_worker_process="auto").worker_in_child  # SQLite
    assert Settings(gateway_worker_process="process").worker_in_child
    assert not Settings(database_url=postgres, gateway_worker_process="inline").worker_in_child
    assert not Settings(database_url=postgres, gateway_worker_concurrency=0).worker_in_child
    assert Settings(gateway_worker_process="TRUE").gateway_worker_process == "process"
    assert Settings(gateway_worker_process="false").gateway_worker_process == "inline"
    with pytest.raises(ValidationError, match="auto"):
        Settings(gateway_worker_process="sometimes")


def test_the_child_gets_exactly_the_parents_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = Settings(
        database_url="postgresql://u@h/db",
        gateway_config=Path("/etc/models.yaml"),
        gateway_admin_key="admin-secret",
        gateway_log_prompts=True,
        gateway_worker_concurrency=3,
        gateway_job_lease_seconds=2.5,
        openai_api_key=None,
    )
    # What the parent's environment says otherwise must not win over its settings.
    monkeypatch.setenv("GATEWAY_WORKER_CONCURRENCY", "99")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    for name, value in parent.as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == parent
