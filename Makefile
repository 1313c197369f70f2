# Two commands a newcomer needs: `make serve` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# `make serve EXTRAS=qwen ARGS="--engine qwen --qwen-base DIR"` serves Qwen3 (EXTRAS=qwen,cuda on a GPU host).
EXTRAS ?=
ARGS ?=

.PHONY: install serve test openapi bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.serve-installed$(EXTRAS): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".$(if $(EXTRAS),[$(EXTRAS)])"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[qwen,dev]"
	touch $@ $(VENV)/.serve-installed

# The Makima frontend's React hook, bundled by tests/sockets/test_makima_hook.py (npm registry only).
MAKIMA := tests/sockets/makima
$(MAKIMA)/node_modules/.installed: $(MAKIMA)/package-lock.json
	npm ci --prefix $(MAKIMA) --no-audit --no-fund --loglevel=error
	touch $@

# OpenAI's Node SDK, run unchanged by tests/voices/test_openai_workflow.py (npm registry only).
NODE_SDK := tests/voices/node
$(NODE_SDK)/node_modules/.installed: $(NODE_SDK)/package-lock.json
	npm ci --prefix $(NODE_SDK) --no-audit --no-fund --loglevel=error
	touch $@

# Install without serving, e.g. `make install EXTRAS=qwen` before `.venv/bin/speech-gateway random-model`.
install: $(VENV)/.serve-installed$(EXTRAS)

serve: $(VENV)/.serve-installed$(EXTRAS)
	$(BIN)/speech-gateway serve --host $(HOST) --port $(PORT) $(ARGS)

test: $(VENV)/.test-installed $(MAKIMA)/node_modules/.installed $(NODE_SDK)/node_modules/.installed
	$(BIN)/ruff check app engine tests bench
	$(BIN)/python -m pytest -q

openapi: $(VENV)/.serve-installed
	$(BIN)/python -m app.ops.openapi_export

bench: $(VENV)/.test-installed
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV)
