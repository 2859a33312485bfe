"""Priors over the top stochastic layer, as small objects with `log_prob`, `mean`, `sample`.

    standard     N(0, I) (the paper's)
    label        N(mu(c), diag sigma(c)^2): mean and log sigma from a tanh network of the
                 condition c (a one-hot label, say), as nbip's conditional IWAE (task04)

A prior with a network says so by `network_sizes`; the model keeps that network's parameters
in its buffer (named "prior.*", part of the generative model) and passes its output `out` to
`log_prob` and `sample`. Each is checked against torch.distributions in the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.models.likelihoods import HALF_LOG_2PI, Gaussian


class StandardNormal:
    name = "standard"

    def network_sizes(self, latent: int, condition_dim: int) -> list[int] | None:
        return None

    def log_prob(self, h: Tensor, out: Tensor | None = None) -> Tensor:
        return -0.5 * h.square().sum(-1) - h.shape[-1] * HALF_LOG_2PI

    def mean(self, n: int, latent: int, out: Tensor | None = None, **like) -> Tensor:
        return torch.zeros((n, latent), **like)

    def sample(self, n: int, latent: int, generator=None, out: Tensor | None = None, **like) -> Tensor:
        return torch.randn((n, latent), generator=generator, **like)


class ConditionalNormal:
    """A Gaussian prior whose mean and log sigma are a tanh network's output given c."""

    name = "label"

    def __init__(self, hidden: tuple[int, ...] = (200, 200)):
        self.hidden = tuple(hidden)
        self.gaussian = Gaussian("identity", "log_sigma")

    def network_sizes(self, latent: int, condition_dim: int) -> list[int] | None:
        if condition_dim < 1:
            raise UserError("prior 'label' needs a condition (an extra input such as a one-hot label)")
        return [condition_dim, *self.hidden, 2 * latent]

    def log_prob(self, h: Tensor, out: Tensor | None = None) -> Tensor:
        return self.gaussian.log_prob(h, out)

    def mean(self, n: int, latent: int, out: Tensor | None = None, **like) -> Tensor:
        return self.gaussian.mean(out)

    def sample(self, n: int, latent: int, generator=None, out: Tensor | None = None, **like) -> Tensor:
        return self.gaussian.sample(out, generator)


PRIORS = {"standard": StandardNormal, "label": ConditionalNormal}  # by the names of iwae.plan.vocabulary.PRIORS


def prior(name: str):
    if name not in PRIORS:
        raise UserError(f"prior {name!r}: unknown; expected one of {', '.join(PRIORS)}")
    return PRIORS[name]()
