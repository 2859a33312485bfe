"""Shared fixtures. Real data comes through the project's own downloader, from the mirror in
$IWAE_DATA_MIRROR (CI points it at a verified copy) or else from the public URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iwae import datasets, sources

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/reference.py

# the suite runs on 2 CPU cores; keep PyTorch from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mirror() -> str | None:
    return sources.mirror_from_env()


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory, mirror) -> Path:
    """Verified raw files of the datasets used in the tests."""
    dest = tmp_path_factory.mktemp("resources")
    for name in ("mnist", "mnist-fixed", "omniglot-resized"):
        sources.fetch(name, dest, mirror, quiet=True)
    return dest


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
