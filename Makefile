# The two commands of the README, plus helpers. Each target does its own set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
EVALS ?= evals

.PHONY: setup eval test test-fast lint bench

setup:
	@bash scripts/setup.sh

eval: setup  ## run the eval suites on the embedded model and write the HTML report
	$(PY) -m pytest $(EVALS) --model smollm2 $(ARGS)

test: setup  ## the whole test suite, slow tests included (what CI runs)
	$(PY) -m pytest tests -n 2 $(ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not slow" -n 2 $(ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m pytest bench -p no:randomly --benchmark-only --benchmark-autosave $(ARGS)
