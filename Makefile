# Two commands for a fresh machine:
#   make quick   set everything up, then run the quick preset (every table, 50 to 90 min on 2 cores)
#   make test    the whole test suite (lint, unit, workflow, Slurm), as CI runs it
#
# Installs come from a lock file, every package pinned with its hashes (README, "Installing"):
# requirements/cpu.txt by default (PyTorch's CPU build), on a CUDA machine
#   make setup LOCK=requirements/cuda.txt
# `make lock` regenerates both locks from pyproject.toml and requirements/*.in (needs uv).

PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements/cpu.txt
# where pip and uv find torch's CPU build, which PyPI lacks: pip's own find-links where set,
# else PyTorch's CPU index
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/)
UV ?= uv
CORES ?= all
BIN := $(VENV)/bin
FIND_TORCH := $(if $(findstring cpu,$(LOCK)),--find-links $(TORCH_WHEELS))
COMPILE := $(UV) pip compile pyproject.toml --extra workflow --extra dev --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --generate-hashes --custom-compile-command 'make lock'

.PHONY: setup lock quick paper test lint bench clean

setup: $(VENV)/.installed

# the lock holds every package, the build backend included, so the package installs without
# resolving anything (--no-deps) and builds with the locked setuptools (--no-build-isolation)
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes $(FIND_TORCH) -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# keeps the locked versions that still satisfy pyproject.toml; UPGRADE=--upgrade moves them all
lock:
	$(COMPILE) $(UPGRADE) requirements/cpu.in --find-links $(TORCH_WHEELS) -o requirements/cpu.txt
	$(COMPILE) $(UPGRADE) requirements/cuda.in -o requirements/cuda.txt

quick: setup
	$(BIN)/snakemake --cores $(CORES) --configfile presets/quick.yaml

paper: setup
	$(BIN)/snakemake --cores $(CORES) --resources gpu=1

lint: setup
	$(BIN)/ruff check iwae tests
	$(BIN)/ruff format --check iwae tests
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

# the slowest tests listed at the end: where the suite's time goes (CI must stay under 30 min)
test: lint
	$(BIN)/python -m pytest --durations=15

bench: setup
	$(BIN)/python -m iwae bench

clean:
	rm -rf $(VENV) .snakemake .cache
