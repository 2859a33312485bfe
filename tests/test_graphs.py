"""The steps CUDA graphs replay, checked where there is no GPU: runs released without a
garbage collection, and the number of streams a process may hold."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from iwae.bench import synthetic_dataset
from iwae.config import TrainConfig
from iwae.cuda import STREAMS_PER_POOL, run_streams
from iwae.errors import UserError
from iwae.train import Trainer


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
