# The two README commands: `make run` (set up, then the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run twin experiment test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.run

experiment: run

twin: $(STAMP)
	$(PY) -m sim run --scenario mixed --hosts 100 --hours 24 --seed 0

test: $(STAMP)
	$(PY) -m pytest -n 2

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -m ""

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/twin_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache outputs multirun
