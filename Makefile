# responses-gateway — `make run` serves, `make test` tests. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= $(or $(GATEWAY_HOST),127.0.0.1)
PORT   ?= $(or $(GATEWAY_PORT),8000)

.DEFAULT_GOAL := help
.PHONY: help run test lint format migrate check-config bench bench-compare bench-smoke bench-depth bench-websocket codex node-clients compliance clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.stamp-run

run: $(VENV)/.stamp-run ## set up, migrate and serve on $(HOST):$(PORT) (SQLite unless DATABASE_URL is set)
	$(BIN)/responses-gateway migrate
	$(BIN)/responses-gateway serve --host $(HOST) --port $(PORT)

test: $(VENV)/.stamp-test ## set up and run the whole suite (Postgres half skipped loudly if none answers)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.stamp-test ## ruff format check, ruff lint, mypy --strict
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/mypy app

format: $(VENV)/.stamp-test ## apply ruff formatting and safe fixes
	$(BIN)/ruff format app tests bench migrations
	$(BIN)/ruff check --fix app tests bench migrations

CODEX_VERSION ?= 0.171.0
codex: ## install Codex CLI (npm @openai/codex) into .codex-test/ for tests/test_codex.py
	npm install --no-audit --no-fund --prefix .codex-test @openai/codex@$(CODEX_VERSION)

node-clients: ## install the Node clients (openai, @openai/agents) into tests/node/ for tests/test_node_clients.py
	npm ci --no-audit --no-fund --prefix tests/node

migrate: $(VENV)/.stamp-run ## bring DATABASE_URL's schema to head
	$(BIN)/responses-gateway migrate

check-config: $(VENV)/.stamp-run ## validate GATEWAY_CONFIG and print the routing table
	$(BIN)/responses-gateway check-config

# A checkout of the Open Responses repository, which holds the compliance suite (not vendored).
OPEN_RESPONSES_DIR ?= .compliance/openresponses
compliance: $(VENV)/.stamp-test ## run the Open Responses compliance suite (bun) against a gateway of its own
	@test -d $(OPEN_RESPONSES_DIR) || git clone --depth 1 https://github.com/openresponses/openresponses $(OPEN_RESPONSES_DIR)
	@test -d $(OPEN_RESPONSES_DIR)/node_modules || npm install --no-audit --no-fund --prefix $(OPEN_RESPONSES_DIR)
	@test -x $(OPEN_RESPONSES_DIR)/node_modules/.bin/bun || command -v bun >/dev/null || npm install --no-audit --no-fund --no-save --prefix $(OPEN_RESPONSES_DIR) bun
	$(BIN)/python tests/open_responses_suite.py --suite $(OPEN_RESPONSES_DIR)

bench: $(VENV)/.stamp-test ## overhead benchmark on Postgres: issue-8 table for our gateway (~4 min)
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)

bench-compare: $(VENV)/.stamp-test ## the same, plus LiteLLM (own venv in /tmp) and the bare floor (~10 min)
	$(BIN)/python bench/overhead.py --compare $(BENCH_ARGS)

bench-smoke: $(VENV)/.stamp-test ## tiny-load runs of the benchmarks (CI: they run and report)
	$(BIN)/python bench/overhead.py --smoke
	$(BIN)/python bench/websocket.py --smoke

bench-websocket: $(VENV)/.stamp-test ## WebSocket mode against HTTP streaming: chains of turns at c=1 (~1 min)
	$(BIN)/python bench/websocket.py $(BENCH_ARGS)

bench-depth: $(VENV)/.stamp-test ## time turn N of a previous_response_id chain (N=1,10,100,1000) on Postgres
	$(BIN)/python bench/context_depth.py

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .codex-test
