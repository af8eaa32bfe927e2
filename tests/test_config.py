"""The models file and the CLI: validation that names line and field, `${VAR}` expansion,
`check-config`, and `serve` refusing a database behind the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, Settings, parse_models_file
from tests.conftest import Database

GOOD = """\
models:
  - name: local-llama
    backend: chat_completions
    base_url: http://127.0.0.1:11434/v1/
    api_key: ${OLLAMA_KEY}
    upstream_model: llama3.2
    context_window: 131072
  - name: vllm
    backend: chat_completions
    base_url: http://127.0.0.1:8001/v1
    api_key: ${VLLM_KEY:-}
"""


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_parse_good_file() -> None:
    models = parse_models_file(GOOD, "models.yaml", env={"OLLAMA_KEY": "sk-ollama"})
    first, second = models.models
    assert first.api_key is not None and first.api_key.get_secret_value() == "sk-ollama"
    assert first.base_url == "http://127.0.0.1:11434/v1"  # trailing slash dropped
    assert first.target_model == "llama3.2" and second.target_model == "vllm"
    assert second.api_key is not None and second.api_key.get_secret_value() == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, "line 5, field models[0].api_key: environment variable OLLAMA_KEY is not set"),
        (
            "models:\n  - name: x\n    backend: chat_completion\n    base_url: http://h/v1\n",
            "line 3, field models[0].backend",
        ),
        (
            "models:\n  - name: x\n    backend: chat_completions\n",
            "line 2, field models[0].base_url",
        ),
        (
            "models:\n  - name: x\n    backend: chat_completions\n    base_url: h\n    tmeout: 3\n",
            "line 5, field models[0].tmeout: Extra inputs are not permitted",
        ),
        (
            "models:\n  - name: x\n    backend: chat_completions\n    base_url: ftp://h\n",
            "line 4, field models[0].base_url",
        ),
        ("models: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_errors_name_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_models_file(text, "models.yaml", env={})
    assert expected in str(caught.value)
    assert str(caught.value).startswith("models.yaml")


def test_duplicate_names_rejected() -> None:
    text = GOOD.replace("name: vllm", "name: local-llama")
    with pytest.raises(ConfigError, match="more than once"):
        parse_models_file(text, "m.yaml", env={"OLLAMA_KEY": "k"})


def test_empty_file_means_no_models() -> None:
    assert parse_models_file("", "m.yaml").models == []


def test_settings_accept_common_url_forms() -> None:
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+asyncpg://u@h/db"
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite+aiosqlite:///x.db"
    with pytest.raises(ValueError):
        Settings(database_url="mysql://h/db")


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "GATEWAY_CONFIG", "GATEWAY_HOST", "GATEWAY_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///./responses-gateway.db"
    assert (settings.gateway_host, settings.gateway_port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    assert Settings().gateway_port == 9001


def test_check_config_prints_routes_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(GOOD.replace("http://127.0.0.1:8001", "http://bob:hunter2@127.0.0.1:8001"))
    result = run_cli("check-config", env={"GATEWAY_CONFIG": str(path), "OLLAMA_KEY": "sk-x"})
    assert result.returncode == 0, result.stderr
    assert "local-llama" in result.stdout and "model=llama3.2" in result.stdout
    assert "sk-x" not in result.stdout and "hunter2" not in result.stdout


def test_check_config_reports_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: x\n    backend: nope\n    base_url: http://h\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "line 3, field models[0].backend" in result.stderr


QUIET = {"OPENAI_API_KEY": "", "AZURE_OPENAI_ENDPOINT": ""}


def test_check_config_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cli("check-config", env={"GATEWAY_CONFIG": "", **QUIET})
    assert result.returncode == 0
    assert "echo  -> echo (built in, no network)" in result.stdout  # on unless switched off
    result = run_cli("check-config", env={"GATEWAY_CONFIG": "", "GATEWAY_ECHO_MODEL": "", **QUIET})
    assert result.returncode == 0
    assert "EMPTY" in result.stdout


def test_serve_refuses_unmigrated_database(empty_database: Database, tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", "--database-url", empty_database.url, cwd=tmp_path)
    assert result.returncode == 1
    assert "responses-gateway migrate" in result.stderr


def test_serve_refuses_bad_models_file(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: x\n")
    result = run_cli("serve", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "line 2, field models[0].backend" in result.stderr


def test_hosted_tools_setting() -> None:
    drop = GOOD.replace(
        "    context_window: 131072\n", "    context_window: 131072\n    hosted_tools: drop\n"
    )
    first, second = parse_models_file(drop, "models.yaml", env={"OLLAMA_KEY": "k"}).models
    assert first.hosted_tools == "drop" and second.hosted_tools == "reject"
    with pytest.raises(ConfigError) as caught:
        parse_models_file(drop.replace("drop", "ignore"), "models.yaml", env={"OLLAMA_KEY": "k"})
    assert "line 8" in str(caught.value) and "hosted_tools" in str(caught.value)
