# StreamSpace developer entry points.
#
#   make run     install what is missing, then start the platform (streamspace up)
#   make test    install what is missing, lint, then run the test suite
#   make lint    ruff check + ruff format --check + mypy
#   make format  apply ruff fixes and formatting
#   make bench   run the benchmarks (bench/commands.py)
#   make clean   remove build/test/tool caches (keeps .venv)
#
# Extra pytest arguments: make test PYTEST_ARGS="tests/integration -k redis"

SHELL := /bin/bash
VENV := .venv
PYTEST_ARGS ?=
LINT_PATHS := src tests bench

# Which dependency set to install; `test` switches it for itself and its prerequisites.
DEPS_MODE := run
test: DEPS_MODE := test

.PHONY: run test lint format bench clean deps dirs

run: deps
	$(VENV)/bin/streamspace up

deps:
	@bash scripts/install-deps.sh $(DEPS_MODE)

# Empty directories are not tracked by git; the linters need them to exist.
dirs:
	@mkdir -p bench tests

test: deps lint
	@mkdir -p test-output
	$(VENV)/bin/pytest -q -rs -p no:cacheprovider -n auto --dist loadfile --junitxml=test-output/junit.xml $(PYTEST_ARGS)

lint: deps dirs
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: deps dirs
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

bench: deps
	$(VENV)/bin/python -m bench.commands

clean:
	rm -rf test-output build dist .mypy_cache .ruff_cache .pytest_cache
	find . -path ./.venv -prune -o -path ./node_modules -prune -o \
		-type d -name __pycache__ -exec rm -rf {} +
