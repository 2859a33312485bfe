"""Training steps captured as CUDA graphs and replayed.

At the paper's batch of 20 a step is hundreds of small kernels, and launching them costs
more than running them. `GraphedSteps` captures the whole step (minibatch gather through a
position held on the device, binarisation, forward, backward, Adam with its learning rate
held on the device, the epoch's running sum) as a graph of STEPS_PER_GRAPH steps and one of
a single step, and replays them, so nothing synchronises with the host inside an epoch and
the host launches one graph per ten steps. The run's generator is registered with the
graphs, so every replay draws fresh noise, continuing the stream the eager steps would use;
the warm-up before capture runs on the run's state and is then undone, so the graphed run is
the run its seed names. Each graph is captured on its run's own stream
(`iwae.system.devices.run_streams`) with a cuBLAS workspace of its own
(`GraphedSteps._record`), and ends when its run releases it, not at a garbage collection.
Every warm-up runs on one stream of the high-priority pool, never a run's. The steps
themselves are `iwae.training.steps.data_step`, the same function on every device; on a CPU
they run eagerly (`EagerSteps`), and `iwae.training.probe` shows what a graph would record.
"""

from __future__ import annotations

import contextlib
import gc

import torch

from iwae.system.devices import on
from iwae.training.steps import StepState, data_step

NOT_ON_A_GPU = "not on a GPU"


def graphs_apply(cfg, device: torch.device) -> str | None:
    """Why training steps will not be replayed as CUDA graphs (None: they will)."""
    if device.type != "cuda":
        return NOT_ON_A_GPU
    if not cfg.cuda_graphs:
        return "cuda_graphs is off"
    if cfg.optimizer != "adam":
        return f"optimizer {cfg.optimizer!r} computes its step size on the host"
    return None


_warmup_streams: dict = {}


def _warmup_stream(device: torch.device):
    """The one stream every warm-up runs on: from the high-priority pool, never a run's."""
    if device not in _warmup_streams:
        _warmup_streams[device] = torch.cuda.Stream(device, priority=-1)
    return _warmup_streams[device]


# --------------------------------------------------------------------------- graphed steps

STEPS_PER_GRAPH = 10  # divides both MNIST's 2,980 and Omniglot's 1,150 steps per epoch


class GraphedSteps:
    """The steps of a run's epochs, captured once as CUDA graphs and replayed: one graph of
    STEPS_PER_GRAPH steps in a row, and one of a single step for what is left of an epoch."""

    may_sync = False  # checkpoints at epoch ends only: no host reads inside an epoch

    def __init__(self, state: StepState, capture: bool = True):
        """capture=False runs the same steps (and the same warm-up and undo) without a graph:
        on a CPU, where the tests check them against the eager steps."""
        self.state = state
        self.capture = capture
        device, batch, batches = state.device, state.batch_size, state.n_batches
        self.perm = torch.empty(state.x.shape[0], dtype=torch.long, device=device)
        self.rows = self.perm[: batches * batch].view(batches, batch)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # steps per replay -> graph
        self.stream = None  # the run's stream: graphs are captured and replayed there
        self.warmed = False

    @property
    def kind(self) -> str:
        return "cuda graphs" if self.capture else "the steps of cuda graphs, not captured"

    def begin(self, perm: torch.Tensor, total: torch.Tensor, first: int) -> None:
        self.perm.copy_(perm)
        self.total.copy_(total)
        self.pos.fill_(first)
        if not self.warmed:
            self._capture()

    def step(self, i: int, stop: int) -> int:
        """Steps i, i + 1, ... short of `stop`: as many as one replay takes. Returns how many."""
        n = STEPS_PER_GRAPH if stop - i >= STEPS_PER_GRAPH else 1
        graph = self.graphs.get(n)
        if graph is None:  # not captured (capture=False)
            for _ in range(n):
                self._body()
            return n
        graph.replay()
        self.state.opt.t += n  # the host's count of Adam's steps (the device keeps its own)
        return n

    def release(self) -> None:
        """End the graphs now, once the run's stream is done with them, rather than at some
        later garbage collection, perhaps while other graphs replay or during a capture."""
        if self.graphs:
            self.stream.synchronize()
            for graph in self.graphs.values():
                graph.reset()
            self.graphs.clear()

    def _body(self) -> None:
        data_step(self.state, self.rows.index_select(0, self.pos).view(-1), self.total)
        self.pos += 1

    def _capture(self) -> None:
        device = self.state.device
        saved = snapshot(self)
        with _no_garbage_collection():
            self._warm_up()
            restore(self, saved)
            self.warmed = True
            if not (self.capture and device.type == "cuda"):
                return
            self.stream = torch.cuda.current_stream(device)
            if self.stream == torch.cuda.default_stream(device):
                raise RuntimeError("graphed steps run on a stream of their own (iwae.system.devices.run_streams)")
            for steps in (1, STEPS_PER_GRAPH):
                self.graphs[steps] = self._record(steps)
                restore(self, saved)  # the capture ran nothing, but counted steps on the host

    def _warm_up(self) -> None:
        """Three steps from the epoch's first batch (a valid one, wherever the epoch begins),
        so that kernels are chosen and memory allocated before the capture; then undone."""
        device = self.state.device
        on_gpu = device.type == "cuda"
        side = _warmup_stream(device) if on_gpu else None
        if on_gpu:
            side.wait_stream(torch.cuda.current_stream(device))
        with on(side):
            for _ in range(3):
                self.pos.zero_()
                self._body()
        if on_gpu:
            torch.cuda.current_stream(device).wait_stream(side)

    def _record(self, steps: int):
        """`steps` steps captured as one graph on the run's stream, with a cuBLAS workspace of
        its own: cuBLAS keeps one per (handle, stream), so graphs captured on one stream would
        share it and race when replayed at once. Cleared before, the capture allocates its own
        in the graph's private memory, which lives as long as the graph; cleared after, no
        later capture or eager step inherits it (torch/_inductor/cudagraph_trees.py does the
        same around its captures, `clear_cublas_manager`)."""
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.state.generator)  # fresh noise at every replay
        torch.cuda.synchronize(self.state.device)  # nothing in flight uses a workspace dropped here
        torch._C._cuda_clearCublasWorkspaces()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                for _ in range(steps):
                    self._body()
        finally:
            torch._C._cuda_clearCublasWorkspaces()
        return graph


@contextlib.contextmanager
def _no_garbage_collection():
    """No garbage collection during warm-up and capture: a cycle collected then could free
    tensors, or end another graph, in the middle of a capture."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def state_tensors(steps: GraphedSteps) -> dict[str, torch.Tensor]:
    """What a step changes that the warm-up must give back (with the generator's state and
    the host's step count): parameters, the optimizer's state on the device, the epoch's sum
    and position. The gradient buffer is not among them: every step writes it afresh before
    reading it."""
    state = steps.state
    return {"params": state.buffer.data, **state.opt.device_state(), "total": steps.total, "pos": steps.pos}


def snapshot(steps: GraphedSteps) -> dict:
    tensors = {name: x.clone() for name, x in state_tensors(steps).items()}
    return {"tensors": tensors, "t": steps.state.opt.t, "generator": steps.state.generator.get_state()}


def restore(steps: GraphedSteps, saved: dict) -> None:
    for name, x in state_tensors(steps).items():
        x.copy_(saved["tensors"][name])
    steps.state.opt.t = saved["t"]
    steps.state.generator.set_state(saved["generator"])
