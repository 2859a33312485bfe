"""The steps CUDA graphs replay, checked where there is no GPU: what a capture would record of
one step of every model family (no host reads, no tensors off the device, no permutations,
no random draws but from the run's generator, no writes beyond what the warm-up gives back,
nothing on the host that changes between steps), graph-style steps against eager ones at learning-curve points, runs released
without a garbage collection, and the number of streams a process may hold."""

from __future__ import annotations

import csv
import gc
import weakref

import pytest
import torch

from iwae.bench.speed import synthetic_dataset
from iwae.data import datasets
from iwae.errors import UserError
from iwae.plan.config import TrainConfig
from iwae.system.devices import STREAMS_PER_POOL, run_streams
from iwae.training.loop import Trainer, train
from iwae.training.probe import probe_step, record
from iwae.training.run import Run, build, callbacks, initialize

FAMILIES = {
    "paper-fused": {"layers": "2", "k": 5, "objective": "iwae"},
    "autograd-dreg": {"layers": "1", "k": 4, "objective": "dreg", "backend": "autograd"},
    "random-weights": {"layers": "1", "k": 3, "random": "both"},
    "aevb-adam-map": {"family": "aevb", "layers": "50-5", "objective": "sgvb", "weight_prior": "normal",
                      "batch_size": 10},
    "conditional": {"layers": "1", "k": 3, "condition": "label", "prior": "label"},
}  # fmt: skip


@pytest.fixture(scope="module")
def mnist(prepared):
    return prepared["mnist"], datasets.load(prepared["mnist"])


def _begun(tmp_path, mnist, **options) -> Run:
    """A run with the steps graphs replay (here without a graph), its first epoch begun."""
    path, data = mnist
    run = build(TrainConfig(data=str(path), train_subset=100, threads=1, **options), tmp_path / "run", True,
                data=data, graphed=True)  # fmt: skip
    initialize(run)
    run.steps.begin(torch.randperm(100, generator=run.gen), torch.zeros((), dtype=torch.float64), 0)
    return run


@pytest.mark.parametrize("options", FAMILIES.values(), ids=FAMILIES.keys())
def test_a_step_of_every_family_is_one_a_cuda_graph_can_replay(tmp_path, mnist, options):
    run = _begun(tmp_path, mnist, **options)
    first = probe_step(run.steps)
    assert first.capturable, (first.host_reads, first.off_device, first.random_order, first.foreign_random,
                              first.writes_elsewhere)  # fmt: skip
    assert first.repeatable  # the warm-up's undo gives back all a step depends on; gradients are scratch
    run.opt.lr = run.cfg.learning_rate(1)  # the next stage, at another position
    run.steps.pos.fill_(3)
    assert probe_step(run.steps).trace == first.trace  # nothing the capture would freeze has changed


def test_a_learning_rate_held_on_the_host_would_be_frozen_by_a_capture(tmp_path, mnist):
    """Why the learning rate lives on the device: as a Python float it is an argument of the
    optimizer's kernel, and the trace of the next stage's steps differs from the captured one."""
    run = _begun(tmp_path, mnist, layers="1", k=2)
    run.opt.lr_tensor = None  # as eager steps on a CPU hold it
    first = probe_step(run.steps)
    run.opt.lr = run.cfg.learning_rate(1)
    assert probe_step(run.steps).trace != first.trace


def test_the_probe_sees_what_a_capture_cannot_hold():
    outside, kept = torch.zeros(3), torch.zeros(3)

    def step():
        float(kept.sum())  # a host read
        torch.tensor([1.0, 2.0], device="cpu")  # host data copied in
        torch.zeros(2)  # a tensor made without the run's device
        torch.randperm(3, device="cpu")  # an epoch's order, drawn inside a step
        outside.add_(1.0)  # a tensor nobody restores after the warm-up
        kept.add_(1.0)

    found = record(step, torch.device("cpu"), writable=[kept], generator=torch.Generator())
    assert found.host_reads == ["_local_scalar_dense"] and found.random_order == ["randperm"]
    assert found.off_device == ["lift_fresh", "zeros"] and found.writes_elsewhere == ["add_"]
    assert found.foreign_random == ["randperm"]  # drawn from the default generator
    assert not found.capturable


def test_the_probe_sees_random_draws_from_any_generator_but_the_runs():
    """A random operation given no generator draws from the default one, and one given another
    generator from that one: neither is the run's stream, which the graph registers."""
    run, other = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = torch.full((4,), 0.5)

    def own():
        torch.rand(2, generator=run, device="cpu")
        torch.randn(2, generator=run, device="cpu")
        torch.bernoulli(x, generator=run)
        x.clone().normal_(generator=run)

    def foreign():
        torch.rand(2)  # the default generator: an overload without one
        torch.randn(2, generator=other)  # the same seed, not the same stream
        x.clone().bernoulli_(0.5)  # an in-place draw given none
        torch.rand_like(x)  # an operation that takes no generator at all
        torch.nn.functional.dropout(x, 0.5, training=True)

    clean = record(own, torch.device("cpu"), generator=run)
    assert clean.foreign_random == [] and clean.capturable
    found = record(foreign, torch.device("cpu"), generator=run)
    assert found.foreign_random[:4] == ["rand", "randn", "bernoulli_", "rand_like"]
    assert len(found.foreign_random) == 5 and not found.capturable  # dropout's draw, as this device makes it
    assert record(own, torch.device("cpu")).foreign_random  # no run's generator given: every draw is foreign


def test_graph_steps_pause_at_learning_curve_points_as_eager_steps_do(tmp_path):
    """Ten steps per replay, except where a learning-curve point falls in between: the curve
    and the parameters are those of eager steps."""
    data = synthetic_dataset(tmp_path / "small.npz", train=300, test=20)
    cfg = TrainConfig(data=str(data), layers="1", k=2, epochs_per_stage=[1, 1], curve_per_decade=2, threads=1)
    for name, graphed in (("eager", False), ("graphed", True)):
        train(cfg, tmp_path / name, quiet=True, progress=False, graphed=graphed)
    curves = {}
    for name in ("eager", "graphed"):
        with open(tmp_path / name / "curve.csv") as f:
            curves[name] = [(r["step"], r["train_bound"], r["test_bound"]) for r in csv.DictReader(f)]
    assert curves["graphed"] == curves["eager"] and [s for s, *_ in curves["eager"]] == ["1", "2", "5", "16", "30"]
    params = [torch.load(tmp_path / n / "model.pt", weights_only=True)["model"]["params"] for n in curves]
    assert torch.equal(*params)


@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graph-steps"])
def test_a_finished_run_is_released_without_a_garbage_collection(tmp_path, graphed):
    """No reference cycle holds a trainer or its run (and its steps, and on a GPU their graphs):
    they end when their last reference goes, not at some later collection."""
    data = synthetic_dataset(tmp_path / "small.npz", train=60, test=20)
    run = build(TrainConfig(data=str(data), epochs_per_stage=[1], threads=1), tmp_path / "run", True, graphed=graphed)
    t = Trainer(run, callbacks(run, progress=False))
    while t.advance():
        pass
    t.finish()
    t.release()
    gone = [weakref.ref(t), weakref.ref(run), weakref.ref(run.steps)]
    gc.disable()
    try:
        del t, run
        assert [ref() for ref in gone] == [None, None, None]
    finally:
        gc.enable()


def test_a_process_holds_at_most_one_stream_per_run():
    """PyTorch hands out its 32 pooled streams in turn: a 33rd run would share a stream with
    the first. Refused before any CUDA call, so it shows here too."""
    with pytest.raises(UserError, match=f"at most {STREAMS_PER_POOL} runs"):
        run_streams(torch.device("cuda"), STREAMS_PER_POOL + 1)
    assert run_streams(torch.device("cpu"), 40) == [None] * 40  # a CPU has no streams to share


def test_a_graphed_run_stopped_inside_an_epoch_resumes_bit_identical(tmp_path, monkeypatch):
    """The GPU check's resume, run here: stopped one ten-step replay into the second epoch, its
    checkpoint falls at step 10 of 21; the new trainer replays ten steps, then one, and ends
    bit-identical to the run unstopped. A stop at an epoch's last step (the check's old one)
    leaves the resume nothing to replay, and the record says it was not exercised."""
    from iwae.bench import gpu_report

    data = synthetic_dataset(tmp_path / "small.npz", train=gpu_report.CHECK_POINTS)
    found = gpu_report.resumed_inside_an_epoch(tmp_path / "inside", data, torch.device("cpu"), gpu_report.QUICK)
    assert found["checkpoint"] == {"stage": 2, "epoch": 2, "step": 10, "steps_in_epoch": 21, "steps_left": 11}
    assert found["replays_after_resume"] == [10, 1] and found["resumes"] == 1 and found["exercised"]
    assert found["bitwise_equal"] and found["max_abs_difference"] == 0.0
    monkeypatch.setattr(gpu_report, "STOP_AFTER", gpu_report.CHECK_POINTS // 20)  # the first epoch's last step
    at_the_end = gpu_report.resumed_inside_an_epoch(tmp_path / "end", data, torch.device("cpu"), gpu_report.QUICK)
    assert at_the_end["checkpoint"]["steps_left"] == 0 and not at_the_end["exercised"]
