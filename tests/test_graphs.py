"""The steps CUDA graphs replay, checked where there is no GPU: graph-style steps against
eager ones at learning-curve points, runs released without a garbage collection, and the
number of streams a process may hold."""

from __future__ import annotations

import csv
import gc
import weakref

import pytest
import torch

from iwae.bench import synthetic_dataset
from iwae.config import TrainConfig
from iwae.cuda import STREAMS_PER_POOL, run_streams
from iwae.errors import UserError
from iwae.train import Trainer


def test_graph_steps_pause_at_learning_curve_points_as_eager_steps_do(tmp_path):
    """Ten steps per replay, except where a learning-curve point falls in between: the curve
    and the parameters are those of eager steps."""
    data = synthetic_dataset(tmp_path / "small.npz", train=300, test=20)
    cfg = TrainConfig(data=str(data), layers="1", k=2, epochs_per_stage=[1, 1], curve_per_decade=2, threads=1)
    for name, graphed in (("eager", False), ("graphed", True)):
        Trainer(cfg, tmp_path / name, True, False, graphed=graphed).run()
    curves = {}
    for name in ("eager", "graphed"):
        with open(tmp_path / name / "curve.csv") as f:
            curves[name] = [(r["step"], r["train_bound"], r["test_bound"]) for r in csv.DictReader(f)]
    assert curves["graphed"] == curves["eager"] and [s for s, *_ in curves["eager"]] == ["1", "2", "5", "16", "30"]
    params = [torch.load(tmp_path / n / "model.pt", weights_only=True)["model"]["params"] for n in curves]
    assert torch.equal(*params)


@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graph-steps"])
def test_a_finished_run_is_released_without_a_garbage_collection(tmp_path, graphed):
    """No reference cycle holds a trainer (and its steps, and on a GPU their graphs): it ends
    when its last reference goes, not at some later collection."""
    data = synthetic_dataset(tmp_path / "small.npz", train=60, test=20)
    t = Trainer(TrainConfig(data=str(data), epochs_per_stage=[1], threads=1), tmp_path / "run", True, False,
                graphed=graphed)  # fmt: skip
    t.run()
    gone = weakref.ref(t)
    gc.disable()
    try:
        del t
        assert gone() is None
    finally:
        gc.enable()


def test_a_process_holds_at_most_one_stream_per_run():
    """PyTorch hands out its 32 pooled streams in turn: a 33rd run would share a stream with
    the first. Refused before any CUDA call, so it shows here too."""
    with pytest.raises(UserError, match=f"at most {STREAMS_PER_POOL} runs"):
        run_streams(torch.device("cuda"), STREAMS_PER_POOL + 1)
    assert run_streams(torch.device("cpu"), 40) == [None] * 40  # a CPU has no streams to share
