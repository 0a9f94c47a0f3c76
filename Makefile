# The front door: every target here is one line of `make help` and one step of the README.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: help up down status logs sink-logs send demo restart-worker stop-worker start-worker \
        add-worker kafka-fetch mailpit-fetch chromium kafka-up kafka-down topics groups lint format test unit-tests \
        integration-tests e2e-tests contract-tests browser-tests screenshot chaos bench clean lock

help: ## Show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Exactly the versions in requirements.lock, hash-checked; then the project itself with
# --no-index, so what pyproject.toml asks for must already be there: a lock that no longer
# matches it fails here, and nothing the tests did not run with is fetched instead.
$(INSTALLED): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11 or newer is needed, and $(PYTHON) is " + sys.version.split()[0] + ". Install it (Debian/Ubuntu: sudo apt-get install python3; macOS: brew install python@3.12) or run make PYTHON=/path/to/python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the project into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-index --no-build-isolation -e '.[dev]' \
		|| { echo "error: the project does not install from requirements.lock alone (pip says why above). If pyproject.toml's dependencies changed, run make lock" >&2; exit 1; }
	@touch $@

# uv, in a throwaway venv, resolves once for Linux and macOS, CPython 3.11 and newer, with every
# file's hash, and keeps the lock's pins that pyproject.toml still allows. The lock also pins the
# build backend and what it asks for to build the editable install, since `make` fetches neither.
lock: ## Regenerate requirements.lock from pyproject.toml (after changing a dependency; delete it first to upgrade all)
	@tool=$$(mktemp -d) && trap 'rm -rf "$$tool"' EXIT \
		&& $(PYTHON) -m venv "$$tool" \
		&& $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' >"$$tool/build.in" \
		&& "$$tool/bin/pip" install --quiet --disable-pip-version-check uv==0.13.8 -r "$$tool/build.in" \
		&& "$$tool/bin/python" -c 'import importlib, tomllib; backend = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["build-backend"]; print(*importlib.import_module(backend).get_requires_for_build_editable(), sep="\n")' >>"$$tool/build.in" \
		&& "$$tool/bin/uv" pip compile --quiet pyproject.toml - --extra dev --universal --python-version 3.11 \
			--generate-hashes --custom-compile-command 'make lock' --output-file requirements.lock <"$$tool/build.in"
	@echo "Wrote requirements.lock: commit it with pyproject.toml"

up: $(INSTALLED) ## Start the whole stack in the background and say what runs where (BROKERS=3: a 3-node Kafka cluster)
	@$(if $(BROKERS),KAFKA_BROKERS=$(BROKERS) )$(PY) -m deploy.local up

down: $(INSTALLED) ## Stop everything `make up` started (one broker or all three)
	@$(PY) -m deploy.local down

status: $(INSTALLED) ## Say what is running
	@$(PY) -m deploy.local status

logs: $(INSTALLED) ## Follow every service's log (Ctrl+C to stop)
	@$(PY) -m deploy.local logs

sink-logs: $(INSTALLED) ## Watch the mail arrive: follow the SMTP sink's output
	@$(PY) -m deploy.local logs smtp_sink

send: $(INSTALLED) ## Send an email through the API (TO=addr SUBJECT=text COUNT=n)
	@$(PY) -m deploy.local send $(if $(TO),--to "$(TO)") $(if $(SUBJECT),--subject "$(SUBJECT)") $(if $(COUNT),--count "$(COUNT)")

demo: $(INSTALLED) ## The seed's story, scripted and narrated against the running stack
	@$(PY) -m deploy.local demo

restart-worker: $(INSTALLED) ## Stop and start the worker: it resumes at the committed offset
	@$(PY) -m deploy.local restart worker

stop-worker: $(INSTALLED) ## Stop the worker (cleanly: finish, commit, leave the group)
	@$(PY) -m deploy.local stop worker

start-worker: $(INSTALLED) ## Start the worker
	@$(PY) -m deploy.local start worker

add-worker: $(INSTALLED) ## Start one more worker in email-send-group: the partitions are split
	@$(PY) -m deploy.local add-worker

kafka-fetch: $(INSTALLED) ## Fetch the Apache Kafka jars from Maven Central once (no network after)
	@$(PY) -m deploy.local fetch-kafka

mailpit-fetch: $(INSTALLED) ## Build Mailpit (the reference SMTP sink) from the Go module proxy, once
	@$(PY) -m deploy.local fetch-mailpit

chromium: $(INSTALLED) ## Install Debian's Chromium for the browser tests, if it is missing
	@$(PY) -m deploy.local chromium

kafka-up: $(INSTALLED) ## Start only Kafka: one broker (BROKERS=3: a 3-node cluster)
	@$(if $(BROKERS),KAFKA_BROKERS=$(BROKERS) )$(PY) -m deploy.local kafka-up

kafka-down: $(INSTALLED) ## Stop only Kafka (the broker, or every node of the cluster)
	@$(PY) -m deploy.local kafka-down

topics: $(INSTALLED) ## Create email.send and email.send.dlq if missing; show each partition's leader, replicas, ISR
	@$(PY) -m deploy.local topics && $(PY) -m deploy.local describe-topics

groups: $(INSTALLED) ## Describe email-send-group with Kafka's own kafka-consumer-groups.sh
	@$(PY) -m deploy.local groups

lint: $(INSTALLED) ## Check types (mypy) and style (ruff)
	@$(PY) -m mypy
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

format: $(INSTALLED) ## Format the code and fix what ruff can fix
	@$(PY) -m ruff check --fix .
	@$(PY) -m ruff format .

test: $(INSTALLED) kafka-fetch mailpit-fetch chromium ## Run every test (starts a private Kafka broker, never the `make up` one)
	@$(PY) -m pytest

unit-tests: $(INSTALLED) ## Run the unit tests only (no broker)
	@$(PY) -m pytest tests/unit

integration-tests: $(INSTALLED) kafka-fetch ## Run the integration tests (real Kafka, real sink)
	@$(PY) -m pytest tests/integration

e2e-tests: $(INSTALLED) kafka-fetch ## Run the end-to-end tests (the stack as processes)
	@$(PY) -m pytest tests/e2e

contract-tests: $(INSTALLED) mailpit-fetch ## Run the sink against Mailpit's contract, a real Mailpit and its npm client
	@$(PY) -m pytest tests/contract

browser-tests: $(INSTALLED) kafka-fetch chromium ## Run the browser tests (Chromium drives the console and the inbox)
	@$(PY) -m pytest tests/browser

screenshot: $(INSTALLED) kafka-fetch chromium ## Write a PNG of the console after a short scripted run
	@$(PY) -m tests.browser.screenshot

chaos: $(INSTALLED) kafka-fetch ## Prove the guarantees under restarts, kills and outages (full counts; ~23 min)
	@$(PY) -m tests.chaos

bench: $(INSTALLED) kafka-fetch mailpit-fetch chromium ## Measure every stage's speed side by side on a private stack (~16 min)
	@$(PY) -m tests.bench

clean: $(INSTALLED) ## Stop everything and delete the run directory (Kafka's data and the logs)
	@$(PY) -m deploy.local clean
