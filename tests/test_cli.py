"""The command line as a user meets it: help, one-line errors, records that trace a number."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

VERBS = ["fetch", "prepare", "train", "evaluate", "bench"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = run_cli(verb, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def _assert_user_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_user_errors_are_one_line_and_leave_nothing(tmp_path, prepared):
    out = tmp_path / "run"
    _assert_user_error(run_cli("train", "--out", out, "--data", tmp_path / "missing.npz"), "missing.npz")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--k", "0"), "k")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--objective", "nope"), "nope")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--layers", "9-x"), "9-x")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--lr", "-1"), "lr")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--k", "two"), "--k")
    _assert_user_error(run_cli("train", "--out", out, "--data", prepared["mnist"], "--backend", "jax"), "backend")
    _assert_user_error(run_cli("fetch", "cifar"), "cifar")
    assert not out.exists()


def test_corrupt_model_file_is_reported(tmp_path, prepared):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"garbage")
    _assert_user_error(run_cli("evaluate", "--run", run, "--data", prepared["mnist"]), "model.pt")
    assert not (run / "eval.json").exists()


def test_evaluate_flags_come_from_its_config_class(tmp_path):
    from iwae.plan.config import EvalConfig

    help_text = run_cli("evaluate", "--help").stdout
    for f in EvalConfig.option_fields():
        assert "--" + f.name.replace("_", "-") in help_text, f.name
    assert "--samples-figure" not in help_text  # a workflow choice, not an evaluation option
    run = tmp_path / "run"
    _assert_user_error(run_cli("evaluate", "--run", run, "--k", "0"), "k: 0")
    _assert_user_error(run_cli("evaluate", "--run", run, "--backend", "jax"), "backend")


def test_bad_config_file_names_the_key(tmp_path, prepared):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {prepared['mnist']}\nbatchsize: 20\n")
    _assert_user_error(run_cli("train", "--out", tmp_path / "r", "--config", cfg), "batchsize")


def test_train_then_evaluate_records_everything(tmp_path, prepared):
    run = tmp_path / "mnist-1l-iwae-k5-s1"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {prepared['mnist']}\nk: 5\nepochs_per_stage: [1, 1]\ntrain_subset: 200\n")
    result = run_cli("train", "--out", run, "--config", cfg, "--seed", "7", "--quiet")
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", "--run", run, "--k", "100", "--test-points", "40", "--extra-k", "10",
                     "--train-points", "30", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((run / "eval.json").read_text())
    assert record["k"] == 100 and record["test"]["points"] == 40 and record["eval_seed"] == 123
    assert record["test"]["of"] == 10000  # 40 of the 10,000 test points
    assert record["train"]["points"] == 30 and record["train"]["of"] == 200  # drawn from the 200 it saw
    assert record["bounds"]["10"]["log_likelihood"] <= record["test"]["log_likelihood"] + 1.0
    assert len(record["active_units"]["variances"][0]) == 50 and record["active_units"]["threshold"] == 0.01
    training = record["training"]
    assert training["config"]["seed"] == 7 and training["config"]["k"] == 5  # file value, flag override
    assert training["backend"] == "fused" and training["config"]["backend"] == "auto"  # resolved, and as asked
    assert record["evaluation"]["backend"] == "fused" and record["evaluation"]["k"] == 100
    assert training["epochs"] == 2 and training["train_seconds"] > 0
    for env in (training["environment"], record["environment"]):
        assert env["torch"] and env["device"] == "cpu" and "revision" in env["git"]
    assert record["eval_seconds"] > 0
    assert training["data"]["sources"][0]["digest"]


def test_bench_measures_both_backends(tmp_path):
    result = run_cli("bench", "--seconds", "0.01", "--repeats", "1", "--threads", "2", "--out", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    cases = {(r["kind"], r["backend"], r["layers"], r["k"]) for r in rows}
    for backend in ("fused", "autograd"):
        assert {(kind, layers, k) for kind, b, layers, k in cases if b == backend} == {
            *(("train", layers, k) for layers in (1, 2) for k in (1, 5, 50)),
            ("eval", 1, 5000),
            ("eval", 2, 5000),
        }
    assert all(r["best"] > 0 for r in rows) and "fused / this" in result.stdout
