# xlam-hpc developer entry points. Two commands set everything up on a fresh machine:
#   make demo   - venv + install + the main job on bundled sample data (local executor, tiny model)
#   make test   - venv + install + test services (Slurm cluster, buildah when root) + pytest
# Every pip install uses constraints.txt (the one pin file, also used by the Dockerfile and CI).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints.txt
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# DeepSpeed compiles a small op on first use; keep it across runs.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: help install bfcl-data demo test test-fast lint format schema bench lock cluster-up cluster-down image clean

help:
	@echo "make demo        run convert → shard → train on the bundled samples (local executor)"
	@echo "make test        install, start test services, run the whole test suite"
	@echo "make test-fast   unit tests only (no Slurm, no containers, no multi-process training)"
	@echo "make lint        ruff check + format check"
	@echo "make schema      regenerate docs/schema/*.json from the code"
	@echo "make bench       run the benchmarks in bench/ (JSON to stdout)"
	@echo "make cluster-up  start the 2-node Slurm test cluster on loopback (root)"
	@echo "make image       build the container image with buildah"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins or the package metadata change.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) setuptools
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# BFCL benchmark data (the bfcl-eval wheel at its constraints.txt pin; read as a zip, never installed)
BFCL_VERSION := $(shell sed -n 's/^bfcl-eval==//p' $(CONSTRAINTS))
BFCL_WHEEL := .cache/bfcl/bfcl_eval-$(BFCL_VERSION)-py3-none-any.whl

bfcl-data: $(BFCL_WHEEL)

$(BFCL_WHEEL): | $(BIN)/python
	$(PIP) download -q --no-deps -d $(@D) bfcl-eval==$(BFCL_VERSION)

demo: install
	$(BIN)/xlam-hpc demo --output-dir $(DEMO_DIR)

test: install bfcl-data
	.ci/test-services.sh up
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; set -e; \
	.ci/test-services.sh down; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

test-fast: install bfcl-data
	$(BIN)/python -m pytest -m "not slow and not slurm and not container" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check xlam_hpc tests bench
	$(BIN)/ruff format --check xlam_hpc tests bench

format: install
	$(BIN)/ruff format xlam_hpc tests bench
	$(BIN)/ruff check --fix xlam_hpc tests bench

schema: install
	$(BIN)/xlam-hpc schema trajectory > docs/schema/trajectory.schema.json
	$(BIN)/xlam-hpc schema preference > docs/schema/preference.schema.json

bench: install
	@for b in bench/*.py; do echo "== $$b" >&2; $(BIN)/python $$b; done

lock: $(BIN)/python
	# bfcl-eval is downloaded as data, never installed: carry its pin over
	{ $(PIP) freeze --exclude-editable | sed 's/+cpu$$//'; grep '^bfcl-eval==' $(CONSTRAINTS); } | sort -f > $(CONSTRAINTS).new
	@echo "wrote $(CONSTRAINTS).new; review and move it over $(CONSTRAINTS)"

cluster-up:
	slurm/local-cluster.sh up

cluster-down:
	slurm/local-cluster.sh down

image:
	.ci/image.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info
