"""Kingma & Welling's variational auto-encoder (AEVB; "Auto-Encoding Variational Bayes",
section 3 and appendix C), the model IWAE builds on.

One stochastic layer; encoder h = tanh(W x + b), mu = W' h + b', log sigma^2 = W'' h + b''
(a log variance, where Burda et al.'s layers output log sigma); prior N(0, I); decoder with
one tanh hidden layer of the same width: Bernoulli logits for binary images, or Kingma &
Welling's Gaussian with sigmoid means and a per-pixel log variance for continuous ones
(likelihood `gaussian-sigmoid`). Every weight and bias starts from N(0, 0.01^2), as KW's
section 5 says; with `init: official` as Kingma's code (anglepy's VAE_Z_X.init_w) instead,
whose encoder log-variance head (weights and bias) and decoder output biases start at zero.
The architecture is a spec like "500-20": hidden units, then latent units.

Besides the (k, B) log weights, the forward pass returns the terms of Kingma & Welling's
estimator B (objective `sgvb`): log p(x | z) per sample and the analytic KL(q(z|x) || p(z))
per point.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.models.layered import LayeredModel, LogWeights
from iwae.models.likelihoods import Gaussian
from iwae.plan.architecture import Architecture

INIT_SD = 0.01  # KW section 5: every parameter from N(0, 0.01^2)


class AEVBModel(LayeredModel):
    family = "aevb"
    fused_applies = "it is written for the layered family"

    def __init__(
        self,
        architecture: Architecture,
        input_dim: int,
        device="cpu",
        dtype=torch.float32,
        likelihood: str = "bernoulli",
        prior: str = "standard",
        condition_dim: int = 0,
    ):
        if architecture.n_stochastic != 1 or len(architecture.layers[0].hidden) != 1:
            raise UserError(
                f"layers: {architecture.spec()!r}: the AEVB family has one hidden layer and one stochastic "
                "layer (e.g. '500-20')"
            )
        if prior != "standard" or condition_dim:
            raise UserError("the AEVB family has the standard normal prior and no condition")
        super().__init__(architecture, input_dim, device, dtype, likelihood=likelihood)
        self.layer = Gaussian("identity", "log_var")

    @property
    def latent(self) -> int:
        return self.architecture.latent_sizes[0]

    def initialize(self, seed: int, scheme: str = "glorot", output_bias: np.ndarray | None = None):
        """Every parameter from N(0, 0.01^2) (KW, section 5); with scheme "official" as
        Kingma's code, the encoder's log-variance weights and bias and the decoder's output
        biases (its means' or logits', and its log variances') then set to zero. The layered
        family's `output_bias` does not apply."""
        if scheme not in ("glorot", "official"):
            raise UserError(f"init: unknown scheme {scheme!r} (expected 'glorot' or 'official')")
        values = np.random.RandomState(seed).normal(0.0, INIT_SD, self.buffer.data.numel())
        self.buffer.data.copy_(torch.from_numpy(values))
        if scheme == "official":
            d = self.latent
            self.buffer.param("encoder.q0.w1")[:, d:] = 0.0
            self.buffer.param("encoder.q0.b1")[d:] = 0.0
            self.buffer.param("decoder.p0.b1").zero_()

    def forward(
        self,
        x: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        noise: list[Tensor] | None = None,
        condition: Tensor | None = None,
        stop_q: bool = False,
    ) -> LogWeights:
        B, d = x.shape[0], self.latent
        out = self.net("encoder.q0", x)  # once per point
        eps = noise[0] if noise is not None else self._noise(0, k, B, generator, None)
        z, log_q = self.layer.reparameterise(out, eps)  # (k, B, d), (k, B)
        log_lik = self.likelihood.log_prob(x, self.net("decoder.p0", z.reshape(k * B, d)).view(k, B, -1))
        log_joint = log_lik + self.prior.log_prob(z)
        stopped = log_joint - self.layer.log_prob(z, out.detach()) if stop_q else None
        terms = {"log_lik": log_lik, "kl": self.layer.kl_standard_normal(out)}
        return LogWeights(log_joint - log_q, stopped, terms)
