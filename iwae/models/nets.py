"""Parameters on one flat buffer, and tanh networks on it: for autograd and hand-written.

All parameters of a model live in one flat tensor and all gradients in another, so the
optimizer is one fused kernel, and zeroing and checkpointing are one operation each. Both
backends (`iwae.backends`) work on the same buffer: autograd through `ParameterBuffer.leaves`
(leaf tensors that share its storage and accumulate their gradients into `grad`), the fused
backend through `TanhMLP`, whose hand-written backward pass writes every gradient in place
without autograd's bookkeeping. At the batch sizes of the paper (20 points) that bookkeeping,
not arithmetic, dominates a training step. The hand-written passes are checked against
autograd in the tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class ParameterBuffer:
    """One flat tensor of parameters and one of gradients, handed out as named views."""

    def __init__(self, sizes: list[tuple[str, tuple[int, ...]]], device, dtype=torch.float32):
        total = sum(math.prod(shape) for _, shape in sizes)
        self.data = torch.zeros(total, device=device, dtype=dtype)
        self.grad = torch.zeros(total, device=device, dtype=dtype)
        self.slices: dict[str, slice] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        offset = 0
        for name, shape in sizes:
            if name in self.slices:
                raise ValueError(f"duplicate parameter name {name!r}")
            n = math.prod(shape)
            self.slices[name] = slice(offset, offset + n)
            self.shapes[name] = tuple(shape)
            offset += n

    def param(self, name: str) -> Tensor:
        return self.data[self.slices[name]].view(self.shapes[name])

    def grad_of(self, name: str) -> Tensor:
        return self.grad[self.slices[name]].view(self.shapes[name])

    def leaves(self) -> dict[str, Tensor]:
        """Every parameter as an autograd leaf that shares this buffer's storage (so the
        optimizer's in-place updates are seen) and accumulates its gradient into the matching
        view of `grad` (so zero `grad` before each backward pass)."""
        out = {}
        for name in self.slices:
            leaf = self.param(name).detach().requires_grad_()
            leaf.grad = self.grad_of(name)
            out[name] = leaf
        return out

    def span(self, prefix: str) -> slice:
        """The contiguous range of all parameters whose names start with `prefix`."""
        chosen = [s for name, s in self.slices.items() if name.startswith(prefix)]
        if not chosen:
            raise KeyError(prefix)
        start, stop = min(s.start for s in chosen), max(s.stop for s in chosen)
        if stop - start != sum(s.stop - s.start for s in chosen):
            raise ValueError(f"parameters {prefix!r}* are not contiguous")
        return slice(start, stop)


class TanhMLP:
    """x -> tanh(x W1 + b1) -> ... -> h Wn + bn: tanh hidden layers, a linear output.

    Weights are stored (in, out) so each layer is one `addmm`. `forward` returns the output
    and a tape (the input of every layer) that `backward` consumes.
    """

    def __init__(self, buffer: ParameterBuffer, name: str, sizes: list[int]):
        self.name = name
        self.sizes = list(sizes)
        n = len(sizes) - 1
        self.weights = [buffer.param(f"{name}.w{i}") for i in range(n)]
        self.biases = [buffer.param(f"{name}.b{i}") for i in range(n)]
        self.weight_grads = [buffer.grad_of(f"{name}.w{i}") for i in range(n)]
        self.bias_grads = [buffer.grad_of(f"{name}.b{i}") for i in range(n)]

    @staticmethod
    def parameter_sizes(name: str, sizes: list[int]) -> list[tuple[str, tuple[int, ...]]]:
        out = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
            out += [(f"{name}.w{i}", (n_in, n_out)), (f"{name}.b{i}", (n_out,))]
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        tape = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.addmm(b, h, w)
            if i < last:
                h = h.tanh_()
                tape.append(h)
        return h, tape

    def output(self, x: Tensor) -> Tensor:
        return self.forward(x)[0]

    def backward(
        self,
        tape: list[Tensor],
        delta: Tensor,
        *,
        weight_rows: Tensor | None = None,
        param_grads: bool = True,
        input_grad: bool = True,
    ) -> Tensor | None:
        """Backpropagate `delta` (d objective / d output) and return d objective / d input.

        Parameter gradients are *written* (not accumulated) into the buffer's gradient views:
        each network takes part in a model's backward pass exactly once.

        `weight_rows` (rows, 1) rescales each row's contribution to the parameter gradients
        only; the returned input gradient is unscaled. Rows are independent samples, so this
        lets one pass serve two estimators' coefficients (decoder vs. encoder, see
        `iwae.backends.fused`) without dividing one by the other.
        """
        for i in reversed(range(len(self.weights))):
            if param_grads:
                d = delta if weight_rows is None else delta * weight_rows
                torch.mm(tape[i].t(), d, out=self.weight_grads[i])
                torch.sum(d, 0, out=self.bias_grads[i])
            if i == 0 and not input_grad:
                return None
            delta = torch.mm(delta, self.weights[i].t())
            if i > 0:  # through tanh: d tanh(a) = 1 - tanh(a)^2, in place on mm's fresh output
                a = tape[i]
                delta.addcmul_(delta * a, a, value=-1.0)
        return delta


def mlp(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """The same network as `TanhMLP.forward`, for autograd: tanh hidden layers, linear output."""
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = torch.addmm(b, x, w)
        if i < last:
            x = x.tanh()
    return x


def glorot_uniform(n_in: int, n_out: int, generator: np.random.RandomState) -> np.ndarray:
    """Glorot & Bengio (2010) uniform initialisation for a tanh layer, stored (in, out)."""
    scale = math.sqrt(6.0 / (n_in + n_out))
    return generator.uniform(-scale, scale, size=(n_in, n_out))
