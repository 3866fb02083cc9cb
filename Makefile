# The two README commands: `make run` (set up, then the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run twin experiment test test-all lint bench clean
.PHONY: live-deps bench-live
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

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

test: $(STAMP) live-deps
	$(PY) -m pytest -n 2

test-all: $(STAMP) live-deps
	$(PY) -m pytest -n 2 -m ""

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/twin_speed.py

# HAProxy (Debian package) fronts the live fleet; installed when missing.
live-deps:
	command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || \
		($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q haproxy)

bench-live: $(STAMP) live-deps
	$(PY) benchmarks/live_healing.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache outputs multirun
