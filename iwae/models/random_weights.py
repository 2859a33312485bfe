"""IWAE with random network weights (Hernández-Lobato et al., seed 001: IWAER, IWAER_rec).

Every weight and bias w of the chosen networks has q(w) = N(m, exp(s)^2), factorised; the
means m and log scales s are the parameters trained. `random="both"` makes the recognition
and the generative network random (IWAER), `random="encoder"` the recognition network only
(IWAER_rec); `random="none"` is the plain model (`iwae.models.layered`, which is what
`iwae.models.build` then returns).

Every (data point, importance sample) has weights of its own, as in seed 001's eq. 3. This
is done exactly, with the local reparameterisation trick (Kingma, Salimans & Welling, 2015):
for an input row a of a layer, the pre-activation a.W + b with W, b ~ q is Gaussian with mean
a.m_W + m_b and variance a^2.sigma_W^2 + sigma_b^2, independently per row and unit, since
each weight matrix meets one input per row and layers are independent under q. So each layer
costs two matrix products, and noise is drawn per (sample, point, unit); the first layer's
two products run once per data point. Drawing one weight set per minibatch or per sample
index would optimise a looser bound.

The importance weight is that of seed 001: log w = log p(x | z, theta) + log p(z) -
log q(z | x, phi), with no q(theta), q(phi) or weight prior factor, so the IWAE bound is one
on the log of the mixture p(x) = E_q(theta) p(x | theta). Gradients come from autograd.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.models.layered import LogWeights
from iwae.models.likelihoods import Bernoulli, Gaussian
from iwae.models.nets import ParameterBuffer, glorot_uniform
from iwae.models.priors import StandardNormal
from iwae.plan.architecture import Architecture
from iwae.plan.vocabulary import RANDOM_WEIGHTS_FAMILY


class RandomWeightsModel:
    """One stochastic layer, tanh networks, Bernoulli output, N(0, I) prior; the weights of
    the recognition network (and, with random="both", of the generative one) random."""

    family = RANDOM_WEIGHTS_FAMILY

    def __init__(
        self,
        architecture: Architecture,
        input_dim: int,
        device="cpu",
        dtype=torch.float32,
        random: str = "both",
        log_sigma_init: float = -6.0,
    ):
        if random not in ("encoder", "both"):
            raise UserError(f"random: {random!r} must be 'encoder' or 'both' for random network weights")
        if architecture.n_stochastic != 1:
            raise UserError(f"random: random weights are built for one stochastic layer, not {architecture.spec()!r}")
        self.architecture, self.input_dim, self.random = architecture, input_dim, random
        self.log_sigma_init = log_sigma_init
        self.device, self.dtype = torch.device(device), dtype
        self.likelihood, self.prior, self.layer = Bernoulli(), StandardNormal(), Gaussian("identity", "log_sigma")
        (layer,) = architecture.layers
        self.latent = layer.latent
        self.networks = {
            "encoder.q0": [input_dim, *layer.hidden, 2 * layer.latent],
            "decoder.p0": [layer.latent, *reversed(layer.hidden), input_dim],
        }
        self.randomised = {"encoder.q0": True, "decoder.p0": random == "both"}
        sizes = []
        for name, s in self.networks.items():
            for i, (n_in, n_out) in enumerate(zip(s, s[1:])):
                sizes += [(f"{name}.w{i}", (n_in, n_out)), (f"{name}.b{i}", (n_out,))]
                if self.randomised[name]:
                    sizes += [(f"{name}.w{i}.log_sigma", (n_in, n_out)), (f"{name}.b{i}.log_sigma", (n_out,))]
        self.buffer = ParameterBuffer(sizes, self.device, dtype)
        self.leaves = self.buffer.leaves()

    fused_applies = "it is written for the layered family"

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        groups = {"encoder": [], "generative": []}
        for name, leaf in self.leaves.items():
            groups["encoder" if name.startswith("encoder.") else "generative"].append(leaf)
        return groups

    def random_layers(self) -> list[tuple[str, int, int]]:
        """(network, layer index, units) of every random layer, in the order noise is drawn."""
        return [
            (name, i, s[i + 1]) for name, s in self.networks.items() if self.randomised[name] for i in range(len(s) - 1)
        ]

    # ------------------------------------------------------------------ set-up

    def initialize(self, seed: int, scheme: str = "glorot", output_bias: np.ndarray | None = None):
        """Means as the layered model's (Glorot uniform, zero biases, the output bias given),
        log scales `log_sigma_init` everywhere."""
        if scheme not in ("glorot", "official"):
            raise UserError(f"init: unknown scheme {scheme!r} (expected 'glorot' or 'official')")
        stream = np.random.RandomState(seed)

        def draw(n_in, n_out):
            return glorot_uniform(n_in, n_out, stream if scheme == "glorot" else np.random.RandomState(123))

        self.buffer.data.zero_()
        for name, sizes in self.networks.items():
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
                if i == len(sizes) - 2 and name == "encoder.q0":  # mean and log sigma heads
                    values = np.concatenate([draw(n_in, n_out // 2), draw(n_in, n_out // 2)], axis=1)
                else:
                    values = draw(n_in, n_out)
                self.buffer.param(f"{name}.w{i}").copy_(torch.from_numpy(values))
                if self.randomised[name]:
                    self.buffer.param(f"{name}.w{i}.log_sigma").fill_(self.log_sigma_init)
                    self.buffer.param(f"{name}.b{i}.log_sigma").fill_(self.log_sigma_init)
        if output_bias is not None:
            last = len(self.networks["decoder.p0"]) - 2
            self.buffer.param(f"decoder.p0.b{last}").copy_(torch.as_tensor(output_bias))

    # ------------------------------------------------------------------ forward

    def _linear(self, name: str, i: int, a: Tensor, eps: Tensor | None, mean_weights: bool) -> Tensor:
        """a.W + b for W, b ~ q, drawn per row of the result (local reparameterisation).

        `a` is (rows, in), or for a network's first layer (B, in) shared by the k samples of
        each point, `eps` then being (k, B, out); the result has k * B rows either way."""
        w, b = self.leaves[f"{name}.w{i}"], self.leaves[f"{name}.b{i}"]
        mean = torch.addmm(b, a, w)
        if not self.randomised[name] or mean_weights:
            return mean if eps is None or eps.dim() == 2 else mean.expand(eps.shape).reshape(-1, mean.shape[-1])
        var_w = (2 * self.leaves[f"{name}.w{i}.log_sigma"]).exp()
        var_b = (2 * self.leaves[f"{name}.b{i}.log_sigma"]).exp()
        sd = torch.addmm(var_b, a.square(), var_w).sqrt()
        return torch.addcmul(mean, sd, eps).reshape(-1, mean.shape[-1])

    def _net(self, name: str, a: Tensor, noises: dict, mean_weights: bool = False) -> Tensor:
        n = len(self.networks[name]) - 1
        for i in range(n):
            a = self._linear(name, i, a, noises.get((name, i)), mean_weights)
            if i < n - 1:
                a = a.tanh()
        return a

    def _draw(self, k: int, B: int, generator, noise) -> tuple[Tensor, dict]:
        """z's noise (k, B, d) and each random layer's (k, B, units): given, or drawn."""
        like = {"device": self.device, "dtype": self.dtype}
        if noise is not None:
            z, rest = noise[0], noise[1:]
        else:
            z = torch.randn((k, B, self.latent), generator=generator, **like)
            rest = [torch.randn((k, B, units), generator=generator, **like) for _, _, units in self.random_layers()]
        out = {}
        for (name, i, units), eps in zip(self.random_layers(), rest):
            out[(name, i)] = eps if i == 0 and name == "encoder.q0" else eps.reshape(-1, units)
        return z, out

    def forward(
        self, x: Tensor, k: int, generator=None, noise=None, condition=None, stop_q: bool = False
    ) -> LogWeights:
        """k samples per point, each with weights of its own; their (k, B) log weights.
        `noise`: z's noise (k, B, d), then one (k, B, units) tensor per random layer."""
        if stop_q or condition is not None:
            raise UserError("random network weights: STL, DReG and conditioning are not built for this family")
        B = x.shape[0]
        z_eps, noises = self._draw(k, B, generator, noise)
        out = self._net("encoder.q0", x, noises)  # (k*B, 2d): each sample its own encoder
        z, log_q = self.layer.reparameterise(out, z_eps.reshape(k * B, -1))
        logits = self._net("decoder.p0", z, noises)
        log_p = self.prior.log_prob(z.view(k, B, -1)) + self.likelihood.log_prob(x, logits.view(k, B, -1))
        return LogWeights(log_p - log_q.view(k, B))

    def log_weights(self, x: Tensor, k: int, generator=None, noise=None, condition=None) -> Tensor:
        return self.forward(x, k, generator, noise, condition).log_w

    def noise_shapes(self, k: int, B: int) -> list[tuple[int, ...]]:
        """The shapes `forward` takes as `noise` (for tests)."""
        return [(k, B, self.latent)] + [(k, B, units) for _, _, units in self.random_layers()]

    # ------------------------------------------------------------------ analysis

    def scales(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per random layer "<network>.w<i>": (sigma, |m| / sigma) of its weights."""
        out = {}
        for name, i, _ in self.random_layers():
            m, s = self.buffer.param(f"{name}.w{i}"), self.buffer.param(f"{name}.w{i}.log_sigma")
            out[f"{name}.w{i}"] = (s.exp(), m.abs() / s.exp())
        return out

    @torch.no_grad()
    def posterior_means(self, x: Tensor, generator=None, condition=None) -> list[Tensor]:
        """E_q[z | x] with the weights at their means (for the active-unit count)."""
        out = self._net("encoder.q0", x, {}, mean_weights=True)
        return [self.layer.split(out)[0]]

    @torch.no_grad()
    def sample(self, n: int, generator=None, condition=None) -> Tensor:
        """Means of p(x | z) for z from the prior, each with generative weights of its own."""
        z = self.prior.sample(n, self.latent, generator, device=self.device, dtype=self.dtype)
        noises = {
            (name, i): torch.randn((n, units), generator=generator, device=self.device, dtype=self.dtype)
            for name, i, units in self.random_layers()
            if name == "decoder.p0"
        }
        return self.likelihood.mean(self._net("decoder.p0", z, noises))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator=None, condition=None) -> Tensor:
        """Means of p(x | z) after one pass up through q and down, with sampled weights."""
        z_eps, noises = self._draw(1, x.shape[0], generator, None)
        z, _ = self.layer.reparameterise(self._net("encoder.q0", x, noises), z_eps.reshape(x.shape[0], -1))
        return self.likelihood.mean(self._net("decoder.p0", z, noises))

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "family": self.family,
            "architecture": self.architecture.spec(),
            "input_dim": self.input_dim,
            "likelihood": "bernoulli",
            "prior": "standard",
            "condition_dim": 0,
            "random": self.random,
            "log_sigma_init": self.log_sigma_init,
            "params": self.buffer.data.cpu(),
        }

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> RandomWeightsModel:
        model = cls(
            Architecture.parse(state["architecture"]),
            state["input_dim"],
            device,
            random=state["random"],
            log_sigma_init=state["log_sigma_init"],
        )
        model.buffer.data.copy_(state["params"])
        return model
