"""The model family of Burda et al. (2016), section 5: stacked Gaussian stochastic layers.

Each stochastic layer is a diagonal Gaussian whose mean is a linear map and whose standard
deviation is exp(linear map) of a tanh network's output, as in the official code; the
decoders mirror the encoders; the observation model and the prior are objects
(`iwae.models.likelihoods`, `iwae.models.priors`): Bernoulli on logits and N(0, I) in the paper. Any number
of stochastic layers is supported (`iwae.plan.architecture`). With `condition_dim > 0` every
network also takes an extra input c (a one-hot label, say) beside its usual one, and the
prior may depend on it.

The model is defined by its forward pass: `forward` draws k samples h ~ q(h | x) per point
and returns the (k, batch) log importance weights

    log w_i = log p(x, h_i) - log q(h_i | x),

computing the first recognition network once per data point, not once per sample. Autograd
differentiates it (`iwae.backends.autograd`); for the paper's own configuration a
hand-written backward pass gives the same gradients faster (`iwae.backends.fused`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from iwae.errors import UserError
from iwae.models.likelihoods import Gaussian
from iwae.models.likelihoods import likelihood as make_likelihood
from iwae.models.nets import ParameterBuffer, TanhMLP, glorot_uniform, mlp
from iwae.models.priors import prior as make_prior
from iwae.plan.architecture import Architecture


@dataclass
class LogWeights:
    log_w: Tensor  # (k, B), differentiable in every parameter
    # (k, B) the same samples with q's parameters stopped inside log q (STL, DReG): the
    # recognition networks' gradient then flows through the samples only
    log_w_q_stopped: Tensor | None = None
    # named terms of the bound that some estimators use instead of the log weights, e.g.
    # Kingma & Welling's estimator B: "log_lik" (k, B) and the analytic "kl" (B,)
    terms: dict[str, Tensor] | None = None


class LayeredModel:
    """Generative network p(x, h) and recognition network q(h | x) on one ParameterBuffer.

    Parameter names start with "encoder.", "decoder." or "prior."; the encoder's are
    contiguous in the buffer (`buffer.span("encoder")`), and so are the generative model's.
    """

    family = "layered"

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
        self.architecture = architecture
        self.input_dim = input_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.likelihood_name, self.prior_name, self.condition_dim = likelihood, prior, condition_dim
        self.likelihood = make_likelihood(likelihood)
        self.prior = make_prior(prior)
        self.layer = Gaussian("identity", "log_sigma")  # q(h_j | h_j-1) and p(h_j-1 | h_j)
        c = condition_dim
        below = [input_dim] + architecture.latent_sizes[:-1]
        self.encoder_sizes, self.decoder_sizes = [], []
        for j, (layer, d_below) in enumerate(zip(architecture.layers, below)):
            self.encoder_sizes.append([d_below + c, *layer.hidden, 2 * layer.latent])
            out = self.likelihood.output_size(input_dim) if j == 0 else 2 * d_below
            self.decoder_sizes.append([layer.latent + c, *reversed(layer.hidden), out])
        self.prior_sizes = self.prior.network_sizes(architecture.latent_sizes[-1], c)
        self.networks = {f"encoder.q{j}": s for j, s in enumerate(self.encoder_sizes)}
        self.networks |= {f"decoder.p{j}": s for j, s in reversed(list(enumerate(self.decoder_sizes)))}
        if self.prior_sizes:
            self.networks["prior.net"] = self.prior_sizes
        self.buffer = ParameterBuffer(
            [p for name, s in self.networks.items() for p in TanhMLP.parameter_sizes(name, s)], self.device, dtype
        )
        self.leaves = self.buffer.leaves()

    @property
    def fused_applies(self) -> str | None:
        """Why the hand-written backward pass does not apply (None: it does)."""
        if self.likelihood_name != "bernoulli" or self.prior_name != "standard" or self.condition_dim:
            return "it is written for a Bernoulli likelihood, the standard normal prior and no condition"
        return None

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """The leaves of the recognition model and of the generative model (decoder, prior)."""
        groups = {"encoder": [], "generative": []}
        for name, leaf in self.leaves.items():
            groups["encoder" if name.startswith("encoder.") else "generative"].append(leaf)
        return groups

    # ------------------------------------------------------------------ set-up

    def initialize(self, seed: int, scheme: str = "glorot", output_bias: np.ndarray | None = None):
        """Glorot-uniform weights, zero biases; the output bias set to `output_bias`.

        scheme "glorot": one random stream seeded with `seed` for all layers.
        scheme "official": as the official code, every linear map is drawn from a fresh
        RandomState(123), so maps of equal shape start equal (`seed` is then unused).
        A Gaussian head (mean and log sigma) is two linear maps, initialised separately.
        """
        if scheme not in ("glorot", "official"):
            raise UserError(f"init: unknown scheme {scheme!r} (expected 'glorot' or 'official')")
        stream = np.random.RandomState(seed)

        def draw(n_in, n_out):
            return glorot_uniform(n_in, n_out, stream if scheme == "glorot" else np.random.RandomState(123))

        self.buffer.data.zero_()
        # encoders, then decoders from the data upwards, then the prior's network
        order = [f"encoder.q{j}" for j in range(len(self.encoder_sizes))]
        order += [f"decoder.p{j}" for j in range(len(self.decoder_sizes))] + (["prior.net"] if self.prior_sizes else [])
        for name in order:
            sizes = self.networks[name]
            two_part_head = name != "decoder.p0" or self.likelihood.output_size(1) == 2
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
                if i == len(sizes) - 2 and two_part_head:
                    half = n_out // 2
                    values = np.concatenate([draw(n_in, half), draw(n_in, half)], axis=1)
                else:
                    values = draw(n_in, n_out)
                self.buffer.param(f"{name}.w{i}").copy_(torch.from_numpy(values))
        if output_bias is not None:
            last = len(self.decoder_sizes[0]) - 2
            self.buffer.param(f"decoder.p0.b{last}").copy_(torch.as_tensor(output_bias))

    # ------------------------------------------------------------------ forward

    def net(self, name: str, x: Tensor, detach: bool = False) -> Tensor:
        """The output of the network `name` (e.g. "decoder.p0") for input rows x."""
        n = len(self.networks[name]) - 1
        weights = [self.leaves[f"{name}.w{i}"] for i in range(n)]
        biases = [self.leaves[f"{name}.b{i}"] for i in range(n)]
        if detach:
            weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
        return mlp(x, weights, biases)

    def _with(self, h: Tensor, c: Tensor | None) -> Tensor:
        """h with the condition beside it; rows of h are (sample, point) pairs, point fastest."""
        if c is None:
            return h
        return torch.cat([h, c.repeat(h.shape[0] // c.shape[0], 1)], dim=1)

    def _noise(self, j: int, k: int, B: int, generator, noise) -> Tensor:
        if noise is not None:
            return noise[j]
        d = self.architecture.latent_sizes[j]
        return torch.randn((k, B, d), generator=generator, device=self.device, dtype=self.dtype)

    def forward(
        self,
        x: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        noise: list[Tensor] | None = None,
        condition: Tensor | None = None,
        stop_q: bool = False,
    ) -> LogWeights:
        """Draw k samples h ~ q(h|x) per data point and return their log weights (k, B).

        `noise` (one (k, B, d) standard normal tensor per layer) replaces the draws, so that
        the same samples can be evaluated in different ways (tests, chunking). `stop_q` also
        returns the log weights with q's parameters stopped inside log q.
        """
        B = x.shape[0]
        c = condition
        log_q = log_q_stop = 0.0
        samples, below = [], self._with(x, c)
        for j, d in enumerate(self.architecture.latent_sizes):
            out = self.net(f"encoder.q{j}", below)
            eps = self._noise(j, k, B, generator, noise)
            if j == 0:  # the first encoder ran once per point: broadcast over the k samples
                h, log_density = self.layer.reparameterise(out, eps)
                h = h.reshape(k * B, d)
            else:
                h, log_density = self.layer.reparameterise(out, eps.view(k * B, d))
                log_density = log_density.view(k, B)
            log_q = log_q + log_density
            if stop_q:  # the same density with the parameters (not the input) held fixed
                if j == 0:  # its input is the data: stopping the output stops the parameters
                    stopped = self.layer.log_prob(h.view(k, B, d), out.detach())
                else:
                    stopped = self.layer.log_prob(h, self.net(f"encoder.q{j}", below, detach=True)).view(k, B)
                log_q_stop = log_q_stop + stopped
            samples.append(h)
            below = self._with(h, c)

        top = samples[-1]
        prior_out = self.net("prior.net", c) if self.prior_sizes else None
        log_p = self.prior.log_prob(top.view(k, B, -1), prior_out)
        for j in range(len(samples) - 1, 0, -1):
            out = self.net(f"decoder.p{j}", self._with(samples[j], c))
            log_p = log_p + self.layer.log_prob(samples[j - 1], out).view(k, B)
        out = self.net("decoder.p0", self._with(samples[0], c))
        log_p = log_p + self.likelihood.log_prob(x, out.view(k, B, -1))
        return LogWeights(log_p - log_q, (log_p - log_q_stop) if stop_q else None)

    def log_weights(self, x: Tensor, k: int, generator=None, noise=None, condition=None) -> Tensor:
        return self.forward(x, k, generator, noise, condition).log_w

    def log_joint(self, x: Tensor, z: Tensor, condition: Tensor | None = None) -> Tensor:
        """log p(x, z) of a one-layer model for latents z of shape (..., B, d), broadcast
        against x (B, D): the unnormalised true posterior (HMC, the posterior on a grid)."""
        if len(self.decoder_sizes) != 1:
            raise UserError("log p(x, z) is written for one stochastic layer")
        lead, d = z.shape[:-1], z.shape[-1]
        rows = z.reshape(-1, d)
        c = None if condition is None else condition.expand(*lead, condition.shape[-1]).reshape(-1, condition.shape[-1])
        out = self.net("decoder.p0", rows if c is None else torch.cat([rows, c], 1)).view(*lead, -1)
        prior_out = None
        if self.prior_sizes:
            prior_out = self.net("prior.net", c).view(*lead, -1)
        return self.likelihood.log_prob(x, out) + self.prior.log_prob(z, prior_out)

    # ------------------------------------------------------------------ analysis

    @torch.no_grad()
    def posterior_means(self, x: Tensor, generator=None, condition: Tensor | None = None) -> list[Tensor]:
        """E_q[h_j | h_{j-1}] per stochastic layer, the layer below being one sample of q
        (as the official code's active-unit count does)."""
        means, below = [], x
        for j in range(len(self.encoder_sizes)):
            out = self.net(f"encoder.q{j}", self._with(below, condition))
            mu, log_sigma = self.layer.split(out)
            means.append(mu)
            below = mu + log_sigma.exp() * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return means

    @torch.no_grad()
    def decode_mean(self, top: Tensor, generator=None, condition: Tensor | None = None) -> Tensor:
        """The mean of x for given top-layer latents, sampling the layers between."""
        h = top
        for j in range(len(self.decoder_sizes) - 1, 0, -1):
            h = self.layer.sample(self.net(f"decoder.p{j}", self._with(h, condition)), generator)
        return self.likelihood.mean(self.net("decoder.p0", self._with(h, condition)))

    @torch.no_grad()
    def sample(self, n: int, generator=None, condition: Tensor | None = None) -> Tensor:
        """Means of p(x | h) for n draws of h from the prior (given the condition's rows)."""
        prior_out = self.net("prior.net", condition) if self.prior_sizes else None
        like = {"device": self.device, "dtype": self.dtype}
        top = self.prior.sample(n, self.architecture.latent_sizes[-1], generator, prior_out, **like)
        return self.decode_mean(top, generator, condition)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator=None, condition: Tensor | None = None) -> Tensor:
        """Means of p(x | h1) after one pass up through q (sampling)."""
        samples, below = [], x
        for j in range(len(self.encoder_sizes)):  # every layer draws, as a forward pass with k = 1
            out = self.net(f"encoder.q{j}", self._with(below, condition))
            below, _ = self.layer.reparameterise(out, self._noise(j, 1, x.shape[0], generator, None)[0])
            samples.append(below)
        return self.likelihood.mean(self.net("decoder.p0", self._with(samples[0], condition)))

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {
            "family": self.family,
            "architecture": self.architecture.spec(),
            "input_dim": self.input_dim,
            "likelihood": self.likelihood_name,
            "prior": self.prior_name,
            "condition_dim": self.condition_dim,
            "params": self.buffer.data.cpu(),
        }

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> LayeredModel:
        model = cls(
            Architecture.parse(state["architecture"]),
            state["input_dim"],
            device,
            likelihood=state.get("likelihood", "bernoulli"),  # model files before these options
            prior=state.get("prior", "standard"),
            condition_dim=state.get("condition_dim", 0),
        )
        model.buffer.data.copy_(state["params"])
        return model
