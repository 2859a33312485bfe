"""What a training step would put in a CUDA graph, seen on any device.

`probe_step` runs one step of a run's graphed steps under a dispatch mode that sees every
operation: host reads, tensors made from host data or away from the run's device, random
permutations, random draws from any generator but the run's own, and writes to tensors the
warm-up's snapshot does not restore would all break a capture silently. The tests run it on a CPU for every model family; the GPU check runs it
on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from iwae.training.graphs import GraphedSteps, restore, snapshot, state_tensors

# --------------------------------------------------------------------------- probe

# operations whose result the host has to wait for: inside a capture they fail or freeze
HOST_READS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique", "_unique",
              "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave", "bincount"}  # fmt: skip
HOST_DATA = {"lift_fresh", "lift_fresh_copy"}  # torch.tensor(data): a copy from host memory, frozen by a capture
RANDOM_ORDER = {"randperm", "randint", "multinomial"}  # an epoch's order is drawn once, outside the steps
# random operations that may take no generator at all (the others say so by a Generator argument)
RANDOM = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "native_dropout"}


@dataclass
class StepProbe:
    """What one step does, seen operation by operation as a capture records it."""

    host_reads: list[str] = field(default_factory=list)  # operations the host must wait for
    off_device: list[str] = field(default_factory=list)  # tensors made from host data or away from the device
    random_order: list[str] = field(default_factory=list)  # permutations and index draws
    # random draws from another generator than the run's (the default one, when none is given): the run's
    # seed does not name that noise, and a graph replays the same draws from a generator not registered with it
    foreign_random: list[str] = field(default_factory=list)
    writes_elsewhere: list[str] = field(default_factory=list)  # earlier tensors written, beyond what is restored
    trace: list[tuple] = field(default_factory=list)  # every operation and its non-tensor arguments
    repeatable: bool = False  # from the snapshot again, with garbage in the gradients: the same state

    @property
    def capturable(self) -> bool:
        return not (
            self.host_reads or self.off_device or self.random_order or self.foreign_random or self.writes_elsewhere
        )


def probe_step(steps: GraphedSteps) -> StepProbe:
    """One step of `steps` (at its device-held position, as a graph replays it) run under a
    dispatch mode that sees every operation, with factory functions defaulting to the meta
    device so that a tensor made without the run's device shows up as one; then the same step
    again from the warm-up's snapshot, with NaN in the gradient buffer, which must end in the
    same state. The run is left as it was."""
    state = steps.state
    kept = state_tensors(steps)
    saved = snapshot(steps)
    found = record(steps._body, state.device, writable=[*kept.values(), state.buffer.grad], generator=state.generator)
    after = {name: x.clone() for name, x in kept.items()}
    restore(steps, saved)
    state.buffer.grad.fill_(math.nan)
    steps._body()
    found.repeatable = all(torch.equal(after[name], x) for name, x in kept.items())
    restore(steps, saved)
    return found


def record(
    fn, device: torch.device, writable: list[torch.Tensor] = (), generator: torch.Generator | None = None
) -> StepProbe:
    """Run fn() operation by operation: what a capture of it would find (`probe_step`).
    `writable`: the earlier tensors it may write; `generator`: the run's, the only one its
    random operations may draw from."""
    recorder = _Recorder(device, {_storage(x) for x in writable}, generator)
    with torch.device("meta"), recorder:
        fn()
    return recorder.found


def _storage(x: torch.Tensor) -> int:
    return x.untyped_storage().data_ptr()


class _Recorder(TorchDispatchMode):
    def __init__(self, device: torch.device, allowed: set[int], generator: torch.Generator | None):
        super().__init__()
        self.device, self.allowed, self.generator = device, allowed, generator
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
        if _draws_elsewhere(func, name, args, kwargs, self.generator):
            self.found.foreign_random.append(name)
        for x in written:
            if _storage(x) not in self.made | self.allowed:
                self.found.writes_elsewhere.append(name)
        earlier = {_storage(x) for x in inputs if x.device.type != "meta"}
        self.made |= {_storage(x) for x in outputs if x.device.type != "meta"} - earlier
        self.found.trace.append((str(func), _non_tensors(args, kwargs)))
        return out


def _draws_elsewhere(func, name: str, args: tuple, kwargs: dict, generator: torch.Generator | None) -> bool:
    """Whether the operation is random and draws from another generator than `generator`. The
    generator reaches the dispatcher as a new Python object: its C++ address (`_cdata`) tells."""
    given = [_argument(argument, i, args, kwargs) for i, argument in enumerate(func._schema.arguments)
             if "Generator" in str(argument.type)]  # fmt: skip
    if not given and name not in RANDOM:
        return False
    theirs = next((g for g in given if g is not None), None)
    return theirs is None or generator is None or theirs._cdata != generator._cdata


def _argument(argument, i: int, args: tuple, kwargs: dict):
    return args[i] if i < len(args) else kwargs.get(argument.name)


def _written(func, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors an operation writes: its arguments marked (a!) in its schema."""
    out = []
    for i, argument in enumerate(func._schema.arguments):
        if argument.alias_info is not None and argument.alias_info.is_write:
            out += [x for x in pytree.tree_leaves(_argument(argument, i, args, kwargs)) if isinstance(x, torch.Tensor)]
    return out


def _non_tensors(args: tuple, kwargs: dict) -> tuple:
    """The arguments a capture freezes into the graph, tensors and generators left out."""

    def plain(x):
        return "tensor" if isinstance(x, torch.Tensor) else "generator" if isinstance(x, torch.Generator) else x

    return tuple(pytree.tree_map(plain, list(args))), tuple(sorted((k, repr(pytree.tree_map(plain, v)))
                                                                  for k, v in kwargs.items()))  # fmt: skip
