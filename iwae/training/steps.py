"""A training step, and the steps of an epoch taken one by one.

`train_step` is the paper's step on one minibatch: k samples per point, the objective's
gradient (from the backend, fused or autograd; plus a weight prior's in MAP training), an
optimizer step. Training, the benchmark and the tests share that one function. `data_step`
adds what comes before it on the device: the minibatch's rows gathered from the training
set, binarised afresh where the dataset is, and the epoch's running sum after it.

The step strategies (`EagerSteps` here, `iwae.training.graphs.GraphedSteps` on a GPU) see
only a `StepState`: what a step reads and writes, not the run that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iwae.data import datasets
from iwae.estimators.objectives import Objective


@dataclass
class StepState:
    """What a training step reads and writes, all of it on the run's device."""

    x: torch.Tensor  # the training points
    condition: torch.Tensor | None  # their one-hot labels, for a model given the label
    binarize: bool  # binarised afresh at every use (not fixed binarisations, not grey levels)
    batch_size: int
    k: int
    backend: object  # the model's log weights and gradients (iwae.backends)
    buffer: object  # the model's flat parameter and gradient buffer
    objective: Objective
    opt: object  # the optimizer (the step-size pilot swaps it)
    generator: torch.Generator  # the run's one random stream
    prior: object | None = None  # the weight prior of MAP training
    grad_scale: float = 1.0  # reduction 'sum': the batch size (the gradient of the minibatch sum)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @property
    def n_batches(self) -> int:
        return self.x.shape[0] // self.batch_size  # as the official code: no last partial batch


def train_step(
    backend,
    objective: Objective,
    optimizer,
    x: torch.Tensor,
    k: int,
    generator,
    weight_prior=None,
    condition: torch.Tensor | None = None,
    grad_scale: float = 1.0,
) -> torch.Tensor:
    """One step: k samples per point of the minibatch x (given its rows of `condition`, for
    a conditional model), the objective's gradient (plus a weight prior's, in MAP training),
    an optimizer step. The gradient is that of the minibatch mean, times `grad_scale` (the
    batch size for the official code's minibatch sum). Returns the objective per point (B,),
    left on the device."""
    given = {} if condition is None else {"condition": condition}
    fp = backend.forward(x, k, generator, stop_q=objective.stops_q, **given)
    terms = {name: fp.terms[name].detach() for name in objective.terms} if objective.terms else None
    estimate = objective(fp.log_w.detach(), terms)
    coefficients = estimate.coefficients if grad_scale == 1.0 else estimate.coefficients.scaled(grad_scale)
    backend.backward(fp, coefficients)
    if weight_prior is not None:
        weight_prior.add_gradient()
    optimizer.step()
    return estimate.bound


def data_step(state: StepState, rows: torch.Tensor, total: torch.Tensor) -> None:
    """A step on the training points `rows`: gather, a fresh binarisation where the dataset
    is binarised at every use, `train_step`, and the epoch's running sum (on the device)."""
    x = torch.index_select(state.x, 0, rows)
    if state.binarize:
        x = datasets.binarize(x, state.generator)
    c = None if state.condition is None else torch.index_select(state.condition, 0, rows)
    bound = train_step(state.backend, state.objective, state.opt, x, state.k, state.generator, state.prior, c,
                       state.grad_scale)  # fmt: skip
    total += bound.sum()


class EagerSteps:
    """The steps of an epoch as eager operations, the position a host integer."""

    may_sync = True  # mid-epoch checkpoints may read device values
    kind = "eager"

    def __init__(self, state: StepState):
        self.state = state

    def begin(self, perm: torch.Tensor, total: torch.Tensor, first: int) -> None:
        self.perm, self.total = perm, total

    def step(self, i: int, stop: int) -> int:
        """Step i (of the steps short of `stop`); returns how many steps it took: one."""
        batch = self.state.batch_size
        data_step(self.state, self.perm[i * batch : (i + 1) * batch], self.total)
        return 1

    def release(self) -> None:
        pass
