"""The routing table without a models file (OPENAI_API_KEY, AZURE_OPENAI_*), the built-in echo
model and its switch, and the models-file keys of routing, with errors naming line and field."""

from __future__ import annotations

import pytest

from app.config import ConfigError, Settings, describe_routes, load_routing, parse_models_file
from tests.conftest import GatewayServer, migrate
from tests.test_config import run_cli

QUICK_ENV = {
    "GATEWAY_CONFIG": "",
    "OPENAI_API_KEY": "sk-quick-secret",
    "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
    "AZURE_OPENAI_API_KEY": "azure-quick-secret",
    "AZURE_OPENAI_DEPLOYMENTS": "gpt-4o-prod, o4-mini",
}


def test_quick_start_routes() -> None:
    settings = Settings(
        gateway_config=None,
        openai_api_key="sk-x",
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_api_key="k",
        azure_openai_deployments="gpt-4o-prod, o4-mini",
    )
    models = {model.name: model for model in load_routing(settings).models}
    assert list(models) == ["gpt-4o-prod", "o4-mini", "*", "echo"]
    assert models["*"].backend == "openai" and models["*"].is_rule
    assert models["o4-mini"].backend == "azure" and models["o4-mini"].azure_auth == "api_key"
    without_key = Settings(
        gateway_config=None,
        openai_api_key="",
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_deployments="d",
        gateway_echo_model="",
    )
    (only,) = load_routing(without_key).models
    assert only.azure_auth == "entra_id"


def test_check_config_prints_quick_start_table() -> None:
    result = run_cli("check-config", env=QUICK_ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("*") and "-> openai https://api.openai.com/v1" in line for line in lines
    )
    assert any(
        line.startswith("gpt-4o-prod") and "-> azure https://res.openai.azure.com" in line
        for line in lines
    )
    assert "sk-quick-secret" not in result.stdout and "azure-quick-secret" not in result.stdout


def test_models_file_wins_over_quick_start(tmp_path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - {name: echo, backend: responses, base_url: http://h/v1}\n")
    result = run_cli("check-config", env={**QUICK_ENV, "GATEWAY_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert "openai" not in result.stdout and "azure" not in result.stdout
    assert "echo  -> responses http://h/v1" in result.stdout  # the file's echo replaces ours


ROUTING = """\
models:
  - name: main
    backend: openai
    api_key: k
    aliases: [default, best]
    fallbacks: [local]
    max_retries: 3
    max_concurrency: 8
    queue_timeout: 5
    reasoning: true
  - name: local
    backend: responses
    base_url: http://127.0.0.1:8000/v1
  - name: ollama/*
    backend: chat_completions
    base_url: http://127.0.0.1:11434/v1
  - name: az
    backend: azure
    endpoint: https://res.openai.azure.com
    api_version: 2024-10-21
    api: chat_completions
    auth: entra_id
"""


def test_routing_keys_parse() -> None:
    models = parse_models_file(ROUTING, "m.yaml", env={}).models
    assert models[0].fallbacks == ["local"] and models[0].aliases == ["default", "best"]
    assert models[2].is_rule and models[3].api_version == "2024-10-21"
    table = "\n".join(describe_routes(parse_models_file(ROUTING, "m.yaml", env={})))
    assert "aliases=default,best fallbacks=local max_concurrency=8" in table
    assert "ollama/*" in table and "model=<rest of the name>" in table


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("fallbacks: [local]", "fallbacks: [nowhere]"), "line 6, field models[0].fallbacks[0]"),
        (("fallbacks: [local]", "fallbacks: [main]"), "field models[0].fallbacks[0]"),
        (("    endpoint: https://res.openai.azure.com\n", ""), "line 17, field models[3].endpoint"),
        (("aliases: [default, best]", "aliases: [local]"), "'local' appears more than once"),
        (("max_retries: 3", "max_retries: -1"), "line 7, field models[0].max_retries"),
        (("name: ollama/*", "name: ollama/*/x"), "line 14, field models[2].name"),
        (("auth: entra_id", "auth: api_key"), "line 17, field models[3].api_key"),
    ],
)
def test_routing_errors_name_line_and_field(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_models_file(ROUTING.replace(*change), "m.yaml", env={})
    assert expected in str(caught.value)


def test_azure_endpoint_without_deployments_warns(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """An endpoint alone routes nothing: `check-config` and `serve` both say what to set."""
    env = {**QUICK_ENV, "AZURE_OPENAI_DEPLOYMENTS": ""}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "azure" not in result.stdout
    assert "WARNING: AZURE_OPENAI_ENDPOINT is set but AZURE_OPENAI_DEPLOYMENTS is empty" in (
        result.stderr
    )
    assert "set AZURE_OPENAI_DEPLOYMENTS to the deployment names" in result.stderr
    assert "WARNING" not in run_cli("check-config", env=QUICK_ENV).stderr
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    migrate(url)
    settings = Settings(
        database_url=url,
        gateway_config=None,
        openai_api_key="",
        azure_openai_endpoint="https://res.openai.azure.com",
        azure_openai_deployments=" , ",
    )
    caplog.set_level("WARNING")
    server = GatewayServer(settings).start()
    server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("set AZURE_OPENAI_DEPLOYMENTS to the deployment names" in w for w in warnings)
