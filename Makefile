# peftbook: two commands do all the set-up on a fresh machine with Python 3.10+.
#   make run   - create .venv if missing, install, run the course on the embedded tiny model
#                (make run SMOKE=1: the same with quick parameters)
#   make test  - create/update .venv the same way, run the whole test suite
# Both are idempotent: the install step re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.peftbook-installed
OUT ?= outputs/run
SMOKE ?=
PYTEST_ARGS ?=

.PHONY: run test install render clean-venv

install: $(STAMP)

# torch is installed first, pinned, so pip takes the CPU build on a CPU machine (the one on this
# machine's disk) and never a multi-GB CUDA build; a GPU machine gets the CUDA build of 2.13.0.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# `make run SMOKE=1`: every notebook with its quick smoke parameters (a few minutes)
run: install
	$(PY) -m peftbook run --out $(OUT) $(if $(SMOKE),--smoke,)

test: install
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -q $(PYTEST_ARGS)

render: install
	$(PY) -m peftbook notebooks --render

clean-venv:
	rm -rf $(VENV)
