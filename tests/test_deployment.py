"""The Dockerfile and docker-compose.yml, checked without a Docker engine: their structure, the
`${VAR:?}` guards, and their commands (migrate, serve, the healthcheck) run here as the
containers would run them, against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import models_yaml, new_database
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[1]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|:-)([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable rules, as far as this file uses them: ${X}, ${X:-default}, ${X:?err}."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if op == ":?" and not value:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == ":-" and not value:
            return arg
        return value

    return _VAR.sub(replace, text)


def dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.split("#")[0].strip()
    return values


def compose(env: dict[str, str]) -> dict[str, Any]:
    loaded = yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), env))
    assert isinstance(loaded, dict)
    return loaded


FILLED = {"POSTGRES_PASSWORD": "pw123", "GATEWAY_ADMIN_KEY": "admin-abc"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list)
    return [str(part) for part in value]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile():
        if instruction == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_env_example_lists_every_required_variable() -> None:
    example = dotenv(ROOT / ".env.example")
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    assert required == {"POSTGRES_PASSWORD", "GATEWAY_ADMIN_KEY"}
    assert required <= set(example)
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        compose({"GATEWAY_ADMIN_KEY": "x"})
    with pytest.raises(ValueError, match="GATEWAY_ADMIN_KEY"):
        compose({"POSTGRES_PASSWORD": "x"})


def test_compose_services_volume_order_and_healthchecks() -> None:
    spec = compose(FILLED)
    services = spec["services"]
    assert set(services) == {"postgres", "migrate", "gateway"}
    postgres = services["postgres"]
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"] and "pgdata" in spec["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    migrate = services["migrate"]
    assert migrate["command"] == ["responses-gateway", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    gateway = services["gateway"]
    assert gateway["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert gateway["command"][:2] == ["responses-gateway", "serve"]
    assert gateway["environment"]["GATEWAY_ADMIN_KEY"] == "admin-abc"
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    url = gateway["environment"]["DATABASE_URL"]
    assert url == migrate["environment"]["DATABASE_URL"]
    assert url == "postgresql://gateway:pw123@postgres:5432/gateway"
    # The compose healthcheck is the image's.
    healthcheck = next(args for kind, args in dockerfile() if kind == "HEALTHCHECK")
    assert gateway["healthcheck"]["test"][1:] == exec_form(healthcheck.split(" CMD ", 1)[1])


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile()
    kinds = [kind for kind, _ in instructions]
    assert next(args for kind, args in instructions if kind == "FROM").endswith("-slim")
    user = [args for kind, args in instructions if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert "HEALTHCHECK" in kinds
    for kind, args in instructions:
        if kind == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here; the YAML checks above stand in",
)
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env = {**os.environ, **FILLED}
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_compose_commands_run_outside_docker(upstream: FakeUpstream, tmp_path: Path) -> None:
    """migrate, then serve with the image's environment (non-loopback bind, admin key from the
    environment), then the healthcheck command — as the containers would, on a real PostgreSQL
    standing in for the `postgres` service."""
    spec = compose(FILLED)["services"]
    config = tmp_path / "models.yaml"
    config.write_text(models_yaml(upstream))
    for database in new_database("postgres", tmp_path):
        port = _free_port()
        base = {**os.environ, **dockerfile_env()}
        migrate_env = {**base, **spec["migrate"]["environment"], "DATABASE_URL": database.url}
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *spec["migrate"]["command"][1:]],
            env=migrate_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

        gateway_env = {
            **base,
            **{k: str(v) for k, v in spec["gateway"]["environment"].items()},
            "DATABASE_URL": database.url,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_PORT": str(port),
        }
        assert gateway_env["GATEWAY_HOST"] == "0.0.0.0"
        log = tmp_path / "gateway.log"
        with log.open("wb") as sink:
            serve = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *spec["gateway"]["command"][1:]],
                env=gateway_env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            healthcheck = spec["gateway"]["healthcheck"]["test"]
            assert healthcheck[0] == "CMD"
            deadline = time.monotonic() + 30
            while True:
                assert serve.poll() is None, log.read_text()
                probe = subprocess.run(healthcheck[1:], env=gateway_env, capture_output=True)
                if probe.returncode == 0:
                    break
                assert time.monotonic() < deadline, probe.stderr
                time.sleep(0.2)
            admin = {"authorization": f"Bearer {FILLED['GATEWAY_ADMIN_KEY']}"}
            created = httpx.post(
                f"http://127.0.0.1:{port}/admin/keys", json={"project": "p"}, headers=admin
            )
            assert created.status_code == 201
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(20)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
