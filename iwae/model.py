"""The generative model and recognition network of Burda et al. (2016), section 5.

Stochastic layers are diagonal Gaussians whose mean is a linear map and whose standard
deviation is exp(linear map) of a tanh network's output, as in the official code; the
observation layer is Bernoulli on logits. Any number of stochastic layers is supported
(`iwae.architecture`).

`IWAEModel.forward` returns the (k, batch) log importance weights
    log w_i = log p(x, h_i) - log q(h_i | x),   h_i ~ q(h | x),
computing the first recognition network once per data point, not once per sample.
`IWAEModel.backward` turns per-sample coefficients (from `iwae.objectives`) into gradients:

    grad = sum_i decoder_i * d/dtheta log w_i                       (generative network)
         + sum_i path_i  * [d log w_i / dh_i] dh_i/dphi             (recognition, through samples)
         + sum_i score_i * d/dphi log w_i |_(h_i fixed)             (recognition, score term)

With score = path this is the full reparameterised gradient of sum_i path_i log w_i; STL and
DReG drop the score term (score = None). Every estimator in `iwae.objectives` is a choice of
these three coefficient tensors, so the backward pass is written once and checked against
autograd in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from iwae.architecture import ARCHITECTURES, Architecture  # noqa: F401 (re-exported)
from iwae.errors import UserError
from iwae.nets import ParameterBuffer, TanhMLP, glorot_uniform

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Coefficients:
    """Per-sample weights (k, batch) of the gradient terms; see the module docstring.

    `score is path` selects the full gradient; `score=None` drops the score term.
    """

    decoder: Tensor
    path: Tensor
    score: Tensor | None


@dataclass
class _Layer:
    """What the forward pass keeps of one stochastic layer for the backward pass."""

    q_tape: list[Tensor]
    eps: Tensor  # (k, B, d) standard normal noise
    sigma: Tensor  # (B, d) for the first layer, (k*B, d) above it
    h: Tensor  # (k*B, d) sample
    p_tape: list[Tensor] | None = None  # decoder from this layer to the one below
    u: Tensor | None = None  # standardised residual of the layer below under p
    p_sigma: Tensor | None = None


@dataclass
class ForwardPass:
    x: Tensor  # (B, D) binary data
    log_w: Tensor  # (k, B)
    k: int
    layers: list[_Layer]
    logits: Tensor  # (k*B, D)
    x_tape: list[Tensor]


class IWAEModel:
    """Generative network p(x, h) and recognition network q(h | x) on one ParameterBuffer.

    Parameter names start with "encoder." or "decoder.", and the two groups are contiguous
    in the buffer (`buffer.span("encoder")`).
    """

    def __init__(self, architecture: Architecture, input_dim: int, device="cpu", dtype=torch.float32):
        self.architecture = architecture
        self.input_dim = input_dim
        self.device = torch.device(device)
        self.dtype = dtype
        below = [input_dim] + architecture.latent_sizes[:-1]
        enc_sizes, dec_sizes = [], []
        for j, (layer, d_below) in enumerate(zip(architecture.layers, below)):
            enc_sizes.append([d_below, *layer.hidden, 2 * layer.latent])
            out = input_dim if j == 0 else 2 * d_below  # logits, or mean and log sigma
            dec_sizes.append([layer.latent, *reversed(layer.hidden), out])
        names = [(f"encoder.q{j}", s) for j, s in enumerate(enc_sizes)]
        names += [(f"decoder.p{j}", s) for j, s in reversed(list(enumerate(dec_sizes)))]
        self.buffer = ParameterBuffer(
            [p for name, s in names for p in TanhMLP.parameter_sizes(name, s)], self.device, dtype
        )
        self.encoders = [TanhMLP(self.buffer, f"encoder.q{j}", s) for j, s in enumerate(enc_sizes)]
        self.decoders = [TanhMLP(self.buffer, f"decoder.p{j}", s) for j, s in enumerate(dec_sizes)]

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
        for net in self.encoders + self.decoders:
            gaussian_head = net is not self.decoders[0]  # all but the Bernoulli output
            for i, w in enumerate(net.weights):
                n_in, n_out = w.shape
                if i == len(net.weights) - 1 and gaussian_head:
                    half = n_out // 2
                    values = np.concatenate([draw(n_in, half), draw(n_in, half)], axis=1)
                else:
                    values = draw(n_in, n_out)
                w.copy_(torch.from_numpy(values))
        if output_bias is not None:
            self.decoders[0].biases[-1].copy_(torch.as_tensor(output_bias))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        noise: list[Tensor] | None = None,
    ) -> ForwardPass:
        """Draw k samples h ~ q(h|x) per data point and return their log weights (k, B).

        `noise` (one (k, B, d) standard normal tensor per layer) replaces the draws, so that
        the same samples can be evaluated in different ways (tests, chunking).
        """
        B = x.shape[0]
        layers: list[_Layer] = []
        log_q = x.new_zeros(k, B)
        below = x
        for j, (net, d) in enumerate(zip(self.encoders, self.architecture.latent_sizes)):
            out, tape = net.forward(below)
            mu, rho = out[:, :d], out[:, d:]
            sigma = rho.exp()
            eps = (
                noise[j]
                if noise is not None
                else torch.randn((k, B, d), generator=generator, device=x.device, dtype=x.dtype)
            )
            if j == 0:  # the first encoder ran once per point: broadcast over the k samples
                h = torch.addcmul(mu, sigma, eps).view(k * B, d)
                log_q -= rho.sum(-1)
            else:
                h = torch.addcmul(mu, sigma, eps.view(k * B, d))
                log_q -= rho.sum(-1).view(k, B)
            log_q -= 0.5 * eps.square().sum(-1) + d * HALF_LOG_2PI
            layers.append(_Layer(tape, eps, sigma, h))
            below = h

        top = layers[-1].h
        log_p = (-0.5 * top.square().sum(-1) - top.shape[1] * HALF_LOG_2PI).view(k, B)
        for j in range(len(layers) - 1, 0, -1):
            out, tape = self.decoders[j].forward(layers[j].h)
            d = layers[j - 1].h.shape[1]
            mean, rho = out[:, :d], out[:, d:]
            sigma = rho.exp()
            u = (layers[j - 1].h - mean) / sigma
            log_p += (-0.5 * u.square().sum(-1) - rho.sum(-1) - d * HALF_LOG_2PI).view(k, B)
            layers[j].p_tape, layers[j].u, layers[j].p_sigma = tape, u, sigma
        logits, x_tape = self.decoders[0].forward(layers[0].h)
        log_p += self._bernoulli_log_likelihood(logits, x_tape[-1], x, k)
        return ForwardPass(x, log_p - log_q, k, layers, logits, x_tape)

    def _bernoulli_log_likelihood(self, logits: Tensor, hidden: Tensor, x: Tensor, k: int) -> Tensor:
        """log p(x | h) = sum_d x_d l_d - softplus(l_d) per sample, (k, B).

        For k > 1 the linear part is computed through the last hidden layer, l = hidden W + b,
        a pass over the hidden width rather than over all pixels of all k samples.
        """
        B = x.shape[0]
        if k == 1:  # one sample: the direct product is cheaper than the extra matrix product
            linear = (logits * x).sum(-1).view(1, B)
        else:
            w, b = self.decoders[0].weights[-1], self.decoders[0].biases[-1]
            linear = torch.einsum("kbh,bh->kb", hidden.view(k, B, -1), x @ w.t()) + x @ b
        return linear - F.softplus(logits).sum(-1).view(k, B)

    # ------------------------------------------------------------------ backward

    def backward(self, fp: ForwardPass, coef: Coefficients) -> None:
        """Write the gradient described by `coef` (see module docstring) into `buffer.grad`."""
        k, B = fp.log_w.shape
        rows = k * B
        dec = coef.decoder.reshape(rows, 1)
        path = coef.path.reshape(rows, 1)
        full = coef.score is coef.path
        score = None if (full or coef.score is None) else coef.score.reshape(rows, 1)
        L = len(fp.layers)

        def decoder_backward(net, tape, delta):
            """Parameters weighted by the decoder coefficients, the input by the path ones."""
            if coef.decoder is coef.path:
                return net.backward(tape, delta.mul_(path))
            return net.backward(tape, delta, weight_rows=dec).mul_(path)

        # d log p(x|h1) / d logits = x - sigmoid(logits), per sample
        delta = torch.sigmoid(fp.logits).view(k, B, -1).neg_().add_(fp.x).view(rows, -1)
        adj = [decoder_backward(self.decoders[0], fp.x_tape, delta)]  # d/dh_j, path-weighted
        adj += [torch.zeros_like(layer.h) for layer in fp.layers[1:]]
        for j in range(L - 1, 0, -1):  # Gaussian decoders p(h_{j-1} | h_j)
            layer = fp.layers[j]
            u_over_s = layer.u / layer.p_sigma
            delta = torch.cat([u_over_s, layer.u * layer.u - 1.0], dim=1)
            adj[j] += decoder_backward(self.decoders[j], layer.p_tape, delta)
            adj[j - 1].addcmul_(u_over_s, path, value=-1.0)
        adj[L - 1].addcmul_(fp.layers[L - 1].h, path, value=-1.0)  # prior N(0, I)

        for j in range(L - 1, -1, -1):  # recognition networks, top down
            layer = fp.layers[j]
            d = layer.h.shape[1]
            eps = layer.eps.view(rows, d) if j > 0 else layer.eps
            a = adj[j] if j > 0 else adj[j].view(k, B, d)
            # reparameterisation h = mu + sigma * eps, plus -log q = 0.5 eps^2 + log sigma
            a_sigma_eps = a * layer.sigma * eps
            c = path if j > 0 else path.view(k, B, 1)
            d_mu_in, d_rho_in = a, a_sigma_eps + c  # full gradient (also the input's)
            if full:
                d_mu, d_rho = d_mu_in, d_rho_in
            else:  # score term weighted by `score` (None: dropped) instead of `path`
                s = 0.0 if score is None else (score if j > 0 else score.view(k, B, 1))
                eps_sq = eps * eps
                d_mu = a + (c - s) * eps / layer.sigma
                d_rho = a_sigma_eps + c * eps_sq + s * (1.0 - eps_sq)
            if j == 0:  # the first encoder saw each point once: sum over the k samples
                self.encoders[0].backward(layer.q_tape, torch.cat([d_mu.sum(0), d_rho.sum(0)], dim=1), input_grad=False)
            elif full:
                adj[j - 1] += self.encoders[j].backward(layer.q_tape, torch.cat([d_mu, d_rho], 1))
            else:
                self.encoders[j].backward(layer.q_tape, torch.cat([d_mu, d_rho], 1), input_grad=False)
                adj[j - 1] += self.encoders[j].backward(
                    layer.q_tape, torch.cat([d_mu_in, d_rho_in], 1), param_grads=False
                )

    # ------------------------------------------------------------------ analysis

    @torch.no_grad()
    def posterior_means(self, x: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """E_q[h_j | h_{j-1}] per stochastic layer, the layer below being one sample of q
        (as the official code's active-unit count does)."""
        means, below = [], x
        for net, d in zip(self.encoders, self.architecture.latent_sizes):
            out = net.output(below)
            mu, sigma = out[:, :d], out[:, d:].exp()
            means.append(mu)
            below = mu + sigma * torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return means

    @torch.no_grad()
    def decode_mean(self, top: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bernoulli means of x for given top-layer latents, sampling the layers between."""
        h = top
        for j in range(len(self.decoders) - 1, 0, -1):
            out = self.decoders[j].output(h)
            d = out.shape[1] // 2
            h = out[:, :d] + out[:, d:].exp() * torch.randn(
                (h.shape[0], d), generator=generator, device=h.device, dtype=h.dtype
            )
        return torch.sigmoid(self.decoders[0].output(h))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        top = torch.randn(
            (n, self.architecture.latent_sizes[-1]), generator=generator, device=self.device, dtype=self.dtype
        )
        return self.decode_mean(top, generator)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bernoulli means of x after one pass up through q (sampling) and down through p."""
        fp = self.forward(x, 1, generator)
        return torch.sigmoid(fp.logits)

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        return {"architecture": self.architecture.spec(), "input_dim": self.input_dim, "params": self.buffer.data.cpu()}

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> IWAEModel:
        model = cls(Architecture.parse(state["architecture"]), state["input_dim"], device)
        model.buffer.data.copy_(state["params"])
        return model
