"""Shared fixtures. Real data comes through the project's own downloader, from the mirror in
$IWAE_DATA_MIRROR (CI points it at a verified copy) or else from the public URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwae.data import catalogue, datasets, sources

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' helpers: workflow.py, slurm.py

# the suite runs on 2 CPU cores; keep PyTorch from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mirror() -> str | None:
    return sources.mirror_from_env()


TEST_DATA = ROOT / ".cache" / "test-data"  # kept between runs; laid out like a mirror


@pytest.fixture(scope="session")
def raw_dir(mirror) -> Path:
    """Verified raw files of the datasets the tests use, fetched once into a cache that the
    workflow tests then use as their mirror."""
    for name in ("mnist", "mnist-fixed", "omniglot-resized", "freyface"):
        catalogue.fetch(name, TEST_DATA, mirror, quiet=True)
    return TEST_DATA


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, raw_dir) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("data")
    paths = {}
    for name in ("mnist", "mnist-fixed", "omniglot-resized"):
        paths[name] = out / f"{name}.npz"
        datasets.prepare(name, raw_dir, paths[name])
    return paths


def run_cli(*args, env=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """`python -m iwae ...` in a subprocess, as the workflow calls it."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "iwae", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )
