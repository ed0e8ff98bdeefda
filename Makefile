# Switchboard developer and CI targets. The services (Kafka, MariaDB) come from
# scripts/stack.sh (docs/stack.md); CI runs .ci/run, which runs `make test`.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# Targets like `test` list their steps as prerequisites in order; keep that order.
.NOTPARALLEL:

VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.switchboard-installed
STACK := scripts/stack.sh
DEMO  := scripts/demo.sh
# Python 3.11 (setup.cfg: python_requires >=3.11,<3.12): override with PYTHON=...
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11) \
                      $(shell command -v python3.11 2>/dev/null) python3.11)

.PHONY: help venv lock stack-up stack-down stack-wipe stack-status migrate topics \
        test test-unit test-faults lint demo demo-stop bench browser observability

help:
	@echo "make venv        create $(VENV) (python3.11) from requirements-dev.lock (exact pins)"
	@echo "make lock        re-pin requirements.lock / requirements-dev.lock from setup.cfg"
	@echo "make stack-up    install/start Kafka 127.0.0.1:9092 and MariaDB 127.0.0.1:3306"
	@echo "make stack-down  stop both;  make stack-wipe  stop and delete all their data"
	@echo "make migrate     switchboard migrate;  make topics  switchboard topics"
	@echo "make test        venv + stack-up + migrate + topics + browser + pytest (whole suite)"
	@echo "make browser     install Debian's chromium + chromium-driver (the page's browser test)"
	@echo "make test-unit   pytest tests/unit (no services needed)"
	@echo "make test-faults the fault suite alone (~12 min), figures into docs/reliability.md"
	@echo "make lint        ruff check + mypy"
	@echo "make demo        stack + ingress + worker in the background, an outage healed, a busy day;  make demo-stop"
	@echo "make bench       python -m bench"

# ------------------------------------------------------------------ virtualenv

venv: $(STAMP)

$(PY):
	@echo "==> creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
		|| { echo "make: need Python 3.11 (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-installs whenever setup.cfg, pyproject.toml or the lock is newer than the stamp.
# Exact versions from requirements-dev.lock (the image installs requirements.lock, the same
# runtime pins: docs/deploy.md), then the project itself without resolving anything.
$(STAMP): setup.cfg pyproject.toml requirements-dev.lock | $(PY)
	@echo "==> pip install -r requirements-dev.lock && pip install --no-deps -e ."
	$(PY) -m pip install --no-input -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --no-input -q --disable-pip-version-check --no-deps -e .
	@touch $@

# Re-pin every dependency (after editing setup.cfg): runtime first, dev constrained by it.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile setup.cfg --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" -q -o requirements.lock
	$(VENV)/bin/uv pip compile setup.cfg --extra dev --universal --python-version 3.11 \
		--generate-hashes --custom-compile-command "make lock" -q -c requirements.lock \
		-o requirements-dev.lock

# ------------------------------------------------------------------ services

stack-up:
	@$(STACK) up

stack-down:
	@$(STACK) down

stack-status:
	@$(STACK) status

# Demo processes first: wipe deletes var/, where their pid files live.
stack-wipe:
	@$(DEMO) stop
	@$(STACK) wipe

migrate: venv
	@echo "==> switchboard migrate"
	$(VENV)/bin/switchboard migrate

topics: venv
	@echo "==> switchboard topics"
	$(VENV)/bin/switchboard topics

# ------------------------------------------------------------------ checks

# pytest exit 5 means "no tests collected": that is a failure here, never a pass.
test: venv stack-up migrate topics browser observability
	@echo "==> pytest -q"
	@$(VENV)/bin/pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing"; exit 1; fi; \
	exit $$rc

# Debian's prometheus (and promtool), for the alert-rule and dashboard checks.
observability:
	@scripts/observability.sh install

# Debian's chromium and chromium-driver, for the dashboard page's browser test.
browser:
	@scripts/browser.sh install

test-unit: venv
	@$(VENV)/bin/pytest -q tests/unit; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-unit: pytest collected no tests (exit 5): failing"; exit 1; fi; \
	exit $$rc

# The fault suite (docs/reliability.md): `make test` runs it too; this runs only it, then
# writes its measured figures into docs/reliability.md. Brokers and databases it breaks are
# its own (scripts/stack.sh kafka-instance, kafka-cluster, mariadb-instance).
test-faults: venv stack-up migrate topics
	@$(VENV)/bin/pytest -q tests/faults; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-faults: pytest collected no tests (exit 5): failing"; exit 1; fi; \
	$(PY) -m tests.faults.report || rc=1; \
	exit $$rc

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# ------------------------------------------------------------------ demo and bench

demo: venv stack-up migrate topics
	@$(DEMO) start
	@$(DEMO) outage
	@$(DEMO) traffic

demo-stop:
	@$(DEMO) stop
	@$(STACK) down

bench: venv stack-up migrate topics
	@scripts/bench-tools.sh
	@if [ -f bench/__main__.py ]; then \
		$(PY) -m bench $(BENCH_ARGS); \
	else \
		echo "make bench: bench/__main__.py does not exist yet"; exit 1; \
	fi
