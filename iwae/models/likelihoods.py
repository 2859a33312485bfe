"""Observation models: the distribution of the data (or of a latent layer) given a network's
output, as small objects with `log_prob`, `mean`, `sample` and the output-bias initialisation.

    Bernoulli   binary data, the network's output is the logits (the paper's)
    Gaussian    diagonal Gaussian: the output holds a mean and a log scale per unit; the mean
                may pass through a sigmoid (data in [0, 1], Kingma & Welling's Frey Face
                decoder) and the scale may be log sigma (the paper's latent layers) or
                log sigma^2 (Kingma & Welling)

`log_prob` sums over the last dimension and broadcasts: data of shape (B, D) against outputs
of shape (k, B, D) gives (k, B). Each is checked against torch.distributions in the tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from iwae.errors import UserError

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
MEAN_CLIP = 1e-3  # the official code clips the mean image before taking its logit


class Bernoulli:
    """p(x | l) = prod_d sigmoid(l_d)^x_d (1 - sigmoid(l_d))^(1 - x_d), on logits l."""

    name = "bernoulli"

    def output_size(self, units: int) -> int:
        return units

    def log_prob(self, x: Tensor, logits: Tensor) -> Tensor:
        return (x * logits).sum(-1) - F.softplus(logits).sum(-1)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)

    def output_bias(self, train: Tensor) -> np.ndarray:
        """logit of the clipped mean training image, the official code's output-layer bias."""
        mean = train.double().mean(0).clamp(MEAN_CLIP, 1 - MEAN_CLIP).cpu().numpy()
        return np.log(mean / (1 - mean))


class Gaussian:
    """Diagonal Gaussian; the output is [mean part, log-scale part] along the last dimension."""

    name = "gaussian"

    def __init__(self, mean: str = "identity", scale: str = "log_sigma"):
        if mean not in ("identity", "sigmoid") or scale not in ("log_sigma", "log_var"):
            raise ValueError(f"Gaussian(mean={mean!r}, scale={scale!r})")
        self.mean_link, self.scale = mean, scale

    def output_size(self, units: int) -> int:
        return 2 * units

    def split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log sigma) from the network's output."""
        d = out.shape[-1] // 2
        mean, log_scale = out[..., :d], out[..., d:]
        if self.mean_link == "sigmoid":
            mean = torch.sigmoid(mean)
        return mean, (0.5 * log_scale if self.scale == "log_var" else log_scale)

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        mean, log_sigma = self.split(out)
        u = (x - mean) / log_sigma.exp()
        return -0.5 * u.square().sum(-1) - log_sigma.sum(-1) - x.shape[-1] * HALF_LOG_2PI

    def reparameterise(self, out: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """The sample mean + sigma * eps and its log density, computed from eps (exactly
        -eps^2/2 - log sigma per unit, with the full dependence on the output)."""
        mean, log_sigma = self.split(out)
        h = torch.addcmul(mean, log_sigma.exp(), eps)
        log_density = -0.5 * eps.square().sum(-1) - log_sigma.sum(-1) - eps.shape[-1] * HALF_LOG_2PI
        return h, log_density

    def mean(self, out: Tensor) -> Tensor:
        return self.split(out)[0]

    def kl_standard_normal(self, out: Tensor) -> Tensor:
        """KL(N(mean, sigma^2) || N(0, I)) in closed form, summed over the last dimension
        (Kingma & Welling, appendix B); the mean link must be the identity."""
        mean, log_sigma = self.split(out)
        return 0.5 * (mean.square() + (2 * log_sigma).exp() - 1.0 - 2 * log_sigma).sum(-1)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean, log_sigma = self.split(out)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + log_sigma.exp() * eps

    def output_bias(self, train: Tensor) -> np.ndarray:
        """The mean training image (through the inverse link) and the per-pixel spread."""
        x = train.double()
        mean = x.mean(0)
        if self.mean_link == "sigmoid":
            m = mean.clamp(MEAN_CLIP, 1 - MEAN_CLIP)
            mean = torch.log(m / (1 - m))
        log_var = x.var(0, unbiased=False).clamp_min(1e-4).log()
        log_scale = log_var if self.scale == "log_var" else 0.5 * log_var
        return torch.cat([mean, log_scale]).cpu().numpy()


LIKELIHOODS = {  # by the names of iwae.plan.vocabulary.LIKELIHOODS
    "bernoulli": Bernoulli,
    "gaussian": lambda: Gaussian("identity", "log_sigma"),
    "gaussian-sigmoid": lambda: Gaussian("sigmoid", "log_var"),  # Kingma & Welling's Frey Face decoder
}


def likelihood(name: str):
    if name not in LIKELIHOODS:
        raise UserError(f"likelihood {name!r}: unknown; expected one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
