"""Everything CUDA-specific, in one place: a device of its own for each job, a stream of its
own for each run, and training steps captured as CUDA graphs and replayed.

Devices. Snakemake hands out no device ids: with `--resources gpu=N` on a workstation with
several GPUs, a job that asks for "cuda" takes the first device nobody holds, by an
exclusive lock per device (`claim`), held until the process ends, and records it. Where a
scheduler made one device visible (Slurm sets CUDA_VISIBLE_DEVICES), that one is used.

Streams. PyTorch hands out the 32 streams of its pool in turn (c10/cuda/CUDAStream.cpp,
`kStreamsPerPool`, `get_idx`), so a 33rd stream is the first again and two runs on one
stream take turns. `run_streams` makes a process's run streams together and refuses more
runs than the pool holds; every warm-up runs on one stream of the high-priority pool.

Graphs. At the paper's batch of 20 a step is hundreds of small kernels, and launching them
costs more than running them. `GraphedSteps` captures the whole step (minibatch gather
through a position held on the device, binarisation, forward, backward, Adam with its
learning rate held on the device, the epoch's running sum) as a graph of STEPS_PER_GRAPH
steps and one of a single step, and replays them, so nothing synchronises with the host
inside an epoch and the host launches one graph per ten steps. The run's generator is
registered with the graphs, so every replay draws fresh noise, continuing the stream the
eager steps would use; the warm-up before capture runs on the run's state and is then
undone, so the graphed run is the run its seed names. Each graph is captured on its run's
own stream with a cuBLAS workspace of its own (`GraphedSteps._record`), and ends when its
run releases it, not at a garbage collection. `probe_step` shows what a step would put in a
graph, on any device. `data_step` is the same function on every device; on a CPU it runs
eagerly (`iwae.train.EagerSteps`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import math
import os
import socket
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

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


# --------------------------------------------------------------------------- streams

STREAMS_PER_POOL = 32  # c10/cuda/CUDAStream.cpp: kStreamsPerPool, handed out in turn
_warmup_streams: dict = {}


def run_streams(device: torch.device, count: int) -> list:
    """A stream of its own for each of `count` runs (None each off a GPU), after the work the
    current stream has queued. They are made together, so none repeats; more runs than the
    pool holds would share streams, and two runs on one stream take turns."""
    if device.type != "cuda":
        return [None] * count
    if count > STREAMS_PER_POOL:
        raise UserError(
            f"a process trains at most {STREAMS_PER_POOL} runs on a GPU, one per CUDA stream, not {count}: "
            f"set compute.pack to {STREAMS_PER_POOL} or fewer"
        )
    streams = [torch.cuda.Stream(device) for _ in range(count)]
    if len({s.cuda_stream for s in streams}) < count:
        raise RuntimeError(f"{count} CUDA streams asked for, fewer distinct ones handed out")
    for stream in streams:
        stream.wait_stream(torch.cuda.current_stream(device))
    return streams


def on(stream):
    """Make `stream` current (nothing to do off a GPU, where `stream` is None)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


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

    def __init__(self, trainer, capture: bool = True):
        """capture=False runs the same steps (and the same warm-up and undo) without a graph:
        on a CPU, where the tests check them against the eager steps."""
        self._trainer = weakref.ref(trainer)  # the trainer holds its steps, not the reverse
        self.capture = capture
        device, batch = trainer.device, trainer.cfg.batch_size
        self.perm = torch.empty(trainer.x.shape[0], dtype=torch.long, device=device)
        self.rows = self.perm[: trainer.n_batches * batch].view(trainer.n_batches, batch)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # steps per replay -> graph
        self.stream = None  # the run's stream: graphs are captured and replayed there
        self.warmed = False

    @property
    def trainer(self):
        return self._trainer()

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
        self.trainer.opt.t += n  # the host's count of Adam's steps (the device keeps its own)
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
        from iwae.train import data_step

        data_step(self.trainer, self.rows.index_select(0, self.pos).view(-1), self.total)
        self.pos += 1

    def _capture(self) -> None:
        t = self.trainer
        saved = _snapshot(t, self)
        with _no_garbage_collection():
            self._warm_up()
            _restore(t, self, saved)
            self.warmed = True
            if not (self.capture and t.device.type == "cuda"):
                return
            self.stream = torch.cuda.current_stream(t.device)
            if self.stream == torch.cuda.default_stream(t.device):
                raise RuntimeError("graphed steps run on a stream of their own (iwae.cuda.run_streams)")
            for steps in (1, STEPS_PER_GRAPH):
                self.graphs[steps] = self._record(steps)
                _restore(t, self, saved)  # the capture ran nothing, but counted steps on the host

    def _warm_up(self) -> None:
        """Three steps from the epoch's first batch (a valid one, wherever the epoch begins),
        so that kernels are chosen and memory allocated before the capture; then undone."""
        t = self.trainer
        on_gpu = t.device.type == "cuda"
        side = _warmup_stream(t.device) if on_gpu else None
        if on_gpu:
            side.wait_stream(torch.cuda.current_stream(t.device))
        with on(side):
            for _ in range(3):
                self.pos.zero_()
                self._body()
        if on_gpu:
            torch.cuda.current_stream(t.device).wait_stream(side)

    def _record(self, steps: int):
        """`steps` steps captured as one graph on the run's stream, with a cuBLAS workspace of
        its own: cuBLAS keeps one per (handle, stream), so graphs captured on one stream would
        share it and race when replayed at once. Cleared before, the capture allocates its own
        in the graph's private memory, which lives as long as the graph; cleared after, no
        later capture or eager step inherits it (torch/_inductor/cudagraph_trees.py does the
        same around its captures, `clear_cublas_manager`)."""
        t = self.trainer
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(t.gen)  # fresh noise at every replay
        torch.cuda.synchronize(t.device)  # nothing in flight uses a workspace dropped here
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


def state_tensors(t, steps: GraphedSteps) -> dict[str, torch.Tensor]:
    """What a step changes that the warm-up must give back (with the generator's state and
    the host's step count): parameters, Adam's moments and step, the epoch's sum and position.
    The gradient buffer is not among them: every step writes it afresh before reading it."""
    opt = t.opt
    return {"params": t.model.buffer.data, "m": opt.m, "v": opt.v, "step": opt._step_tensor, "total": steps.total,
            "pos": steps.pos}  # fmt: skip


def _snapshot(t, steps: GraphedSteps) -> dict:
    tensors = {name: x.clone() for name, x in state_tensors(t, steps).items()}
    return {"tensors": tensors, "t": t.opt.t, "generator": t.gen.get_state()}


def _restore(t, steps: GraphedSteps, saved: dict) -> None:
    for name, x in state_tensors(t, steps).items():
        x.copy_(saved["tensors"][name])
    t.opt.t = saved["t"]
    t.gen.set_state(saved["generator"])


# --------------------------------------------------------------------------- probe

# operations whose result the host has to wait for: inside a capture they fail or freeze
HOST_READS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique", "_unique",
              "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave", "bincount"}  # fmt: skip
HOST_DATA = {"lift_fresh", "lift_fresh_copy"}  # torch.tensor(data): a copy from host memory, frozen by a capture
RANDOM_ORDER = {"randperm", "randint", "multinomial"}  # an epoch's order is drawn once, outside the steps


@dataclass
class StepProbe:
    """What one step does, seen operation by operation as a capture records it."""

    host_reads: list[str] = field(default_factory=list)  # operations the host must wait for
    off_device: list[str] = field(default_factory=list)  # tensors made from host data or away from the device
    random_order: list[str] = field(default_factory=list)  # permutations and index draws
    writes_elsewhere: list[str] = field(default_factory=list)  # earlier tensors written, beyond what is restored
    trace: list[tuple] = field(default_factory=list)  # every operation and its non-tensor arguments
    repeatable: bool = False  # from the snapshot again, with garbage in the gradients: the same state

    @property
    def capturable(self) -> bool:
        return not (self.host_reads or self.off_device or self.random_order or self.writes_elsewhere)


def probe_step(steps: GraphedSteps) -> StepProbe:
    """One step of `steps` (at its device-held position, as a graph replays it) run under a
    dispatch mode that sees every operation, with factory functions defaulting to the meta
    device so that a tensor made without the run's device shows up as one; then the same step
    again from the warm-up's snapshot, with NaN in the gradient buffer, which must end in the
    same state. The run is left as it was."""
    t = steps.trainer
    kept = state_tensors(t, steps)
    saved = _snapshot(t, steps)
    found = record(steps._body, t.device, writable=[*kept.values(), t.model.buffer.grad])
    after = {name: x.clone() for name, x in kept.items()}
    _restore(t, steps, saved)
    t.model.buffer.grad.fill_(math.nan)
    steps._body()
    found.repeatable = all(torch.equal(after[name], x) for name, x in kept.items())
    _restore(t, steps, saved)
    return found


def record(fn, device: torch.device, writable: list[torch.Tensor] = ()) -> StepProbe:
    """Run fn() operation by operation: what a capture of it would find (`probe_step`).
    `writable`: the earlier tensors it may write."""
    recorder = _Recorder(device, {_storage(x) for x in writable})
    with torch.device("meta"), recorder:
        fn()
    return recorder.found


def _storage(x: torch.Tensor) -> int:
    return x.untyped_storage().data_ptr()


class _Recorder(TorchDispatchMode):
    def __init__(self, device: torch.device, allowed: set[int]):
        super().__init__()
        self.device, self.allowed = device, allowed
        self.made: set[int] = set()  # storages made inside the step: its temporaries
        self.found = StepProbe()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        inputs = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        elsewhere = name in HOST_DATA or any(x.device != self.device for x in inputs)
        if elsewhere:  # noted before the operation runs: it may fail on such inputs
            self.found.off_device.append(name)
        written = [x for x in _written(func, args, kwargs) if x.device.type != "meta"]
        out = func(*args, **kwargs)
        outputs = [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]
        if not elsewhere and any(x.device != self.device for x in outputs):
            self.found.off_device.append(name)
        if name in HOST_READS:
            self.found.host_reads.append(name)
        if name in RANDOM_ORDER:
            self.found.random_order.append(name)
        for x in written:
            if _storage(x) not in self.made | self.allowed:
                self.found.writes_elsewhere.append(name)
        earlier = {_storage(x) for x in inputs if x.device.type != "meta"}
        self.made |= {_storage(x) for x in outputs if x.device.type != "meta"} - earlier
        self.found.trace.append((str(func), _non_tensors(args, kwargs)))
        return out


def _written(func, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an operation writes: its arguments marked (a!) in its schema."""
    out = []
    for i, argument in enumerate(func._schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            value = args[i] if i < len(args) else kwargs.get(argument.name)
            out += [x for x in pytree.tree_leaves(value) if isinstance(x, torch.Tensor)]
    return out


def _non_tensors(args: tuple, kwargs: dict) -> tuple:
    """The arguments a capture freezes into the graph, tensors and generators left out."""

    def plain(x):
        return "tensor" if isinstance(x, torch.Tensor) else "generator" if isinstance(x, torch.Generator) else x

    return tuple(pytree.tree_map(plain, list(args))), tuple(sorted((k, repr(pytree.tree_map(plain, v)))
                                                                  for k, v in kwargs.items()))  # fmt: skip
