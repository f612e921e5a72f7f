# tunefleet: `make demo` runs a real study on this machine; `make test` runs the test suite.
# Both create the virtual environment .venv first (Python >= 3.11 and make are all you need).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= .tunefleet-demo
# torch is installed first, pinned: on a machine with NVIDIA GPUs pip takes the CUDA build from
# PyPI; where a local CPU build of this release is provided, pip takes that one.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast lint proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	TUNEFLEET_HOME=$(CURDIR)/$(DEMO_DIR)/home $(VENV)/bin/tunefleet init $(DEMO_DIR)/study
	TUNEFLEET_HOME=$(CURDIR)/$(DEMO_DIR)/home $(VENV)/bin/tunefleet run $(DEMO_DIR)/study/study.toml --local 2

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

proto: $(STAMP)
	PYTHON=$(CURDIR)/$(PY) scripts/gen_proto.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
