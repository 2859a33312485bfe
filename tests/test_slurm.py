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
    c = slurm.Cluster(gpus=4, cpus=8).start()
    yield c
    c.stop()


def test_smoke_preset_through_slurm_profile(cluster, tmp_path, raw_dir):
    work = tmp_path / "work"
    work.mkdir()
    # Table 1's one-layer MNIST runs and the two-stage runs that continue two of them: every
    # rule, and cross-job dependencies; the other cells and experiments add only more of the
    # same jobs (they run in test_workflow)
    overrides = overlay(
        tmp_path / "slurm.yaml",
        "run_experiments: [table1, table2]\nexperiments:\n  table1:\n    datasets: [mnist]\n    layers: [1]\ncompute:\n  gpus_per_job: 1\n",
    )
    cmd = [
        "timeout", "-k", "30", "1200",  # snakemake waits for running jobs on SIGTERM
        SNAKEMAKE, "-s", ROOT / "Snakefile", "--directory", work,
        "--workflow-profile", ROOT / "profiles/slurm",
        "--configfile", ROOT / "presets/smoke.yaml", overrides,
        "--slurm-status-command", "squeue",  # no slurmdbd here: sacct cannot answer
        # first status poll after 6 s, about one smoke job's length (the plugin adds 10 s to
        # the interval after every poll that finds nothing finished)
        "--slurm-init-seconds-before-status-checks", "6",
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
    runs = 5 + 2  # Table 1, one layer, MNIST (6 cells, 5 runs: with k = 1 VAE and IWAE are one), Table 2
    with open(work / "results/smoke/tables/summary.csv") as f:
        assert len(list(csv.DictReader(f))) == runs
    assert (work / "results/smoke/report.tex").exists() and (work / "results/smoke/tables/table1.md").exists()
    # the plugin names each job's rule and wildcards in its comment
    jobs = {j.get("Comment", ""): j for j in cluster.jobs()}
    heavy = {name for name in jobs if name.startswith(("rule_train_", "rule_evaluate_"))}
    assert len(heavy) == 2 * runs and "rule_train_wildcards_table2_mnist-1l-vae-k1-to-iwae-k50-s1" in heavy
    assert {name for name in jobs if name.startswith("rule_prepare_")} == {"rule_prepare_wildcards_mnist"}
    assert len(jobs) == 2 * runs + 1, sorted(jobs)  # fetch and the report rules run locally
    assert all(j["JobState"] == "COMPLETED" for j in jobs.values()), [
        j for j in jobs.values() if j["JobState"] != "COMPLETED"
    ]
    asked_gpu = {name for name, j in jobs.items() if "gpu" in j.get("TresPerJob", "")}
    assert asked_gpu == heavy  # training and evaluation, and only they, asked for a GPU
