"""The smoke preset through profiles/slurm on a real single-node Slurm with a fake GPU.

Skipped where Slurm cannot be started (not root, slurm-wlm or munge missing), unless
IWAE_REQUIRE_SLURM=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import csv
import os
import subprocess

import pytest

import slurm
from conftest import ROOT
from workflow import SNAKEMAKE, overlay

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    why = slurm.missing_requirements()
    if why:
        if os.environ.get("IWAE_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required but unavailable: {why}")
        pytest.skip(f"Slurm unavailable: {why}")
    c = slurm.Cluster(gpus=2).start()
    yield c
    c.stop()


def test_smoke_preset_through_slurm_profile(cluster, tmp_path, raw_dir):
    work = tmp_path / "work"
    work.mkdir()
    fake_gpu = overlay(tmp_path / "gpu.yaml", "compute:\n  gpus_per_job: 1\n")
    cmd = [
        "timeout", "-k", "30", "1200",  # snakemake waits for running jobs on SIGTERM
        SNAKEMAKE, "-s", ROOT / "Snakefile", "--directory", work,
        "--workflow-profile", ROOT / "profiles/slurm",
        "--configfile", ROOT / "presets/smoke.yaml", fake_gpu,
        "--slurm-status-command", "squeue",  # no slurmdbd here: sacct cannot answer
        "--slurm-init-seconds-before-status-checks", "2",
        "--jobs", "8",
    ]  # fmt: skip
    result = subprocess.run(
        list(map(str, cmd)),
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, **cluster.env, "IWAE_DATA_MIRROR": str(raw_dir)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    with open(work / "results/tables/summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 24
    assert (work / "results/report.tex").exists() and (work / "results/tables/table1.md").exists()
    jobs = cluster.jobs()
    assert len(jobs) >= 24 + 24, jobs  # every rule ran as a Slurm job
    assert all(j["state"] == "COMPLETED" for j in jobs), [j for j in jobs if j["state"] != "COMPLETED"]
    gpu_jobs = [j for j in jobs if "gpu" in j["tres"]]
    assert len(gpu_jobs) >= 48, jobs  # training and evaluation asked for a GPU
