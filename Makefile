# ProRL Studio. Two commands matter (README.md): `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup system up test test-fast bench demo clean

# Python environment: torch first, from the CPU wheel on disk (any other torch pulls gigabytes).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# System packages: bubblewrap sandboxes model-written code; Debian's Chromium runs the browser tests.
system:
	@bash scripts/install_system.sh

up: setup system
	$(PY) -m studio.up

test: setup system
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not browser"

bench: setup
	$(PY) bench/engine_step.py
	$(PY) bench/studio_live.py

demo: setup
	$(VENV)/bin/prorl --threads 2 train prorl_engine/configs/demo.yaml --out runs/demo

clean:
	rm -rf $(VENV) runs var
