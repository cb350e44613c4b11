# Two commands on a fresh machine with Python 3.11+, PostgreSQL and Redis:
#   make run    install what is missing, create and migrate the database, serve API + worker
#   make test   run the whole test suite
# `make help` lists the rest.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else where its installer (or pip --user) puts it.
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen

.PHONY: help install run serve worker migrate superuser seed test lint fmt bench load bench-jobs bench-cache bench-realtime bench-upload bench-pooler crash-trials fuzz clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(UV):
	@echo "uv not found: installing it into $(HOME)/.local/bin"
	@installer=$$(mktemp); \
	if curl -LsSf https://astral.sh/uv/install.sh -o "$$installer" 2>/dev/null; then \
		UV_INSTALL_DIR="$(HOME)/.local/bin" UV_NO_MODIFY_PATH=1 sh "$$installer"; \
	else \
		echo "astral.sh unreachable: installing uv from PyPI with pip"; \
		python3 -m pip install --user --quiet uv; \
	fi; rm -f "$$installer"
	@test -x "$(UV)" || { echo "could not install uv; see https://docs.astral.sh/uv/" >&2; exit 1; }

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen
	@touch $@

install: .venv/.synced ## install uv if missing, then the locked dependencies

run: install ## check services, create + migrate the database, serve API and worker on :8000
	$(RUN) app run

serve: install ## serve only the API, reloading on code changes
	$(RUN) app serve --reload

worker: install ## run only the ARQ worker
	$(RUN) app worker

migrate: install ## create the database if needed and apply every migration
	$(RUN) app migrate

superuser: install ## create (or promote) an admin, from FIRST_SUPERUSER_* or prompts
	$(RUN) app create-superuser

seed: install ## add demo users with items (make seed USERS=1000 ITEMS=20)
	$(RUN) app seed --users $(or $(USERS),10) --items $(or $(ITEMS),20)

test: install ## run the whole test suite against the real PostgreSQL and Redis
	@bash .ci/components
	$(RUN) pytest

lint: install ## ruff (lint + format check) and mypy --strict
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

fmt: install ## format and autofix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: install ## wrk against the API and reference handlers R1/R2: one table (needs wrk)
	$(RUN) python -m bench.http

load: install ## locust, headless (make load USERS=50 DURATION=60; KNEE=1 finds the knee)
	$(UV) run --frozen --group load python -m bench.load --users $(or $(USERS),50) \
		--seconds $(or $(DURATION),60) $(if $(KNEE),--knee)

bench-pooler: install ## GET /items/{id} straight to PostgreSQL and through PgBouncer (needs wrk, pgbouncer)
	$(RUN) python -m bench.pooler

bench-jobs: install ## no-op job throughput and enqueue-to-start latency (database app_bench)
	$(RUN) python -m bench.jobs

bench-cache: install ## GET /items/{id} under wrk with the Redis item cache on and off
	$(RUN) python -m bench.cache

bench-realtime: install ## 1,000 WebSocket clients: memory per connection, event latency
	$(RUN) python -m bench.realtime

bench-upload: install ## a 200 MB upload: API memory and throughput against cp
	$(RUN) python -m bench.upload

crash-trials: install ## SIGKILL a worker mid-export 20 times; each job must still complete once
	$(RUN) python -m bench.worker_crash --trials 20

fuzz: install ## Schemathesis: 100 examples per operation (FUZZ_EXAMPLES), fixed seed (FUZZ_SEED)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(RUN) pytest tests/test_fuzz.py -p no:cacheprovider

clean: ## remove the virtualenv and caches
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
