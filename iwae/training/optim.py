"""Optimizers on a model's flat parameter buffer, ascending the objective, and the weight
prior of MAP training.

Three, selected by the `optimizer` option (`make`):

- "adam" (the paper): Kingma & Ba's Adam with bias correction, beta1 0.9, beta2 0.999,
  eps 1e-4 added to the bias-corrected root second moment. One fused kernel per step.
- "adam-official": the update of the official Theano code (optimizers.py): the second
  moment starts at ones, not zeros; the step uses the moments *before* the current gradient
  (Theano's updates are simultaneous), so the first step moves nothing; the step size is
  lr * sqrt(1 - beta2^t) / (1 - beta1^t) with t counted from 1. The official code also
  ran with beta1 = 0.99, which is the separate `adam_beta1` option.
- "adagrad" (Kingma & Welling): params += lr * g / (sqrt(sum of g^2) + 1e-8), the first
  `adagrad_warmup` steps only accumulating the squared gradients (Kingma's code).

`WeightPrior` adds the gradient of a N(0, I) prior on the weight matrices, scaled by 1 / N,
to each step's gradient (Kingma & Welling's MAP training).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.plan.config import OPTIMIZERS as VARIANTS


class Adam:
    def __init__(
        self,
        params: Tensor,
        grads: Tensor,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-4,
        variant: str = "adam",
        lr_on_device: bool = False,
    ):
        """`lr_on_device`: the fused kernel reads the learning rate from a device tensor, so
        that a step captured in a CUDA graph follows the schedule (used on GPUs, graphed or
        not, so that graphed and eager steps are the same arithmetic). The CUDA kernel reads a
        float32 tensor; the CPU one reads any tensor as a double, so there it is a float64,
        the very rate a Python float gives."""
        if variant not in VARIANTS or variant == "adagrad":
            raise UserError(f"optimizer: unknown variant {variant!r} (expected one of {', '.join(VARIANTS)})")
        self.params, self.grads = params, grads
        self.beta1, self.beta2, self.eps, self.variant = beta1, beta2, eps, variant
        dtype = torch.float32 if params.device.type == "cuda" else torch.float64
        self.lr_tensor = torch.tensor(lr, dtype=dtype, device=params.device) if lr_on_device else None
        self.lr = lr
        self.m = torch.zeros_like(params)
        self.v = torch.ones_like(params) if variant == "adam-official" else torch.zeros_like(params)
        # the fused kernel keeps its step count in a tensor; `t` mirrors it on the host
        self.t = 1 if variant == "adam-official" else 0
        self._step_tensor = torch.zeros((), dtype=torch.float32, device=params.device)
        self._fused = variant == "adam" and hasattr(torch, "_fused_adam_")

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value
        if self.lr_tensor is not None:
            self.lr_tensor.fill_(value)

    def step(self) -> None:
        if self.variant == "adam-official":
            self._official_step()
        elif self._fused:
            self._step_tensor += 1  # the kernel reads the step count, it does not advance it
            torch._fused_adam_(
                [self.params], [self.grads], [self.m], [self.v], [], [self._step_tensor],
                lr=self.lr if self.lr_tensor is None else self.lr_tensor, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0, eps=self.eps,
                amsgrad=False, maximize=True,
            )  # fmt: skip
            self.t += 1
        else:
            self.reference_step()

    def reference_step(self) -> None:
        """Adam in plain tensor operations (the fused kernel's specification)."""
        self.t += 1
        self._step_tensor.fill_(self.t)
        g = self.grads
        self.m.lerp_(g, 1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        bias1 = 1.0 - self.beta1**self.t
        bias2 = 1.0 - self.beta2**self.t
        denom = (self.v.sqrt() / math.sqrt(bias2)).add_(self.eps)
        self.params.addcdiv_(self.m, denom, value=self.lr / bias1)

    def _official_step(self) -> None:
        alpha = self.lr * math.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        self.params.addcdiv_(self.m, self.v.sqrt().add_(self.eps), value=alpha)
        g = self.grads
        self.m.mul_(self.beta1).add_(g, alpha=1.0 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
        self.t += 1

    def state_dict(self) -> dict:
        return {"variant": self.variant, "m": self.m.clone(), "v": self.v.clone(), "t": self.t}

    def device_state(self) -> dict[str, Tensor]:
        """The tensors a step changes on the device (a CUDA graph's warm-up gives them back):
        the moments and the step count the fused kernel keeps."""
        return {"m": self.m, "v": self.v, "step": self._step_tensor}

    def load_state_dict(self, state: dict) -> None:
        if state["variant"] != self.variant:
            raise UserError(f"optimizer state is for {state['variant']!r}, not {self.variant!r}")
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.t = int(state["t"])
        self._step_tensor.fill_(self.t)


class Adagrad:
    EPS = 1e-8

    def __init__(self, params: Tensor, grads: Tensor, lr: float = 0.01, warmup: int = 100):
        self.params, self.grads, self.lr, self.warmup = params, grads, lr, warmup
        self.variant = "adagrad"
        self.sum_sq = torch.zeros_like(params)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        self.sum_sq.addcmul_(self.grads, self.grads)
        if self.t > self.warmup:
            self.params.addcdiv_(self.grads, self.sum_sq.sqrt().add_(self.EPS), value=self.lr)

    def state_dict(self) -> dict:
        return {"variant": self.variant, "sum_sq": self.sum_sq.clone(), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        if state["variant"] != self.variant:
            raise UserError(f"optimizer state is for {state['variant']!r}, not {self.variant!r}")
        self.sum_sq.copy_(state["sum_sq"])
        self.t = int(state["t"])


def make(cfg, params: Tensor, grads: Tensor, lr: float | None = None, lr_on_device: bool = False):
    """The optimizer a training configuration names, on a flat buffer."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adagrad":
        return Adagrad(params, grads, lr, cfg.adagrad_warmup)
    return Adam(params, grads, lr, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, cfg.optimizer, lr_on_device)


class WeightPrior:
    """The gradient of log N(W; 0, I) over the weight matrices (not the biases), times
    `scale`. Kingma & Welling ascend (N / M) sum_batch L(x_i) + log p(theta); the objectives
    here give the gradient of the minibatch *mean*, 1 / N times theirs, so the prior's
    gradient is added with scale 1 / N (Kingma's code adds M / N times it to the gradient
    of the minibatch sum, the same direction at M times the size)."""

    def __init__(self, buffer, scale: float):
        self.buffer, self.scale = buffer, scale
        self.mask = torch.zeros_like(buffer.data)
        for name, where in buffer.slices.items():
            if re.search(r"\.w\d+$", name):
                self.mask[where] = 1.0

    def add_gradient(self) -> None:
        self.buffer.grad.addcmul_(self.mask, self.buffer.data, value=-self.scale)
