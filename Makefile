# Shared by people, pre-commit and CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/pytest --durations=15

.DEFAULT_GOAL := help
.PHONY: help install images demo test test-unit test-integration test-world test-e2e bench lint fmt golden clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## .venv with mailstack (editable) and dev tools; a running Docker engine with compose v2
	@echo "mailstack installed in $(VENV): $$($(BIN)/mailstack --version)"
	@PYTHON=$(BIN)/python scripts/install-engine.sh

images: install  ## Build the service images (and, without a registry, the Debian 13 base image)
	$(BIN)/mailstack images build --bootstrap-base

DEMO := examples/demo.yaml -o build/demo --state .mailstack/demo

demo: images  ## Bring the demo site up on 127.0.0.1, send a mail and read it back
	$(BIN)/mailstack up $(DEMO)
	$(BIN)/mailstack probe $(DEMO) --user alice@example.test --password alice-demo-password

test: lint images  ## Lint, then every test layer: unit, then integration, world and e2e side by side
	$(PYTEST) -m unit
	scripts/test-parallel.sh $(PYTEST)

test-unit: install  ## Unit tests only (models, rendering, CLI)
	$(PYTEST) -m unit

test-integration: images  ## Integration tests against the stack in Docker
	$(PYTEST) -m integration

test-world: images  ## The test world: a signed DNS, sites that reach each other, a forger
	$(PYTEST) -m world

test-e2e: images  ## Ansible against a server container
	$(PYTEST) -m e2e

bench: images  ## Benchmarks (not in `make test`): delivery with and without the milter, IMAP, memory, load, fuzz
	$(BIN)/python bench/suite.py $(BENCH_ARGS)

lint: install  ## ruff, mypy (strict), import-linter (layers), yamllint, ansible-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/yamllint --strict .
	@if [ -f playbooks/site.yml ]; then $(BIN)/ansible-lint --profile production playbooks/; fi

fmt: install  ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

golden: install  ## Rewrite tests/golden from the templates (review the diff!)
	$(BIN)/pytest -q tests/unit/test_golden.py --update-golden

clean:  ## Remove the venv, caches and rendered output (never state)
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
