"""Backends: how a model's gradient is obtained. Every backend has the same three methods:

forward(x, k, generator, noise, stop_q) -> a pass object with .log_w, the (k, B) log weights
backward(pass, coefficients)            -> the estimator's gradient in model.buffer.grad
log_weights(x, k, generator, noise)     -> (k, B) log weights only (evaluation)

autograd   any model: surrogate losses from the coefficients (`iwae.backends.autograd`)
fused      Burda et al.'s model only: the hand-written backward pass (`iwae.backends.fused`)
auto       fused where it applies, autograd elsewhere
"""

from __future__ import annotations

from iwae.backends.autograd import AutogradBackend
from iwae.backends.fused import FusedBackend, why_not
from iwae.errors import UserError
from iwae.plan.vocabulary import BACKENDS


def select(model, name: str = "auto"):
    """The backend called `name` for `model`; 'auto' picks the fused one where it applies."""
    if name not in BACKENDS:
        raise UserError(f"backend: {name!r} must be one of {', '.join(BACKENDS)}")
    if name == "autograd" or (name == "auto" and why_not(model)):
        return AutogradBackend(model)
    return FusedBackend(model)  # raises a UserError naming why, where it does not apply
