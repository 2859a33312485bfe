"""Everything CUDA-specific, in one place: a device of its own for each job, and training
steps captured once as a CUDA graph and replayed.

Devices. Snakemake hands out no device ids: with `--resources gpu=N` on a workstation with
several GPUs, a job that asks for "cuda" takes the first device nobody holds, by an
exclusive lock per device (`claim`), held until the process ends, and records it. Where a
scheduler made one device visible (Slurm sets CUDA_VISIBLE_DEVICES), that one is used.

Graphs. At the paper's batch of 20 a step is hundreds of small kernels, and launching them
costs more than running them. `GraphedSteps` captures the whole step (minibatch gather
through a position held on the device, binarisation, forward, backward, Adam with its
learning rate held on the device, the epoch's running sum) once and replays it, so nothing
synchronises with the host inside an epoch. The run's generator is registered with the
graph, so every replay draws fresh noise, continuing the stream the eager steps would use;
the warm-up before capture runs on the run's state and is then undone, so the graphed run
is the run its seed names. `data_step` is the same function on every device; on a CPU it
runs eagerly (`iwae.train.EagerSteps`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import torch

from iwae.errors import UserError

LOCK_ENV = "IWAE_GPU_LOCK_DIR"
_held: list = []  # lock files held for the life of the process


def claim(device: torch.device, wait_minutes: float = 60.0, say=print) -> torch.device:
    """A concrete device for `device`: "cuda" becomes the first free visible GPU."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda", 0)
    return torch.device("cuda", lock_free_device(count, wait_minutes=wait_minutes, say=say))


def _physical_ids(count: int) -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else []
    return ids[:count] if len(ids) >= count else [str(i) for i in range(count)]


def lock_free_device(
    count: int, lock_dir: str | None = None, wait_minutes: float = 60.0, poll_s: float = 5.0, say=print
) -> int:
    """The index of the first of `count` devices whose lock this process could take."""
    directory = Path(lock_dir or os.environ.get(LOCK_ENV) or tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = time.monotonic() + wait_minutes * 60
    told = False
    while True:
        for index, physical in enumerate(_physical_ids(count)):
            f = open(directory / f"iwae-gpu-{host}-{physical}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            _held.append(f)
            return index
        if time.monotonic() > deadline:
            raise UserError(f"device: all {count} GPUs are held by other jobs (locks in {directory})")
        if not told:
            say(f"waiting for a free GPU (all {count} are held; locks in {directory})")
            told = True
        time.sleep(poll_s)


def graphs_apply(cfg, device: torch.device) -> str | None:
    """Why training steps will not be replayed as CUDA graphs (None: they will)."""
    if device.type != "cuda":
        return "not on a GPU"
    if not cfg.cuda_graphs:
        return "cuda_graphs is off"
    if cfg.optimizer != "adam":
        return f"optimizer {cfg.optimizer!r} computes its step size on the host"
    return None


class GraphedSteps:
    """The steps of a run's epochs, captured once as a CUDA graph and replayed."""

    may_sync = False  # checkpoints at epoch ends only: no host reads inside an epoch

    def __init__(self, trainer, capture: bool = True):
        """capture=False runs the same steps (and the same warm-up and undo) without a graph:
        on a CPU, where the tests check them against the eager steps."""
        self.trainer, self.capture = trainer, capture
        device, batch = trainer.device, trainer.cfg.batch_size
        self.perm = torch.empty(trainer.x.shape[0], dtype=torch.long, device=device)
        self.rows = self.perm[: trainer.n_batches * batch].view(trainer.n_batches, batch)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.graph = None

    def begin(self, perm: torch.Tensor, total: torch.Tensor, first: int) -> None:
        self.perm.copy_(perm)
        self.total.copy_(total)
        self.pos.fill_(first)
        if self.graph is None and not getattr(self, "_warmed", False):
            self._capture()

    def step(self, i: int) -> None:
        if self.graph is None:  # not captured (capture=False)
            self._body()
            return
        self.graph.replay()
        self.trainer.opt.t += 1  # the host's count of Adam's steps (the device keeps its own)

    def _body(self) -> None:
        from iwae.train import data_step

        data_step(self.trainer, self.rows.index_select(0, self.pos).view(-1), self.total)
        self.pos += 1

    def _capture(self) -> None:
        t = self.trainer
        saved = _snapshot(t, self)
        on_gpu = t.device.type == "cuda"
        if on_gpu:
            side = torch.cuda.Stream(t.device)
            side.wait_stream(torch.cuda.current_stream(t.device))
        with torch.cuda.stream(side) if on_gpu else contextlib.nullcontext():  # warm-up: kernels chosen,
            for _ in range(3):  # workspaces and memory allocated; then undone
                self.pos.zero_()  # a valid batch, wherever the epoch begins (a resumed one: near its end)
                self._body()
        if on_gpu:
            torch.cuda.current_stream(t.device).wait_stream(side)
        _restore(t, self, saved)
        self._warmed = True
        if not (self.capture and on_gpu):
            return
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(t.gen)
        with torch.cuda.graph(graph):
            self._body()
        _restore(t, self, saved)  # the capture ran nothing, but counted a step on the host
        self.graph = graph


def _snapshot(t, steps: GraphedSteps) -> dict:
    opt = t.opt
    return {
        "params": t.model.buffer.data.clone(),
        "m": opt.m.clone(),
        "v": opt.v.clone(),
        "step": opt._step_tensor.clone(),
        "t": opt.t,
        "generator": t.gen.get_state(),
        "total": steps.total.clone(),
        "pos": steps.pos.clone(),
    }


def _restore(t, steps: GraphedSteps, saved: dict) -> None:
    opt = t.opt
    t.model.buffer.data.copy_(saved["params"])
    opt.m.copy_(saved["m"])
    opt.v.copy_(saved["v"])
    opt._step_tensor.copy_(saved["step"])
    opt.t = saved["t"]
    t.gen.set_state(saved["generator"])
    steps.total.copy_(saved["total"])
    steps.pos.copy_(saved["pos"])
