"""Every bad input and fault a new user met, held to its promise: a one-line error that names
the file, key or value at fault, exit status 2 (3 for a diverged run), and nothing written or
changed; where results were at stake, the finished results intact byte for byte.

Each case starts from a copy of one finished workflow (the smoke preset cut to a single
Table 1 run), damages something or gives a bad argument, runs the command a user would, and
compares the results before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import iwae
from iwae.errors import UserError

from conftest import ROOT, run_cli
from workflow import overlay, snakemake

pytestmark = pytest.mark.slow

SMOKE = ROOT / "presets" / "smoke.yaml"
ONE_RUN = """run_experiments: [table1]
experiments:
  table1:
    datasets: [mnist]
    layers: [1]
    objectives: [iwae]
    k: [1]
"""
RUN = "results/smoke/runs/table1/mnist-1l-iwae-k1-s1"
DATA = "results/data/mnist.npz"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, raw_dir) -> Path:
    """A workflow directory holding one finished, evaluated run with its tables and figures."""
    work = tmp_path_factory.mktemp("finished")
    overlay(work / "one-run.yaml", ONE_RUN)
    result = snakemake(work, "--cores", "2", "--configfile", SMOKE, work / "one-run.yaml",
                       env={"IWAE_DATA_MIRROR": str(raw_dir)})  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(work / ".snakemake", ignore_errors=True)  # locks and metadata: each case makes its own
    return work


def _copy(finished: Path, to: Path) -> Path:
    """A copy of the finished workflow; the large read-only inputs (raw files, prepared data)
    are hard links, which no case changes in place (damage replaces the file)."""

    def link_or_copy(src, dst):
        if "/resources/" in src or src.endswith(".npz"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(finished, to, symlinks=True, copy_function=link_or_copy)
    return to


def _digests(root: Path, under: str = "results") -> dict[str, str]:
    """sha256 of every file below root/under (logs aside: a failed job writes its log)."""
    out = {}
    for path in sorted((root / under).rglob("*")):
        if path.is_file() and "logs" not in path.relative_to(root).parts:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _replace(path: Path, data: bytes) -> None:
    path.unlink()  # a new file: the original's hard links keep their bytes
    path.write_bytes(data)


def _rewrite_npz(path: Path, change) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    path.unlink()
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _rewrite_model(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    path.unlink()
    torch.save(state, path)


def _fsize_limit(limit: int):
    """A file-size limit, as a full disk: writes past it fail (EFBIG) instead of killing."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@dataclass
class Case:
    """A bad input or fault: `setup(work)` damages the copy and returns the command; the
    run must end with `status` and say `needle` (on stderr, in one line for the CLI)."""

    name: str
    setup: object
    needle: str
    status: int = 2
    kind: str = "cli"  # cli: `python -m iwae`; snakemake; python: iwae.load_run in this process
    unchanged: str = "results"  # what must stay byte for byte
    check: object = None  # more to assert afterwards: check(work, result)
    extra: dict = field(default_factory=dict)


def _train(*args):
    return ["train", "--out", RUN, "--data", DATA, "--layers", "1", "--k", "1", "--epochs-per-stage", "1,1",
            "--train-subset", "200", "--quiet", *args]  # fmt: skip


def _evaluate(*args):
    return ["evaluate", "--run", RUN, "--k", "10", "--test-points", "10", "--valid-points", "0", "--quiet", *args]


# ---------------------------------------------------------------- the cases


def other_options(work):
    return _train("--k", "5")


def stray_model_and_evaluation(work):
    """A new user's folder holding a model file and an evaluation from elsewhere."""
    (work / "results/stray").mkdir()
    for name in ("model.pt", "eval.json"):
        shutil.copy(work / RUN / name, work / "results/stray" / name)
    return ["train", "--out", "results/stray", "--data", DATA, "--layers", "1", "--k", "1", "--epochs-per-stage",
            "1", "--train-subset", "200", "--quiet"]  # fmt: skip


def tampered_published_folder(work):
    """A published folder whose table was edited after its manifest was written."""
    from iwae.report.publish import write_manifest

    folder = work / "results/published/mine"
    (folder / "tables").mkdir(parents=True)
    (folder / "tables/table1.md").write_text("| NLL |\n| 85.00 |\n")
    write_manifest(folder)
    (folder / "tables/table1.md").write_text("| NLL |\n| 84.00 |\n")
    return ["verify", "results/published/mine"]


def zero_byte_data(work):
    (work / "empty.npz").write_bytes(b"")
    return ["train", "--out", "results/new", "--data", "empty.npz", "--quiet"]


def narrow_train_split(work):
    shutil.copy(work / DATA, work / "narrow.npz")
    _rewrite_npz(work / "narrow.npz", lambda a: a.update(train=a["train"][:, :100]))
    return ["train", "--out", "results/new", "--data", "narrow.npz", "--quiet"]


def wrong_size_parameters(work):
    _rewrite_model(work / RUN / "model.pt", lambda s: s["model"].update(params=s["model"]["params"][:-7]))
    return _evaluate()


def config_without_data(work):
    _rewrite_model(work / RUN / "model.pt", lambda s: s["config"].pop("data"))
    return _evaluate()


def output_not_a_directory(work):
    (work / "plain-file").write_text("not a directory\n")
    return _evaluate("--out", "plain-file/eval.json")


def full_disk_in_training(work):
    return ["train", "--out", "results/new", "--data", DATA, "--train-subset", "200", "--epochs-per-stage", "1",
            "--quiet"]  # fmt: skip


def nan_weights(work):
    _rewrite_model(work / RUN / "model.pt", lambda s: s["model"]["params"].fill_(float("nan")))
    return _evaluate()


def nan_weights_samples_figure(work):
    _rewrite_model(work / RUN / "model.pt", lambda s: s["model"]["params"].fill_(float("nan")))
    return ["report", "figure", "samples", "--model", f"{RUN}/model.pt", "--data", DATA, "--out-stem", "results/s"]


def too_many_test_points(work):
    return _evaluate("--test-points", "20000")


def diverged_before_any_checkpoint(work):
    return ["train", "--out", "results/new", "--data", DATA, "--train-subset", "200", "--epochs-per-stage", "1",
            "--lr", "1e30", "--quiet"]  # fmt: skip


def negative_seconds(work):
    return ["bench", "--seconds", "-1"]


def negative_minutes(work):
    return ["bench", "--gpu-report", "results/gpu", "--minutes", "-1"]


def checkpoints_link_out(work):
    outside = work / "elsewhere"
    outside.mkdir()
    (outside / "ckpt-000001-0000000.pt").write_bytes(b"someone else's checkpoint")
    shutil.rmtree(work / RUN / "checkpoints")
    (work / RUN / "checkpoints").symlink_to(outside)
    return _train("--k", "5", "--restart")


def pack_with_restart(work):
    (work / "pack.json").write_text('{"name": "p", "runs": []}\n')
    return ["train", "--pack", "pack.json", "--restart"]


def load_run_alone(work):
    shutil.copytree(work / RUN, work.parent / "lone-run")  # out of its workflow: no dataset above it
    return lambda: iwae.load_run(work.parent / "lone-run").test_set()


def load_run_eval_list(work):
    (work / RUN / "eval.json").unlink()
    (work / RUN / "eval.json").write_text("[1, 2, 3]\n")
    return lambda: iwae.load_run(work / RUN)


def another_preset_over_these_runs(work):
    longer = overlay(work / "longer.yaml", ONE_RUN + "protocol:\n  epochs_per_stage: [3]\n")
    return ["--cores", "2", "--configfile", SMOKE, longer]


def regenerate_without_the_configfile(work):
    return ["results/smoke/tables/table1.tex", "--cores", "1"]


def regenerate_unfinished_runs(work):
    shutil.rmtree(work / RUN)
    return ["--cores", "1", "--configfile", SMOKE, work / "one-run.yaml", "--config", "report_only=True"]


def injection_in_raw_dir(work):
    hostile = overlay(work / "hostile.yaml", ONE_RUN + 'data:\n  raw_dir: "res $(touch PWNED)"\n')
    return ["res $(touch PWNED)/mnist/t10k-labels-idx1-ubyte.gz", "--cores", "1", "--configfile", SMOKE, hostile]


def elsewhere_intact(work, result):
    assert (work / "elsewhere" / "ckpt-000001-0000000.pt").read_bytes() == b"someone else's checkpoint"


TWICE = ONE_RUN + "protocol:\n  lr: 0.1\n  lr: 0.001\n"  # the second lr is the file's last line


def key_given_twice(work):
    twice = overlay(work / "twice.yaml", TWICE)
    return ["-n", "--cores", "1", "--configfile", SMOKE, twice]


def results_in_the_data_directory(work):
    return ["-n", "--cores", "1", "--configfile", SMOKE, work / "one-run.yaml", "--config", "results=results/data"]


def nothing_pwned(work, result):
    assert not list(work.rglob("PWNED")), "a config value ran as a shell command"
    assert (work / "res $(touch PWNED)/mnist/t10k-labels-idx1-ubyte.gz").is_file()


# fmt: off
CASES = [
    Case("train over a finished run with other options", other_options, "k: 1 there, 5 here"),
    Case("train into a folder holding a stray model and evaluation", stray_model_and_evaluation,
         "results/stray holds model.pt and eval.json but no training record"),
    Case("verify a published folder with an edited table", tampered_published_folder,
         "not verified: tables/table1.md: its sha256 is not the one SHA256SUMS lists"),
    Case("a 0-byte dataset", zero_byte_data, "empty.npz: not a prepared dataset"),
    Case("a prepared file whose train split is 100 wide", narrow_train_split, "mnist images have 784 pixels"),
    Case("a parameter vector of the wrong size", wrong_size_parameters, "model.pt: not a model file"),
    Case("a model file whose config names no dataset", config_without_data, "pass --data"),
    Case("an output directory that cannot take files", output_not_a_directory, "cannot write (Not a directory)"),
    Case("a full disk during training", full_disk_in_training, "cannot write (File too large)",
         unchanged="results/smoke", extra={"preexec_fn": _fsize_limit(256 * 1024)}),
    Case("a model with NaN weights (evaluate)", nan_weights, "not finite"),
    Case("a model with NaN weights (samples figure)", nan_weights_samples_figure, "not finite"),
    Case("test_points beyond the test set", too_many_test_points, "test_points: 20000 exceeds the 10000"),
    Case("a run that diverges before its first checkpoint", diverged_before_any_checkpoint,
         "no checkpoint was written", status=3),
    Case("bench --seconds -1", negative_seconds, "must be a positive number"),
    Case("bench --minutes -1", negative_minutes, "must be a positive number"),
    Case("checkpoints linked out of the run directory", checkpoints_link_out, "symbolic link out of the run",
         check=elsewhere_intact),
    Case("train --pack with --restart", pack_with_restart, "drop --restart"),
    Case("load_run on a run copied out of its workflow", load_run_alone, "neither here nor above", kind="python"),
    Case("load_run on an eval.json holding a list", load_run_eval_list, "not an evaluation record", kind="python"),
    Case("a changed protocol over finished runs", another_preset_over_these_runs,
         "epochs_per_stage: [1, 1] there, [3] here", status=1, kind="snakemake"),
    Case("regenerating a table without its --configfile", regenerate_without_the_configfile,
         "No rule to produce results/smoke/tables/table1.tex", status=1, kind="snakemake"),
    Case("report_only with a run not finished", regenerate_unfinished_runs, "report_only: 2 files", status=1,
         kind="snakemake", unchanged="results/smoke/tables"),
    Case("a shell command in data.raw_dir", injection_in_raw_dir, "", status=0, kind="snakemake",
         check=nothing_pwned),
    Case("a config key given twice", key_given_twice, f"line {TWICE.count(chr(10))}: lr given twice; the last value counts", status=0,
         kind="snakemake"),
    Case("results: inside the prepared data", results_in_the_data_directory, "results: 'results/data' is reserved",
         status=1, kind="snakemake"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, finished, tmp_path, raw_dir):
    work = _copy(finished, tmp_path / "work")
    command = case.setup(work)
    before = _digests(work, case.unchanged)
    if case.kind == "python":
        with pytest.raises(UserError, match=case.needle.replace("(", r"\(").replace(")", r"\)")):
            command()
    elif case.kind == "snakemake":
        result = snakemake(work, *command, env={"IWAE_DATA_MIRROR": str(raw_dir)})
        output = result.stdout + result.stderr
        assert result.returncode == case.status, output[-3000:]
        assert case.needle in output, output[-3000:]
        assert "Job stats" not in output or case.status == 0, output[-3000:]  # refused before any job
    else:
        result = subprocess.run([sys.executable, "-m", "iwae", *map(str, command)], capture_output=True, text=True,
                                cwd=work, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"},
                                **case.extra)  # fmt: skip
        assert result.returncode == case.status, (result.returncode, result.stderr[-3000:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-3000:]
        assert case.needle in lines[0], lines[0]
    assert _digests(work, case.unchanged) == before
    assert not list(work.rglob("*.part*")), "a half-written file was left behind"
    if case.check:
        case.check(work, result)
    if case.kind == "cli":
        assert not (work / "results/new/model.pt").exists()


def test_a_failed_retrain_keeps_every_model_and_the_same_command_brings_them_back(finished, tmp_path, raw_dir):
    """A damaged dataset makes the training jobs rerun and fail; Snakemake then gives back the
    previous model files (never deletes them), and once the dataset is repaired the same
    command finishes, the model byte for byte as it was."""
    work = _copy(finished, tmp_path / "work")
    command = ["--cores", "2", "--configfile", SMOKE, work / "one-run.yaml"]
    model = work / RUN / "model.pt"
    before = model.read_bytes()
    good = (work / DATA).read_bytes()
    _replace(work / DATA, good[: len(good) // 3])  # truncated
    failed = snakemake(work, *command, env={"IWAE_DATA_MIRROR": str(raw_dir)})
    log = (work / f"results/smoke/logs/train/table1/{Path(RUN).name}.log").read_text()
    assert failed.returncode != 0 and "not a prepared dataset" in log, log
    assert model.read_bytes() == before and (work / RUN / "train.json").exists()
    _replace(work / DATA, good)
    again = snakemake(work, *command, env={"IWAE_DATA_MIRROR": str(raw_dir)})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert model.read_bytes() == before  # resumed from its final checkpoint: the same model, the same bytes
    assert iwae.load_run(work / RUN).eval is not None


def test_presets_keep_their_runs_apart(finished, tmp_path):
    """The quick preset beside finished smoke runs plans its own directory and leaves the
    smoke runs alone."""
    work = _copy(finished, tmp_path / "work")
    dry = snakemake(work, "-n", "--cores", "2", "--configfile", ROOT / "presets" / "quick.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "results/quick/runs/table1/mnist-1l-iwae-k5-s1/model.pt" in dry.stdout
    assert "results/smoke/runs" not in dry.stdout


def test_restart_trains_over_a_finished_run_and_leaves_no_record_of_it(finished, tmp_path):
    work = _copy(finished, tmp_path / "work")
    assert (work / RUN / "eval.json").exists()
    result = run_cli(*_train("--k", "5", "--restart"), cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads((work / RUN / "train.json").read_text())["config"]["k"] == 5
    assert not (work / RUN / "eval.json").exists()  # the old model's evaluation is gone with it
