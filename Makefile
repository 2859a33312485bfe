# Two commands for a fresh machine:
#   make quick   set everything up, then run the quick preset (every table, 50 to 90 min on 2 cores)
#   make test    the whole test suite (lint, unit, workflow, Slurm), as CI runs it
#
# PyTorch: TORCH=torch==2.13.0 by default; on a CUDA machine e.g.
#   make setup TORCH="torch --index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CORES ?= all
BIN := $(VENV)/bin

.PHONY: setup quick paper test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[workflow,dev]'
	touch $@

quick: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/quick.yaml

paper: setup
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1

lint: setup
	$(BIN)/ruff check iwae tests
	$(BIN)/ruff format --check iwae tests
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m iwae bench

clean:
	rm -rf $(VENV) .snakemake .cache
