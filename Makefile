# Two commands do all the set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
UV_VERSION := 0.13.9
PORT ?= 3003
DEMO ?= 0
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit bench lint typecheck migrate services clean lock audit image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# Compiled once here: where PYTHONDONTWRITEBYTECODE is set (as on our 2-core machine), every
# process would otherwise compile every module it imports, about 6 s of CPU each (a replay's
# parts, test workers, the service's start).
$(STAMP): $(BIN)/python requirements-dev.lock pyproject.toml Makefile
	$(UV) pip sync -q --compile-bytecode --python $(BIN)/python requirements-dev.lock
	$(UV) pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)
	@$(BIN)/python -m compileall -q src

migrate: install
	$(BIN)/vpp-aggregator migrate

run: install
	$(BIN)/vpp-aggregator migrate
	PORT=$(PORT) $(BIN)/vpp-aggregator serve $(if $(filter 1 true yes,$(DEMO)),--demo,)

services:
	@bash scripts/ensure_services.sh

test: install services
	$(BIN)/ruff check src tests benchmarks devservices
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile

# The fast tier: domain, services and the API on SQLite, in-process; starts no server.
test-unit: install
	$(BIN)/pytest -n 2 --dist load -m unit

bench: install
	$(BIN)/python -m benchmarks --output BENCHMARKS.md $(if $(ONLY),--only $(ONLY))

# The container image: wheels fetched and hash-checked outside the build, then an offline build
# (see the Dockerfile). IMAGE names the tag; BASE_IMAGE the base (default in the Dockerfile).
IMAGE ?= vpp-aggregator:latest
image: install
	bash scripts/wheelhouse.sh
	DOCKER_BUILDKIT=0 docker build --network none -t $(IMAGE) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) .

# Known-vulnerable pins, offline against security/advisories.json (make test runs it too).
audit: install
	$(BIN)/python scripts/audit_deps.py requirements.lock requirements-dev.lock

lint: install
	$(BIN)/ruff check src tests benchmarks devservices
	$(BIN)/ruff format --check src tests benchmarks devservices

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var/*.db .pytest_cache .mypy_cache .ruff_cache build

# Re-pin after changing dependencies in pyproject.toml (runtime lock for the image, dev lock for make).
lock: $(BIN)/python
	$(UV) pip compile -q pyproject.toml --generate-hashes --python-version 3.11 -o requirements.lock
	$(UV) pip compile -q pyproject.toml --extra dev -c requirements.lock --generate-hashes --python-version 3.11 -o requirements-dev.lock
