"""The training protocol: schedule, optimizer, resume after interruption, divergence, learning."""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from iwae import models
from iwae.data import datasets
from iwae.errors import UserError
from iwae.estimators.likelihood import dataset_log_likelihood
from iwae.evaluation.evaluate import unit_variances
from iwae.models import LayeredModel
from iwae.models.likelihoods import Bernoulli
from iwae.plan.architecture import Architecture
from iwae.plan.config import TrainConfig
from iwae.training.optim import Adam

from conftest import ROOT, run_cli


def test_paper_schedule():
    cfg = TrainConfig(data="x.npz")
    assert cfg.epochs_per_stage == [1, 3, 9, 27, 81, 243, 729, 2187] and cfg.total_epochs == 3280
    lrs = [cfg.learning_rate(i) for i in range(8)]
    np.testing.assert_allclose(lrs, [1e-3 * 10 ** (-i / 7) for i in range(8)])
    assert lrs[0] == 1e-3 and math.isclose(lrs[-1], 1e-4)


def test_official_rounded_learning_rates():
    cfg = TrainConfig(data="x.npz", lr_rounding="official")
    np.testing.assert_allclose(
        [cfg.learning_rate(i) for i in range(8)], [1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4]
    )


def test_paper_defaults():
    cfg = TrainConfig(data="x.npz")
    assert (cfg.batch_size, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps) == (20, 0.9, 0.999, 1e-4)
    assert cfg.shuffle and cfg.optimizer == "adam" and cfg.init == "glorot"


def test_resume_fingerprint_ignores_runtime_options_and_is_stable():
    """A checkpoint resumes only its own trajectory; where and how fast it runs (backend,
    device, threads, checkpoint interval) is not part of that, and checkpoints written by
    earlier versions keep resuming (the value below is the one they carry)."""
    paper = TrainConfig(data="x", layers="2", k=50)
    assert paper.fingerprint([{"a": 1}]) == "f15d0e62d165a16a"
    elsewhere = TrainConfig(data="y", layers="2", k=50, backend="autograd", device="cpu", threads=1,
                            checkpoint_minutes=1.0)  # fmt: skip
    assert elsewhere.fingerprint([{"a": 1}]) == paper.fingerprint([{"a": 1}])
    for other in ({"seed": 2}, {"tf32": True}):
        changed = TrainConfig(data="x", layers="2", k=50, **other).fingerprint([{"a": 1}])
        assert changed != paper.fingerprint([{"a": 1}]), other


def test_fused_adam_matches_its_specification():
    p = torch.randn(5000)
    fused, plain = Adam(p.clone(), torch.zeros(5000)), Adam(p.clone(), torch.zeros(5000))
    for _ in range(7):
        g = torch.randn(5000)
        fused.grads.copy_(g)
        plain.grads.copy_(g)
        fused.step()
        plain.reference_step()
    torch.testing.assert_close(fused.params, plain.params, rtol=1e-6, atol=1e-7)
    assert fused.t == plain.t == 7
    # and it ascends: the objective's gradient direction
    up = Adam(torch.zeros(3), torch.ones(3))
    up.step()
    assert torch.all(up.params > 0)


def test_one_switch_selects_every_choice_of_the_official_code():
    """official_code: the official code's update, beta1, rounded rates, minibatch sum,
    initialisation and fixed order at once; the paper's values stay the defaults, and a third
    value for one of them is refused rather than silently replaced."""
    from iwae.plan.config import OFFICIAL_CODE

    official = TrainConfig(data="x.npz", official_code=True)
    assert {key: getattr(official, key) for key in OFFICIAL_CODE} == {
        "optimizer": "adam-official", "adam_beta1": 0.99, "lr_rounding": "official", "reduction": "sum",
        "init": "official", "shuffle": False}  # fmt: skip
    spelled_out = TrainConfig(data="x.npz", **OFFICIAL_CODE)
    assert official.fingerprint() == spelled_out.fingerprint() != TrainConfig(data="x.npz").fingerprint()
    assert TrainConfig.from_dict(official.to_dict()).to_dict() == official.to_dict()
    with pytest.raises(UserError, match="official_code: sets adam_beta1 to 0.99, but adam_beta1 is 0.5"):
        TrainConfig(data="x.npz", official_code=True, adam_beta1=0.5)
    with pytest.raises(UserError, match="reduction: 'sum' is built for the paper's objective"):
        TrainConfig(data="x.npz", reduction="sum", weight_prior="normal")
    assert TrainConfig(data="x.npz").reduction == "mean"


def test_official_adam_lags_one_step():
    opt = Adam(torch.zeros(4), torch.ones(4), variant="adam-official", beta1=0.99)
    assert torch.all(opt.v == 1)
    opt.step()
    assert torch.all(opt.params == 0)  # the first update uses the moments before the gradient
    opt.step()
    assert torch.all(opt.params > 0)


def test_official_init_repeats_equal_shaped_layers():
    model = LayeredModel(Architecture.parse("1"), 784)
    model.initialize(5, scheme="official")
    p = model.buffer.param
    assert torch.equal(p("encoder.q0.w1"), p("decoder.p0.w1"))  # both 200 x 200, both RandomState(123)
    w = p("encoder.q0.w2")
    assert torch.equal(w[:, :50], w[:, 50:])  # mean and log-sigma maps start equal
    other = LayeredModel(Architecture.parse("1"), 784)
    other.initialize(5)
    bound = math.sqrt(6 / (784 + 200))
    assert other.buffer.param("encoder.q0.w0").abs().max() <= bound
    assert not torch.equal(other.buffer.param("encoder.q0.w1"), other.buffer.param("decoder.p0.w1"))


# --------------------------------------------------------------------------- resume


TRAIN_ARGS = [
    "--layers", "2", "--objective", "iwae", "--k", "5", "--seed", "3",
    "--epochs-per-stage", "3,5,8", "--train-subset", "400", "--threads", "1", "--quiet",
]  # fmt: skip


def _params(run: Path) -> torch.Tensor:
    return torch.load(run / "model.pt", weights_only=True)["model"]["params"]


def _objectives(run: Path) -> list[str]:
    with open(run / "train_log.csv") as f:
        return [row["objective"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def reference_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref"
    result = run_cli("train", "--data", prepared["mnist"], *TRAIN_ARGS, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def _start_and_stop(prepared, out: Path, sig: int) -> subprocess.Popen:
    """Start a run that checkpoints every few steps; send `sig` once a checkpoint inside an
    epoch exists."""
    cmd = [sys.executable, "-m", "iwae", "train", "--data", str(prepared["mnist"]), *TRAIN_ARGS]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--checkpoint-minutes", "0.0003"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(not p.name.endswith("-0000000.pt") for p in (out / "checkpoints").glob("ckpt-*.pt")):
            break
        time.sleep(0.005)
    time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_killed_run_resumes_bit_identical(prepared, tmp_path, reference_run):
    out = tmp_path / "cut"
    for _ in range(2):  # killed twice, at different points
        proc = _start_and_stop(prepared, out, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "model.pt").exists()
    result = run_cli("train", "--data", prepared["mnist"], *TRAIN_ARGS, "--out", out)
    assert result.returncode == 0, result.stderr
    assert torch.equal(_params(out), _params(reference_run))
    assert _objectives(out) == _objectives(reference_run)
    assert json.loads((out / "train.json").read_text())["resumes"] >= 1


def test_sigterm_checkpoints_and_resumes(prepared, tmp_path, reference_run):
    out = tmp_path / "term"
    proc = _start_and_stop(prepared, out, signal.SIGTERM)
    stderr = proc.stderr.read()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    result = run_cli("train", "--data", prepared["mnist"], *TRAIN_ARGS, "--out", out)
    assert result.returncode == 0, result.stderr
    assert torch.equal(_params(out), _params(reference_run))


def test_the_cost_is_read_against_the_machines_load(reference_run):
    """Every epoch's seconds come with the machine's load average at its end, and every record
    with the load when it was written: a run's cost means little without how busy the CPU was."""
    with open(reference_run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and all(float(r["seconds"]) > 0 and float(r["load"]) >= 0 for r in rows)
    environment = json.loads((reference_run / "train.json").read_text())["environment"]
    assert environment["load"] >= 0 and "logical CPUs" in environment["device_name"]


def test_checkpoint_of_another_configuration_is_refused_unless_restarted(prepared, tmp_path, reference_run):
    out = tmp_path / "other"
    proc = _start_and_stop(prepared, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    kept = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    args = [a if a != "3" else "4" for a in TRAIN_ARGS]  # another seed
    result = run_cli("train", "--data", prepared["mnist"], *args, "--out", out)
    assert result.returncode == 2 and "a checkpoint of another configuration" in result.stderr, result.stderr
    assert sorted((out / "checkpoints").glob("ckpt-*.pt")) == kept  # nothing deleted
    result = run_cli("train", "--data", prepared["mnist"], *args, "--out", out, "--restart")
    assert result.returncode == 0, result.stderr
    assert not torch.equal(_params(out), _params(reference_run))


def test_corrupt_newest_checkpoint_falls_back(prepared, tmp_path, reference_run):
    out = tmp_path / "corrupt"
    proc = _start_and_stop(prepared, out, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    newest = sorted((out / "checkpoints").glob("ckpt-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    result = run_cli("train", "--data", prepared["mnist"], *TRAIN_ARGS, "--out", out)
    assert result.returncode == 0, result.stderr
    assert torch.equal(_params(out), _params(reference_run))


# --------------------------------------------------------------------------- divergence


def _tiny_fixed_dataset(path: Path, bad_rows: slice) -> None:
    """A fixed-binarisation dataset whose `bad_rows` hold infinite pixels: initialisation
    stays finite (the mean image is clipped), training on those rows does not."""
    rng = np.random.RandomState(0)
    train = (rng.rand(40, 784) < 0.2).astype(np.float32)
    train[bad_rows] = np.inf
    meta = {"dataset": "mnist-fixed", "label": "test", "binarization": "fixed", "sources": [], "splits": {}}
    np.savez(path, train=train, valid=train[:5], test=train[:5], meta=np.array(json.dumps(meta)))


def test_non_finite_loss_stops_cleanly_keeping_the_last_good_checkpoint(tmp_path):
    data = tmp_path / "bad.npz"
    _tiny_fixed_dataset(data, slice(20, 40))  # the second minibatch of every epoch
    out = tmp_path / "diverging"
    result = run_cli(
        "train", "--data", data, "--out", out, "--epochs-per-stage", "1", "--no-shuffle",
        "--checkpoint-minutes", "0.000001", "--quiet",
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "diverging" in result.stderr and "stage 1, epoch 1" in result.stderr
    assert not (out / "model.pt").exists()
    kept = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert kept and torch.isfinite(torch.load(kept[-1], weights_only=True)["params"]).all()


# --------------------------------------------------------------------------- learning


def test_one_epoch_of_iwae_on_mnist_lowers_test_nll(prepared, tmp_path):
    cfg = TrainConfig(data=str(prepared["mnist"]), layers="1", objective="iwae", k=5, epochs_per_stage=[1], threads=2)
    from iwae.training.loop import train

    train(cfg, tmp_path / "run", quiet=True)
    data = datasets.load(prepared["mnist"])
    g = torch.Generator().manual_seed(123)
    x = datasets.binarize(data.test[:150], g)
    before = LayeredModel(Architecture.parse("1"), 784)
    before.initialize(cfg.seed, output_bias=Bernoulli().output_bias(data.train))
    after = models.from_state(torch.load(tmp_path / "run/model.pt", weights_only=True)["model"])
    nll_before = -dataset_log_likelihood(before, x, 5000, g).mean().item()
    nll_after = -dataset_log_likelihood(after, x, 5000, g).mean().item()
    assert nll_before > 180  # roughly independent pixels at the mean image
    assert nll_after < 120 and nll_after < nll_before - 60, (nll_before, nll_after)


def test_autograd_backend_trains_the_same_run(prepared, tmp_path):
    """Both backends compute the same gradients: a short float32 run ends in the same place
    up to rounding, and train.json says which backend ran."""
    from iwae.training.loop import train

    finals, params = {}, {}
    for backend in ("fused", "autograd"):
        cfg = TrainConfig(data=str(prepared["mnist"]), layers="2", objective="dreg", k=5, epochs_per_stage=[1, 1],
                          train_subset=400, backend=backend, threads=2)  # fmt: skip
        record = train(cfg, tmp_path / backend, quiet=True)
        assert record["backend"] == backend
        finals[backend] = [float(o) for o in _objectives(tmp_path / backend)]
        params[backend] = _params(tmp_path / backend)
    np.testing.assert_allclose(finals["autograd"], finals["fused"], rtol=1e-5)
    assert (params["autograd"] - params["fused"]).abs().max() < 1e-3
    assert not torch.equal(params["autograd"], params["fused"])  # two computations, not one


def test_validation_curve_leaves_training_unchanged(prepared, tmp_path):
    """L_k on validation points every N epochs and at the end, from a stream of its own: the
    run's parameters are the same as without it, and the log holds the curve."""
    from iwae.training.loop import train

    base = dict(data=str(prepared["mnist"]), layers="1", k=3, epochs_per_stage=[2, 3], train_subset=200, threads=2)
    train(TrainConfig(**base), tmp_path / "plain", quiet=True)
    train(TrainConfig(**base, valid_every=2, valid_k=30, valid_points=25), tmp_path / "valid", quiet=True)
    assert torch.equal(_params(tmp_path / "plain"), _params(tmp_path / "valid"))
    with open(tmp_path / "valid" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {int(r["epoch"]): float(r["valid_bound"]) for r in rows if r["valid_bound"]}
    assert sorted(logged) == [2, 4, 5]  # every 2 epochs, and the last
    assert all(-400 < v < -50 for v in logged.values())


def test_one_binarisation_seed_for_every_estimate_of_a_run(prepared, tmp_path):
    """evaluation's seed binarises a run's test points for every reader: the workflow hands a
    seed other than the default to training where its validation and learning-curve
    estimates use it (and only there: elsewhere it would retrain a run for nothing); the
    evaluation records it, and load_run's test set reads it back."""
    import iwae
    from iwae.plan.experiments import Plan
    from iwae.training.callbacks import Validation
    from iwae.training.curves import LearningCurve
    from iwae.training.loop import train_run
    from iwae.training.run import build, callbacks

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["evaluation"]["seed"] = 7
    plan = Plan.from_config(config)
    assert plan.run("iwaer", "mnist-seed001-iwae-k25-iwae-s1").train_options()["eval_seed"] == 7  # validation
    assert "eval_seed" not in plan.run("table1", "mnist-1l-iwae-k5-s1").train_options()  # no estimates
    config["evaluation"]["seed"] = 123  # the default: the commands stay as they were
    assert "eval_seed" not in Plan.from_config(config).run("iwaer", "mnist-seed001-iwae-k25-iwae-s1").train_options()

    data = datasets.load(prepared["mnist"])
    as_evaluated = data.binarized("test", 7)
    assert not torch.equal(as_evaluated, data.binarized("test", 123))
    cfg = TrainConfig(data=str(prepared["mnist"]), layers="1", k=2, epochs_per_stage=[1], train_subset=100,
                      valid_every=1, valid_k=5, curve_per_decade=1, eval_seed=7, threads=1)  # fmt: skip
    run = build(cfg, tmp_path / "run", quiet=True)
    watching = callbacks(run, progress=False)
    assert torch.equal(next(c for c in watching if isinstance(c, LearningCurve)).x_test, as_evaluated)
    validation = next(c for c in watching if isinstance(c, Validation))
    assert torch.equal(validation.x, datasets.binarize(data.valid, torch.Generator().manual_seed(7)))
    assert torch.equal(validation.x, data.binarized("valid", 7))
    train_run(run, progress=False)
    result = run_cli("evaluate", "--run", tmp_path / "run", "--k", "5", "--test-points", "10", "--valid-points", "0",
                     "--active-points", "20", "--seed", "7", "--threads", "1", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = iwae.load_run(tmp_path / "run")
    assert run.eval["eval_seed"] == 7 and torch.equal(run.test_set(), as_evaluated)
    # the active units: the training points' bits from the same seed, whichever estimates ran
    # before them (here L_k on validation and training points too)
    more = run_cli("evaluate", "--run", tmp_path / "run", "--k", "5", "--test-points", "10", "--valid-points", "30",
                   "--train-points", "20", "--active-points", "20", "--seed", "7", "--threads", "1", "--quiet",
                   "--out", tmp_path / "more.json")  # fmt: skip
    assert more.returncode == 0, more.stderr
    units = json.loads((tmp_path / "more.json").read_text())["active_units"]
    assert units == run.eval["active_units"] and units["seed"] == 7
    counted = unit_variances(run.model, data.binarized("train", 7)[:20], torch.Generator().manual_seed(7))
    assert [v.tolist() for v in counted] == units["variances"]


@pytest.mark.parametrize("batches", [2, 15])
def test_graph_steps_equal_eager_steps_across_a_stage_change_even_resumed_at_an_epochs_end(prepared, tmp_path, batches):
    """The steps CUDA graphs replay (position and learning rate on the device, ten steps per
    replay where ten are left, warm-up undone), run here without a graph: bit-identical to
    eager steps, also with 2 batches an epoch (fewer than the warm-up's 3 steps), across the
    change of learning rate between stages, and when resumed at an epoch's last step."""
    from iwae.errors import Interrupted
    from iwae.training.loop import Trainer, train, train_run
    from iwae.training.run import build, callbacks

    cfg = TrainConfig(data=str(prepared["mnist"]), layers="1", k=3, epochs_per_stage=[2, 2],
                      train_subset=20 * batches, threads=1)  # fmt: skip
    train(cfg, tmp_path / "eager", quiet=True)
    run = build(cfg, tmp_path / "graphed", True, graphed=True)
    assert run.opt.lr_tensor is not None  # the learning rate a graph reads, here on the CPU
    t = Trainer(run, callbacks(run, progress=False))
    with pytest.raises(Interrupted):
        while t.advance("step"):
            if run.opt.t == 2 * batches - 1:  # the last step of the second epoch is next
                run.stop.requested = True
    resumed = build(cfg, tmp_path / "graphed", True, graphed=True)
    record = train_run(resumed, progress=False)
    assert record["resumes"] == 1 and resumed.opt.lr_tensor.item() == cfg.learning_rate(1)
    assert torch.equal(_params(tmp_path / "graphed"), _params(tmp_path / "eager"))


def test_identical_runs_write_identical_files(prepared, tmp_path):
    """A reproduction can be confirmed with sha256sum: the same run writes the same bytes."""
    args = ["--data", prepared["mnist"], "--layers", "1", "--k", "2", "--epochs-per-stage", "1",
            "--train-subset", "100", "--threads", "1", "--quiet"]  # fmt: skip
    for name in ("a", "b"):
        assert run_cli("train", "--out", tmp_path / name, *args).returncode == 0
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()


# --------------------------------------------------------------------------- seed protocols


def test_train_split_train_valid_trains_on_both_splits_with_their_labels(prepared, tmp_path):
    """Seed 000 and nbip trained on all 60,000 MNIST images: the training split with the
    validation split after it, labels included for a conditional model."""
    from iwae.training.run import build

    data = datasets.load(prepared["mnist"])
    cfg = TrainConfig(data=str(prepared["mnist"]), train_split="train+valid", condition="label", layers="20-10")
    run = build(cfg, tmp_path / "all", True, data=data)
    assert run.x.shape[0] == 60_000 and torch.equal(run.x[-400:], data.valid)
    assert torch.equal(run.x[:59_600], data.train) and torch.equal(run.c[-400:].argmax(1), data.labels["valid"])
    assert build(TrainConfig(data=str(prepared["mnist"])), tmp_path / "paper", True, data=data).x.shape[0] == 59_600
    with pytest.raises(Exception, match="train_split"):
        TrainConfig(data="x", train_split="all")


def test_output_bias_from_the_training_mean_or_zero(prepared, tmp_path):
    from iwae.training.run import build, initialize

    data = datasets.load(prepared["mnist"])
    biases = {}
    for choice in ("mean", "zero"):
        cfg = TrainConfig(data=str(prepared["mnist"]), output_bias=choice, train_subset=500)
        run = build(cfg, tmp_path / choice, True, data=data)
        initialize(run)
        biases[choice] = run.model.buffer.param("decoder.p0.b2").clone()
        assert run.model.buffer.param("encoder.q0.w0").abs().max() > 0  # Glorot weights either way
    assert (biases["zero"] == 0).all() and biases["mean"].min() < -5  # logit(1e-3) at MNIST's empty corners


def test_snapshots_of_every_stage_survive_a_resume(prepared, tmp_path):
    """snapshot_stages keeps the parameters at the start and after each stage in model.pt,
    through an interruption; they leave the run itself unchanged."""
    from iwae.errors import Interrupted
    from iwae.training.loop import Trainer, train
    from iwae.training.run import build, callbacks

    base = dict(data=str(prepared["mnist"]), layers="20-5", k=1, epochs_per_stage=[1, 2], train_subset=200,
                batch_size=20, threads=1)  # fmt: skip
    train(TrainConfig(**base), tmp_path / "plain", quiet=True)
    cfg = TrainConfig(**base, snapshot_stages=True)
    run = build(cfg, tmp_path / "snap", True)
    t = Trainer(run, callbacks(run, progress=False))
    with pytest.raises(Interrupted):
        for i in range(100):
            t.advance("step")
            if i == 15:  # inside the second stage
                run.stop.requested = True
    train(cfg, tmp_path / "snap", quiet=True)
    state = torch.load(tmp_path / "snap" / "model.pt", weights_only=True)
    assert [s["epoch"] for s in state["snapshots"]] == [0, 1, 3]
    assert torch.equal(state["snapshots"][-1]["params"], state["model"]["params"])
    assert not torch.equal(state["snapshots"][0]["params"], state["snapshots"][1]["params"])
    assert torch.equal(state["model"]["params"], _params(tmp_path / "plain"))
