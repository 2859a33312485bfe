"""The Snakemake workflow: its DAG, config validation, the smoke preset end to end on real
data, re-runs that touch only what changed, and resumption of a failed training job."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.image
import pytest
import torch
import yaml

from iwae.plan.config import TrainConfig

from conftest import ROOT, run_cli
from workflow import SNAKEFMT, SNAKEMAKE, job_counts, overlay, snakemake

SMOKE = ROOT / "presets" / "smoke.yaml"


def smoke_plan(overrides: dict | None = None):
    """The plan of config.yaml under the smoke preset (and `overrides`), as the workflow reads it."""
    from snakemake.utils import update_config

    from iwae.plan.experiments import Plan

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(config, yaml.safe_load(SMOKE.read_text()))
    update_config(config, overrides or {})
    return Plan.from_config(config)


# --------------------------------------------------------------------------- DAG and config


def test_default_dag_is_table1(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--cores", "2")
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # 24 cells, 20 runs: with k = 1 the VAE and IWAE are one objective, trained once
    assert counts["train"] == 20 and counts["evaluate"] == 20, counts
    assert counts["table"] == 1 and counts["report"] == 1
    runs = set(re.findall(r"results/paper/runs/table1/([^/\s]+)/model\.pt", result.stdout))
    assert len(runs) == 20 and "omniglot-2l-iwae-k50-s1" in runs and "mnist-1l-vae-k1-s1" in runs
    assert "mnist-1l-iwae-k1-s1" not in runs
    shared = re.search(r"iwae train --out results/paper/runs/table1/mnist-1l-vae-k1-s1 .*", result.stdout)
    assert "--shared-cells iwae" in shared.group(0)  # and so its train.json says


def test_paper_protocol_reaches_the_jobs(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--cores", "2", "results/paper/runs/table1/mnist-2l-iwae-k50-s1/model.pt")
    assert result.returncode == 0, result.stderr
    command = next(line for line in result.stdout.splitlines() if "iwae train" in line)
    for flag in ("--layers 2", "--objective iwae", "--k 50", "--epochs-per-stage 1,3,9,27,81,243,729,2187",
                 "--lr 0.001", "--batch-size 20", "--adam-beta1 0.9", "--adam-eps 0.0001", "--shuffle",
                 "--backend auto"):  # fmt: skip
        assert flag in command, (flag, command)


@pytest.mark.parametrize(
    "text,key",
    [
        ("protocol:\n  lrr: 0.1\n", "lrr"),  # unknown key
        ("protocol:\n  batch_size: twenty\n", "batch_size"),  # wrong type
        ("protocol:\n  lr: -1.0\n", "lr"),  # impossible value
        ("evaluation:\n  k: 0\n", "k"),
        ("experiments:\n  table1:\n    objectives: [miwae-m3]\n", "experiments.table1.objectives"),
        ("experiments:\n  table1:\n    datasets: [cifar]\n", "datasets"),
        ("run_experiments: [table9]\n", "run_experiments"),
        ("compute:\n  device: tpu\n", "device"),
        ("protocol:\n  backend: jax\n", "protocol: backend"),
        ("experiments:\n  table1:\n    table: pie\n", "experiments.table1.table"),
    ],
)
def test_invalid_config_fails_before_any_job_and_names_the_key(tmp_path, text, key):
    bad = overlay(tmp_path / "bad.yaml", text)
    result = snakemake(tmp_path / "work", "--cores", "2", "--configfile", bad)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert key in output, output[-2000:]
    assert "Job stats" not in output and not (tmp_path / "work" / "results").exists()


def test_resources_are_portable(tmp_path):
    cpu = snakemake(tmp_path, "-n", "--cores", "2")
    gpu = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", ROOT / "presets" / "gpu.yaml")
    assert cpu.returncode == 0 and gpu.returncode == 0, gpu.stderr
    for output, gpus, jobs in ((cpu.stdout, 0, 40), (gpu.stdout, 1, 20 + 2)):  # the GPU preset packs
        blocks = re.findall(r"rule (train\w*|evaluate):\n(.*?)\n\n", output, re.S)
        assert len(blocks) == jobs
        for _, block in blocks:
            resources = re.search(r"resources: (.*)", block).group(1)
            assert f"gpu={gpus}" in resources and "runtime=" in resources and "mem_mb=" in resources


def _dry(tmp_path, text: str) -> str:
    result = snakemake(tmp_path / "w", "-n", "-p", "--cores", "2", "--configfile", overlay(tmp_path / "o.yaml", text))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _job(output: str, rule: str, run: str) -> str:
    """The dry-run block of one job of `rule` for `run`."""
    for block in output.split("\n\n"):
        if f"rule {rule}:" in block and f"/{run}/" in block:
            return block
    raise AssertionError(f"no {rule} job for {run}")


def test_two_stage_dag_links_each_second_stage_to_its_first(tmp_path):
    out = _dry(tmp_path, "run_experiments: [table2]\n")
    counts = job_counts(out)
    assert counts["train"] == 4 and counts["evaluate"] == 4, counts  # 2 second stages + their first stages
    job = _job(out, "train", "mnist-1l-vae-k1-to-iwae-k50-s1")
    assert "results/paper/runs/table1/mnist-1l-vae-k1-s1/model.pt" in job.split("output:")[0]
    assert "--init-from results/paper/runs/table1/mnist-1l-vae-k1-s1/model.pt" in job
    assert "--lr 0.0001" in job and "--epochs-per-stage 2187" in job and "--objective iwae --k 50" in job
    back = _job(out, "train", "mnist-1l-iwae-k50-to-vae-k1-s1")
    assert (
        "--init-from results/paper/runs/table1/mnist-1l-iwae-k50-s1/model.pt" in back
        and "--objective vae --k 1" in back
    )


def test_estimators_dag(tmp_path):
    out = _dry(tmp_path, "run_experiments: [estimators]\n")
    runs = set(re.findall(r"results/paper/runs/estimators/([^/\s]+)/model\.pt", out))
    expected = {
        "iwae",
        "vae",
        "miwae-m4",
        "miwae-m8",
        "piwae-m4",
        "piwae-m8",
        "ciwae-b0.05",
        "ciwae-b0.5",
        "stl",
        "dreg",
    }
    assert runs == {f"mnist-1l-{o}-k64-s1" for o in expected}
    assert "--extra-k 64" in _job(out, "evaluate", "mnist-1l-piwae-m8-k64-s1")


def test_fixed_binarization_dag(tmp_path):
    out = _dry(tmp_path, "run_experiments: [fixed-binarization]\n")
    assert job_counts(out)["train"] == 5 and "binarized_mnist/binarized_mnist_train.amat.gz" in out
    assert "--train-points 10000" in _job(out, "evaluate", "mnist-fixed-1l-iwae-k50-s1")


def test_packed_dag_has_one_training_job_per_experiment_and_dataset(tmp_path):
    out = _dry(tmp_path, "compute:\n  pack: dataset\n")
    counts = job_counts(out)
    train_jobs = {rule: n for rule, n in counts.items() if rule.startswith("train")}
    assert train_jobs == {"train_table1_mnist": 1, "train_table1_omniglot": 1}, counts
    assert counts["evaluate"] == 20 and counts["pack_file"] == 2 and counts["table"] == 1
    job = _job(out, "train_table1_mnist", "mnist-2l-iwae-k50-s1")
    assert "iwae train --pack results/paper/packs/table1/mnist.json --threads 2" in job
    assert job.split("output:")[1].split("\n")[0].count("/model.pt") == 10
    assert "runtime=21600" in job  # two processes on two threads, five runs each: 5 x 4320 minutes


def test_packed_second_stages_wait_for_their_first_stages(tmp_path):
    out = _dry(tmp_path, "run_experiments: [table2]\ncompute:\n  pack: 3\n")
    job = _job(out, "train_table2_mnist", "mnist-1l-vae-k1-to-iwae-k50-s1")
    inputs = job.split("output:")[0]
    assert "results/paper/runs/table1/mnist-1l-vae-k1-s1/model.pt" in inputs
    assert "results/paper/runs/table1/mnist-1l-iwae-k50-s1/model.pt" in inputs
    assert job_counts(out)["evaluate"] == 4


def test_seeds_multiply_runs(tmp_path):
    out = _dry(tmp_path, "experiments:\n  table1:\n    seeds: [1, 2, 3]\n")
    assert job_counts(out)["train"] == 60 and "mnist-2l-iwae-k50-s3" in out


def test_quick_preset_anneals_table1_to_the_papers_last_learning_rate(tmp_path):
    # IWAE's noisy encoder gradient needs the low learning rates: a quick schedule that stops
    # above 1e-4 leaves the 2-layer IWAE behind the VAE at L_5000 (see presets/quick.yaml)
    result = snakemake(tmp_path, "-n", "-p", "--cores", "2", "--configfile", ROOT / "presets" / "quick.yaml")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["train"] == 37
    commands = [line for line in result.stdout.splitlines() if "iwae train --out results/quick/runs/table1/" in line]
    assert len(commands) == 20
    for command in commands:
        flags = dict(re.findall(r"--([a-z0-9-]+) ([^-\s]\S*)", command))
        schedule = TrainConfig(
            data=flags["data"],
            epochs_per_stage=[int(e) for e in flags["epochs-per-stage"].split(",")],
            lr=float(flags["lr"]),
            lr_decade_stages=float(flags["lr-decade-stages"]),
        )
        last_lr = schedule.learning_rate(len(schedule.epochs_per_stage) - 1)
        assert math.isclose(last_lr, 1e-4, rel_tol=1e-6), command
        assert flags["train-subset"] == "23000"


def test_lint_and_format():
    lint = subprocess.run([SNAKEMAKE, "--lint", "-s", ROOT / "Snakefile"], capture_output=True, text=True, cwd=ROOT)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout[-3000:]
    fmt = subprocess.run([SNAKEFMT, "--check", "Snakefile", "workflow"], capture_output=True, text=True, cwd=ROOT)
    assert fmt.returncode == 0, fmt.stderr


def test_report_captions_are_clean_restructured_text():
    """Each caption of Snakemake's report, rendered as the report does (Jinja, then docutils),
    without a docutils warning or error (an unescaped |x| is an undefined substitution)."""
    import io

    import docutils.core
    import jinja2

    class Names(dict):
        def __getattr__(self, name):
            return f"<{name}>"

    class Job:  # what a caption reads: snakemake.wildcards.x, .params.x, .config[...]
        config = {"run_experiments": ["table1"], "results": "results/paper"}

        def __getattr__(self, name):
            return Names()

    snakemake_object = Job()
    for caption in sorted((ROOT / "workflow/report").glob("*.rst")):
        text = jinja2.Template(caption.read_text()).render(snakemake=snakemake_object)
        messages = io.StringIO()
        docutils.core.publish_doctree(text, settings_overrides={"report_level": 2, "warning_stream": messages})
        assert not messages.getvalue(), f"{caption.name}: {messages.getvalue()}"


# --------------------------------------------------------------------------- smoke preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, raw_dir):
    """The smoke preset run end to end on real data (the verified test-data cache as mirror)."""
    work = tmp_path_factory.mktemp("smoke")
    start = time.monotonic()
    result = snakemake(work, "--cores", "2", "--configfile", SMOKE, timeout=900, env={"IWAE_DATA_MIRROR": str(raw_dir)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work, time.monotonic() - start


def _markdown_rows(path: Path) -> list[list[str]]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.slow
def test_smoke_builds_every_output(smoke):
    work, _ = smoke
    again = snakemake(work, "-n", "--cores", "2", "--configfile", SMOKE)
    assert "Nothing to be done" in again.stdout + again.stderr
    assert (work / "results/smoke/report.tex").stat().st_size > 1000
    assert len(list((work / "results/smoke/runs/table1").glob("*/eval.json"))) == 20  # 24 cells
    assert len(list((work / "results/smoke/runs").glob("*/*/eval.json"))) == 20 + 2 + 10 + 5 + 6 + 5 + 7 + 2 + 3 + 1


@pytest.mark.slow
def test_smoke_builds_every_findings_table(smoke):
    """Every experiment that findings concern has its findings table, each row with a verdict."""
    from iwae.plan import findings

    work, _ = smoke
    config = yaml.safe_load(SMOKE.read_text())
    judged = [name for name in config["run_experiments"] if findings.for_experiment(name)]
    assert {"table1", "table2", "estimators", "fixed-binarization", "iwaer", "aevb", "seed000", "nbip"} <= set(judged)
    for name in judged:
        rows = _markdown_rows(work / f"results/smoke/tables/{name}_findings.md")
        assert rows and all(r[-1].startswith(("holds", "contradicted", "not resolved")) for r in rows), name
    two = {r[0]: r for r in _markdown_rows(work / "results/smoke/tables/table2_findings.md")}
    assert two["VAE (k = 1) then IWAE (k = 50) ends below the VAE alone"][7] == "-1.88"  # 84.88 - 86.76


@pytest.mark.slow
def test_smoke_publishes_a_folder_that_verifies(smoke, tmp_path):
    """`snakemake publish` writes results/published/<name> with its records, models and
    SHA256SUMS; `iwae verify` then checks the manifest, rebuilds every table from the records
    byte for byte and evaluates each model again on its first test points."""
    work, _ = smoke
    models = overlay(tmp_path / "publish.yaml", "publish:\n  name: smoke-check\n  models: true\n")
    result = snakemake(work, "publish", "--cores", "1", "--configfile", SMOKE, models, "--config", "report_only=True")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = work / "results/published/smoke-check"
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (folder / "runs/table1/mnist-1l-vae-k1-s1/model.pt").is_file()
    assert (folder / "tables/table1_findings.md").is_file() and (folder / "experiments.json").is_file()
    verified = run_cli("verify", folder, "--points", "20", "--threads", "1", cwd=work)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
    assert "largest difference" in verified.stdout and verified.stdout.strip().endswith("verified")
    # the active units counted again, a second layer's too (its points' sample from the recorded seed)
    assert "ok mnist-2l-iwae-k5-s1: active units" in verified.stdout
    two_layers = folder / "runs/table1/mnist-2l-iwae-k5-s1/eval.json"
    record = json.loads(two_layers.read_text())
    record["active_units"]["per_layer"][1] += 1
    two_layers.write_text(json.dumps(record))
    miscounted = run_cli("verify", folder, "--points", "20", "--threads", "1", cwd=work)
    assert miscounted.returncode == 2 and "mismatch: mnist-2l-iwae-k5-s1: active units" in miscounted.stdout
    (folder / "runs/table1/mnist-1l-vae-k1-s1/eval.json").write_text(
        (folder / "runs/table1/mnist-1l-vae-k1-s1/eval.json")
        .read_text()
        .replace('"per_point": [', '"per_point": [1.5, ', 1)
    )
    tampered = run_cli("verify", folder, "--points", "20", "--threads", "1", cwd=work)
    assert tampered.returncode == 2 and "not verified" in tampered.stderr


@pytest.mark.slow
def test_smoke_table1_content(smoke):
    work, _ = smoke
    rows = _markdown_rows(work / "results/smoke/tables/table1.md")
    assert [(r[0], r[1]) for r in rows] == [("1", "1"), ("", "5"), ("", "50"), ("2", "1"), ("", "5"), ("", "50")]
    header = (work / "results/smoke/tables/table1.md").read_text()
    assert "MNIST VAE NLL" in header and "Omniglot (resized) IWAE NLL" in header
    assert "not the paper's Omniglot file" in header  # never presented as the paper's dataset
    for i, row in enumerate(rows):
        assert all(50 < float(row[c]) < 400 for c in (2, 4, 6, 8)), row
        layers = 1 if i < 3 else 2
        assert all(len(row[c].split("+")) == layers for c in (3, 5, 7, 9)), row
    # VAE and IWAE with k = 1 are the same objective: one run fills both cells, and says so
    for row in (rows[0], rows[3]):
        assert row[2] == row[4] and row[6] == row[8] and row[3] == row[5]
    assert "IWAE with k = 1 is the same objective as the VAE: one run fills both cells" in header
    trained = json.loads((work / "results/smoke/runs/table1/mnist-1l-vae-k1-s1/train.json").read_text())
    assert trained["config"]["shared_cells"] == ["iwae"]
    tex = (work / "results/smoke/tables/table1.tex").read_text()
    assert r"\toprule" in tex and r"\multicolumn{4}{c}{MNIST}" in tex and "16+5" not in tex


@pytest.mark.slow
def test_smoke_vs_paper_and_summary(smoke):
    work, _ = smoke
    rows = _markdown_rows(work / "results/smoke/tables/table1_vs_paper.md")
    assert len(rows) == 24  # every cell, the shared ones included
    mnist_iwae_50 = next(r for r in rows if r[:4] == ["MNIST", "1", "IWAE", "50"])
    assert mnist_iwae_50[5] == "84.78" and mnist_iwae_50[8] == "25"
    assert math.isclose(float(mnist_iwae_50[6]), float(mnist_iwae_50[4]) - 84.78, abs_tol=0.011)
    assert all(r[5].endswith("†") for r in rows if r[0].startswith("Omniglot"))
    with open(work / "results/smoke/tables/summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 20 + 2 + 10 + 5 + 6 + 5 + 7 + 2 + 3 + 1  # every run of every experiment
    assert all(r["git_revision"] and r["device"] and float(r["nll"]) > 0 for r in summary)
    # what each run cost, from its records: one row per run and the sum of its hours
    cost = _markdown_rows(work / "results/smoke/tables/cost.md")
    assert [r[1] for r in cost[:-1]] == [r["run"] for r in summary]
    assert cost[-1][:2] == ["all runs", f"{len(summary)} runs"]
    assert all(float(r[5]) > 0 and float(r[8]) > 0 for r in cost[:-1])  # seconds per epoch, load
    hours = sum(float(r["train_seconds"]) for r in summary) / 3600
    assert math.isclose(float(cost[-1][6]), hours, abs_tol=1e-3)
    record = json.loads((work / "results/smoke/runs/table1/mnist-2l-iwae-k5-s1/eval.json").read_text())
    assert record["training"]["config"]["layers"] == "2" and record["training"]["config"]["seed"] == 1
    assert record["environment"]["torch"] and record["training"]["train_seconds"] > 0


@pytest.mark.slow
def test_smoke_other_experiment_tables(smoke):
    work, _ = smoke
    tables = work / "results/smoke/tables"
    two = _markdown_rows(tables / "table2.md")
    assert [r[0] for r in two] == ["VAE (k=1) → IWAE (k=50)", "IWAE (k=50) → VAE (k=1)"]
    assert all(50 < float(r[1]) < 400 and 50 < float(r[3]) < 400 for r in two)
    # the first stage of Table 2 is the Table 1 run itself: the same number
    table1 = {r[1]: r for r in _markdown_rows(tables / "table1_vs_paper.md") if r[0] == "MNIST" and r[1] == "1"}
    assert two[0][1] in {r[4] for r in _markdown_rows(tables / "table1_vs_paper.md")}, table1
    assert "84.88" in (tables / "table2_vs_paper.md").read_text()
    est = _markdown_rows(tables / "estimators.md")
    assert [r[0] for r in est] == ["IWAE-64", "log p̂(x)", "−KL(Q‖P)"] and all(len(r) == 11 for r in est)
    for col in range(1, 11):  # -KL = IWAE-64 - log p(x) <= 0 up to rounding
        assert float(est[2][col]) == pytest.approx(float(est[0][col]) - float(est[1][col]), abs=0.011)
    assert "-86.11" in (tables / "estimators_vs_paper.md").read_text()
    fixed = (tables / "fixed-binarization.md").read_text()
    assert "IWAE train NLL" in fixed and "IWAE valid NLL" in fixed and "IWAE shift" in fixed
    assert "MNIST (fixed binarization)" in fixed
    record = json.loads((work / "results/smoke/runs/table1/mnist-1l-iwae-k5-s1/eval.json").read_text())
    assert record["valid"]["points"] == 10 and record["valid"]["of"] == 400  # every run: its validation split


@pytest.mark.slow
def test_smoke_random_weights_experiment(smoke):
    """Seed 001's experiment end to end: its table beside seed 001's values with paired
    differences, the validation curve in the training logs, the weights figure."""
    work, _ = smoke
    rows = _markdown_rows(work / "results/smoke/tables/iwaer.md")
    assert [r[1] for r in rows] == ["IWAE", "IWAER_rec", "IWAER"] * 2
    assert rows[2][6] == "-94.346 ± 0.025" and rows[5][6].endswith("†")  # Omniglot (resized): orientation only
    assert all(" ± " in r[7] for r in rows if r[1] != "IWAE")
    run = work / "results/smoke/runs/iwaer/mnist-seed001-iwae-k25-iwaer-s1"
    record = json.loads((run / "train.json").read_text())
    assert record["backend"] == "autograd" and record["config"]["random"] == "both"
    with open(run / "train_log.csv") as f:
        assert all(row["valid_bound"] for row in csv.DictReader(f))  # valid_every: 1 in the smoke preset
    image = matplotlib.image.imread(work / "results/smoke/figures/iwaer/weights_mnist_seed001.png")
    assert image.shape[0] > 300 and image[..., :3].mean(-1).std() > 0.05


@pytest.mark.slow
def test_smoke_aevb_experiment(smoke):
    """Kingma & Welling's experiment end to end: the curves kept by each run, the HMC
    marginal likelihood beside L_k, the table and its findings, Frey Face figures 28 x 20."""
    work, _ = smoke
    rows = _markdown_rows(work / "results/smoke/tables/aevb.md")
    assert sorted(r[0] for r in rows) == ["Frey Face"] + ["MNIST"] * 4
    marginal = [r for r in rows if r[3] == "200" and r[2] == "3" and r[1] == "10"]
    assert marginal and all(c.count("(") == 1 for c in marginal[0][8:10])  # HMC (L_k)
    assert "qualitative comparison" in (work / "results/smoke/tables/aevb_vs_paper.md").read_text()
    run = work / "results/smoke/runs/aevb/mnist-L10x3-sgvb-k1-n1000-s1"
    with open(run / "curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert [int(r["samples"]) for r in curve] == [100, 300, 500, 600] and all(r["train_ml"] for r in curve)
    record = json.loads((run / "train.json").read_text())
    assert record["config"]["family"] == "aevb" and set(record["pilot"]) == {"0.01", "0.02", "0.1"}
    assert len(record["curve"]) == 4 and record["backend"] == "autograd"
    figures = work / "results/smoke/figures/aevb"
    for name in ("bound_vs_samples_mnist", "bound_vs_samples_freyface", "ml_vs_samples_marginal",
                 "manifold/freyface-L20x2-sgvb-k1-s1", "latents/mnist-L20x2-sgvb-k1-s1"):  # fmt: skip
        image = matplotlib.image.imread(figures / f"{name}.png")
        assert image.shape[0] > 300 and image[..., :3].mean(-1).std() > 0.05, name
    report = (work / "results/smoke/report.tex").read_text()
    assert "Auto-Encoding Variational Bayes" in report and "manifold/freyface-L20x2-sgvb-k1-s1" in report


@pytest.mark.slow
def test_smoke_posterior_experiment(smoke):
    """nbip's tasks end to end: the grid posterior beside L_k, 5-NN accuracy per layer, a
    conditional model evaluated given the label with its label mixture, their figures."""
    work, _ = smoke
    rows = {r[0]: r for r in _markdown_rows(work / "results/smoke/tables/posterior.md")}
    twod = rows["20-2, IWAE k=50"]
    assert abs(float(twod[2]) - float(twod[3])) < 1.0 and float(twod[5]) > 0  # grid log p(x) ~ L_k; KL > 0
    two_layers = rows["20-4/10-2, VAE k=50"]
    assert re.fullmatch(r"\d of 4 / \d of 2", two_layers[7]) and len(two_layers[8].split(" / ")) == 2
    given = rows["20-10, IWAE k=5, given y (label prior; test L_k of log p(x given y))"]
    assert float(given[1]) < 0 and given[9] != "—"
    gain, stderr = given[10].split(" ± ")  # paired against the unconditional run on the same points
    assert float(stderr) > 0 and abs(float(gain)) < 50
    record = json.loads(
        (work / "results/smoke/runs/posterior/mnist-L20x10-iwae-k5-label_prior-s1/eval.json").read_text()
    )
    assert record["test"]["conditional"] and record["mixture"]["classes"] == 10
    assert record["training"]["config"]["condition"] == "label" and record["training"]["backend"] == "autograd"
    figures = work / "results/smoke/figures/posterior"
    for name in ("posterior/mnist-L20x2-iwae-k50-s1", "pca/mnist-L20x4_10x2-vae-k50-s1",
                 "by_label/mnist-L20x10-iwae-k5-standard_prior-s1", "latents/mnist-L20x2-vae-k50-s1"):  # fmt: skip
        image = matplotlib.image.imread(figures / f"{name}.png")
        assert image.shape[0] > 300 and image[..., :3].mean(-1).std() > 0.05, name


@pytest.mark.slow
def test_smoke_seed_tables(smoke):
    """Each seed's table built by name: the seed's value beside ours with the difference, the
    other sources of the same cell beside it; the seeds' figures."""
    work, _ = smoke
    tables = work / "results/smoke/tables"
    rows = {(r[0], r[2], r[3]): r for r in _markdown_rows(tables / "seed000_vs_paper.md")}
    mnist = rows[("MNIST", "IWAE", "5")]
    assert mnist[5] == "87.02" and math.isclose(float(mnist[6]), float(mnist[4]) - 87.02, abs_tol=0.011)
    assert mnist[9] == "paper 85.54; nbip/IWAE 85.18 (200-200-100)"  # nbip's 1 layer: 100 latents, marked
    assert rows[("Omniglot (resized)", "IWAE", "5")][5] == "112.83†"
    text = (tables / "seed000_vs_paper.md").read_text()
    assert "seed 000: batch 100, 364 epochs" in text and "LeakyReLU" in text
    assert "trained on the training and validation splits together" in (tables / "seed000.md").read_text()
    nbip = {(r[1], r[2]): r for r in _markdown_rows(tables / "nbip_vs_paper.md")}
    assert nbip[("1 (200-200-100)", "DReG")][5] == "84.90" and nbip[("1 (200-200-100)", "VAE")][5] == "86.10"
    two = nbip[("2", "IWAE")]
    assert two[5] == "83.48" and "paper 83.89" in two[9] and "seed 000 93.90" in two[9]
    given = _markdown_rows(tables / "nbip-conditional_vs_paper.md")
    assert given[0][2] == "IWAE given y (label prior)" and given[0][5] == "81.41"
    record = json.loads((work / "results/smoke/runs/seed000/mnist-1l-iwae-k5-s1/eval.json").read_text())
    assert record["training"]["config"]["train_split"] == "train+valid" and "valid" not in record
    figures = work / "results/smoke/figures"
    for name in ("nbip/training_samples/mnist-2l-iwae-k5-s1", "aevb/reconstructions_mnist",
                 "aevb/samples_by_latent_mnist", "seed000/curves_mnist_1l"):  # fmt: skip
        image = matplotlib.image.imread(figures / f"{name}.png")
        assert image.shape[0] > 100 and image[..., :3].mean(-1).std() > 0.05, name


def _chromium() -> str | None:
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None and os.environ.get("IWAE_REQUIRE_CHROMIUM") == "1":
        pytest.fail("IWAE_REQUIRE_CHROMIUM=1 but no chromium on PATH (Debian's package chromium)")
    return found


@pytest.mark.slow
def test_smoke_snakemake_report_renders_every_table_and_figure(smoke, tmp_path):
    """snakemake --report builds one self-contained page holding every table (as HTML) and
    every figure of every experiment with its caption, grouped by experiment; headless
    Chromium renders it (its menu lists the experiments) and takes a screenshot."""
    work, _ = smoke
    out = tmp_path / "report.html"
    result = snakemake(work, "--cores", "1", "--configfile", SMOKE, "--report", out)
    assert result.returncode == 0 and out.exists(), result.stderr[-3000:]
    page = out.read_text()
    plan = smoke_plan()
    for name in plan.selected:
        exp = plan.experiments[name]
        for table in exp.tables():
            if table.endswith(".html"):
                assert f"results/smoke/tables/{table}" in page, table
        for stem in exp.figures():
            assert f"results/smoke/figures/{name}/{stem}.png" in page, stem
        assert exp.title in page
    assert "Training curves of the runs of" in page  # a caption, rendered with its wildcards
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH to render the report")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
    dom = subprocess.run([*base, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    for title in ["All runs"] + [plan.experiments[name].title for name in plan.selected]:
        assert re.search(r">\s*" + re.escape(title.replace("&", "&amp;")) + r"\s*<", rendered), title  # a menu entry
    shot = tmp_path / "report.png"
    subprocess.run([*base, "--window-size=1400,1000", f"--screenshot={shot}", out.as_uri()], capture_output=True,
                   timeout=300)  # fmt: skip
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1000, 1400) and image[..., :3].std() > 0.05


@pytest.mark.slow
def test_smoke_figures_have_content(smoke):
    work, _ = smoke
    figures = work / "results/smoke/figures"
    expected = ["table1/nll_vs_k", "table1/curves_mnist_1l", "table1/curves_omniglot-resized_2l",
                "table1/variances_mnist_2l", "estimators/variances_mnist_1l", "fixed-binarization/nll_vs_k",
                "table2/samples/mnist-1l-vae-k1-to-iwae-k50-s1"]  # fmt: skip
    for stem in expected:
        assert (figures / f"{stem}.pdf").stat().st_size > 5000
        image = matplotlib.image.imread(figures / f"{stem}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300
        gray = image[..., :3].mean(-1)
        assert gray.std() > 0.05 and (gray < 0.5).mean() > 0.005, stem  # drawn, not blank
    assert len(list((figures / "table2/samples").glob("*.png"))) == 2


@pytest.mark.slow
def test_smoke_tables_and_report_compile(smoke, tmp_path):
    work, _ = smoke
    if not (pdflatex := __import__("shutil").which("pdflatex")):
        pytest.skip("no pdflatex on PATH")
    for table in ("table1", "table1_vs_paper"):
        result = subprocess.run(
            [
                pdflatex,
                "-interaction=nonstopmode",
                "-halt-on-error",
                f"-output-directory={tmp_path}",
                work / f"results/smoke/tables/{table}.tex",
            ],
            capture_output=True,
            text=True,  # fmt: skip
        )
        assert result.returncode == 0, result.stdout[-2000:]
    assert (work / "results/smoke/report.pdf").stat().st_size > 50_000
    report = (work / "results/smoke/report.tex").read_text()
    assert report.count(r"\includegraphics") == len(list((work / "results/smoke/figures").rglob("*.pdf")))
    for title in ("Table 1", "Table 2", "Rainforth", "Fixed binarisation", "random network weights"):
        assert title in report


@pytest.mark.slow
def test_packed_runs_are_the_runs_trained_alone(smoke, tmp_path, raw_dir):
    """Table 2 and its first stages as packs: the same models as trained alone, the same table."""
    work, _ = smoke
    packed = overlay(tmp_path / "pack.yaml", "run_experiments: [table2]\ncompute:\n  pack: dataset\n")
    result = snakemake(tmp_path / "w", "--cores", "2", "--configfile", SMOKE, packed,
                       env={"IWAE_DATA_MIRROR": str(raw_dir)})  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = list((tmp_path / "w/results/smoke/runs").glob("*/*/model.pt"))
    assert len(runs) == 10 + 2  # the first stages' pack is all of Table 1's MNIST runs
    for model in runs:
        relative = model.relative_to(tmp_path / "w")
        ours, alone = (torch.load(p, weights_only=True)["model"]["params"] for p in (model, work / relative))
        assert torch.equal(ours, alone), relative
        assert json.loads((model.parent / "train.json").read_text())["pack"]["name"].endswith("-mnist")
    assert (tmp_path / "w/results/smoke/tables/table2.md").read_text() == (
        work / "results/smoke/tables/table2.md"
    ).read_text()


@pytest.mark.slow
def test_regenerating_a_table_trains_nothing(smoke):
    work, _ = smoke
    for suffix in (".tex", ".md"):
        (work / f"results/smoke/tables/table1{suffix}").unlink()
    # targets before --configfile, which takes every file name that follows it
    args = ["results/smoke/tables/table1.tex", "--cores", "2", "--configfile", SMOKE, "--config", "report_only=True"]
    dry = snakemake(work, *args, "-n")
    assert job_counts(dry.stdout) == {"table": 1}, dry.stdout[-2000:]
    run = snakemake(work, *args)
    assert run.returncode == 0 and (work / "results/smoke/tables/table1.tex").exists()


@pytest.mark.slow
def test_changing_evaluation_reruns_evaluation_only(smoke, tmp_path):
    """The evaluation seed, which binarises the test points, reruns every evaluation and
    retrains only the runs whose training estimates on held-out points with it (learning
    curves, validation)."""
    work, _ = smoke
    # an option no experiment of the smoke preset overrides
    more = overlay(tmp_path / "seed.yaml", "evaluation:\n  seed: 7\n")
    dry = snakemake(work, "-n", "--cores", "2", "--configfile", SMOKE, more)
    counts = job_counts(dry.stdout)
    evaluated = len(list((work / "results/smoke/runs").glob("*/*/eval.json")))
    plan = smoke_plan({"evaluation": {"seed": 7}})
    estimating = [r for name in plan.selected for r in plan.experiments[name].runs if "eval_seed" in r.train_options()]
    assert 0 < len(estimating) < evaluated
    assert counts.get("evaluate") == evaluated and counts.get("train") == len(estimating), counts
    assert "prepare" not in counts, counts


# --------------------------------------------------------------------------- failure and resume


@pytest.mark.slow
def test_failed_training_job_keeps_checkpoints_and_resumes(tmp_path, raw_dir, monkeypatch):
    monkeypatch.setenv("IWAE_DATA_MIRROR", str(raw_dir))
    work = tmp_path / "work"
    longer = overlay(
        tmp_path / "longer.yaml",
        "protocol:\n  epochs_per_stage: [3, 3]\n  train_subset: 3000\n  checkpoint_minutes: 0.002\n",
    )
    target = "results/smoke/runs/table1/mnist-1l-iwae-k5-s1/model.pt"
    args = [target, "--cores", "1", "--configfile", SMOKE, longer]  # the target before --configfile
    snakemake(work, "results/data/mnist.npz", "--cores", "1", "--configfile", SMOKE)
    proc = subprocess.Popen(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(work), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    checkpoints = work / "results/smoke/runs/table1/mnist-1l-iwae-k5-s1/checkpoints"
    progress = checkpoints / "train_log.csv"  # the log so far: killed once an epoch is in it
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (progress.exists() and len(progress.read_text().splitlines()) > 1):
        time.sleep(0.1)
    pid = subprocess.run(["pgrep", "-f", "iwae train --out results/smoke/runs/table1/mnist-1l-iwae-k5-s1"],
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    assert pid, "training process not found"
    for p in pid:  # the job's shell and its python, as a scheduler signals a job at its time limit
        os.kill(int(p), signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "Error in rule train" in output
    assert list(checkpoints.glob("ckpt-*.pt")), "Snakemake deleted the failed job's checkpoints"
    assert not (work / target).exists()
    # how far the killed job got: its log beside the checkpoints, as long as the newest one's
    newest = torch.load(max(checkpoints.glob("ckpt-*.pt")), weights_only=True)
    with open(progress) as f:
        assert len(list(csv.DictReader(f))) >= len(newest["log"]) > 0
    resumed = snakemake(work, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (work / "results/smoke/logs/train/table1/mnist-1l-iwae-k5-s1.log").read_text()
    assert "resuming from ckpt-" in log, log
    assert (work / target).exists()
    finished = (work / target).parent / "train_log.csv"
    assert finished.read_text() == progress.read_text() and len(finished.read_text().splitlines()) == 1 + 6
