"""Finished runs in Python: `iwae.load_run` and the model's answers, against the CLI's."""

from __future__ import annotations

import json

import pytest
import torch

import iwae
from iwae.errors import UserError

from conftest import run_cli


@pytest.fixture(scope="module")
def finished(prepared, tmp_path_factory):
    """A run trained and evaluated through the command line, as the workflow does."""
    run = tmp_path_factory.mktemp("runs") / "mnist-1l-iwae-k5-s1"
    args = ["--data", prepared["mnist"], "--layers", "1", "--k", "5", "--epochs-per-stage", "1",
            "--train-subset", "500", "--threads", "2", "--quiet"]  # fmt: skip
    assert run_cli("train", "--out", run, *args).returncode == 0
    result = run_cli("evaluate", "--run", run, "--model", run / "model.pt", "--data", prepared["mnist"],
                     "--out", run / "eval.json", "--k", "100", "--test-points", "20", "--threads", "2", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


def test_load_run_gives_its_records_and_a_model_that_answers(finished, prepared):
    run = iwae.load_run(finished)
    assert run.config["k"] == 5 and run.train["epochs"] == 1 and run.eval["k"] == 100 and run.dataset == "mnist"
    x = run.test_set(prepared["mnist"])
    assert x.shape == (10000, 784) and set(x.unique().tolist()) == {0.0, 1.0}
    g = torch.Generator().manual_seed(0)
    assert run.log_weights(x[:3], 7, g).shape == (7, 3)
    assert run.sample(4, g).shape == (4, 784) and run.reconstruct(x[:2], g).shape == (2, 784)
    assert [m.shape for m in run.posterior_means(x[:5], g)] == [(5, 50)]
    # L_k of the same points as the evaluation, with the evaluation's k: close to its record
    from iwae.data.datasets import subset

    points = x[subset(10000, 20)]
    ll = run.log_likelihood(points, k=100)
    assert ll.dtype == torch.float64 and ll.shape == (20,)
    assert abs(ll.mean().item() - run.eval["test"]["log_likelihood"]) < 1.0


def test_load_run_refuses_what_is_not_a_finished_run(finished, tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        iwae.load_run(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.pt").write_bytes(b"not a model")
    with pytest.raises(UserError, match=r"broken/model.pt: not a model file") as err:
        iwae.load_run(broken)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save({"weights": torch.zeros(3)}, foreign / "model.pt")
    with pytest.raises(UserError, match="not a model file written by this version"):
        iwae.load_run(foreign)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.pt").write_bytes((finished / "model.pt").read_bytes())
    (copy / "eval.json").write_text("{")
    with pytest.raises(UserError, match="eval.json: not a readable JSON record"):
        iwae.load_run(copy)
    assert json.loads((finished / "train.json").read_text())["run"] == finished.name
