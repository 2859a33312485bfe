"""Helpers to run the real Snakemake workflow from the tests, in a scratch working directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def tool(name: str) -> str:
    """A command of the environment running the tests (a venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed beside {sys.executable} nor on PATH")
    return found


SNAKEMAKE = tool("snakemake")
SNAKEFMT = tool("snakefmt")


def snakemake(workdir: Path, *args, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake -s <repo>/Snakefile --directory <workdir> ...` as a user would run it."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), *map(str, args)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env={**os.environ, **(env or {})}
    )


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule -> number of jobs."""
    match = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", output, re.S)
    if not match:
        return {}
    return {name: int(n) for name, n in re.findall(r"^(\S+)\s+(\d+)\s*$", match.group(1), re.M)}


def overlay(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
