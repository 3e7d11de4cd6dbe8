# Two commands on a fresh machine: `make pipeline` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Telemetry that fails offline, silenced for every tool the project starts.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup pipeline test lint bench ui readme-picture clean-venv

## setup: create .venv with the pinned environment (idempotent: reinstalls only when a pin changes)
setup: $(STAMP)
	@$(PY) -m faceswap.cli weights >/dev/null

$(STAMP): requirements/lock.txt requirements/no-deps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip==25.3
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## pipeline: the whole pipeline on the bundled demo data (CPU is enough): DVC's stages through the Prefect flow,
## the train matrix side by side (params flow.workers / flow.threads_per_run; docs/orchestration.md)
pipeline: setup
	$(PY) -m pipelines.flow

## test: lint, then the whole test suite (slow integration tests included)
test: setup lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench pipelines

## bench: CPU benchmarks; each prints a table and writes JSON under bench/results/
bench: setup
	$(PY) bench/model.py
	$(PY) bench/data.py
	$(PY) bench/train.py
	$(PY) bench/serve.py

## ui: the MLflow UI on the project's own store (sqlite:///mlflow.db, mlruns/), on http://127.0.0.1:5000
ui: $(STAMP)
	$(PY) -m faceswap.cli ui

## readme-picture: the registered champion's preview grid from the last `make pipeline` → docs/img/demo-preview.png
readme-picture: $(STAMP)
	@mkdir -p docs/img
	$(PY) -c "import json, shutil; from faceswap.config import load_params; w = load_params().paths; \
	v = json.load(open(w.register_record))['variant']; \
	shutil.copyfile(w.pictures_dir(v) / 'preview.png', 'docs/img/demo-preview.png'); print('docs/img/demo-preview.png ←', v)"

clean-venv:
	rm -rf $(VENV)
