"""The fused backend: the hand-written backward pass of Burda et al.'s model (Bernoulli
likelihood, standard normal prior, no condition), any number of stochastic layers.

`forward` computes the same log weights as `LayeredModel.forward`, keeping a tape of the
networks' activations; `backward` turns per-sample coefficients (`iwae.estimators.objectives`) into
gradients written into the model's flat gradient buffer:

    grad = sum_i decoder_i * d/dtheta log w_i                       (generative network)
         + sum_i path_i  * [d log w_i / dh_i] dh_i/dphi             (recognition, through samples)
         + sum_i score_i * d/dphi log w_i |_(h_i fixed)             (recognition, score term)

It is the fast path on a CPU at the paper's batch size of 20, where autograd's bookkeeping
costs more than the arithmetic (`python -m iwae bench`), and it is checked against the
autograd backend on both paper architectures and every objective (tests/test_gradients.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from iwae.errors import UserError
from iwae.estimators.objectives import Coefficients
from iwae.models.nets import TanhMLP

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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


class FusedBackend:
    """Hand-written forward and backward passes over a `LayeredModel`'s parameter buffer."""

    name = "fused"

    def __init__(self, model):
        why = why_not(model)
        if why:
            raise UserError(f"backend: 'fused' does not apply to this model: {why}; use 'autograd' or 'auto'")
        self.model = model
        self.latent_sizes = model.architecture.latent_sizes
        self.encoders = [TanhMLP(model.buffer, f"encoder.q{j}", s) for j, s in enumerate(model.encoder_sizes)]
        self.decoders = [TanhMLP(model.buffer, f"decoder.p{j}", s) for j, s in enumerate(model.decoder_sizes)]

    def log_weights(self, x: Tensor, k: int, generator=None, noise=None) -> Tensor:
        return self.forward(x, k, generator, noise).log_w

    def forward(
        self,
        x: Tensor,
        k: int,
        generator: torch.Generator | None = None,
        noise: list[Tensor] | None = None,
        stop_q: bool = False,
    ) -> ForwardPass:
        """Draw k samples h ~ q(h|x) per data point and return their log weights (k, B), as
        `LayeredModel.forward` does, keeping what `backward` needs. (`stop_q` is not needed:
        `backward` reads the coefficients.)"""
        B = x.shape[0]
        layers: list[_Layer] = []
        log_q = x.new_zeros(k, B)
        below = x
        for j, (net, d) in enumerate(zip(self.encoders, self.latent_sizes)):
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
        a pass over the hidden width rather than over all pixels of all k samples. The einsum
        is views and one batched product (no copy); a multiply-and-sum would be two kernels
        and a (k, B, hidden) temporary, and would round differently, moving every result.
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


def why_not(model) -> str | None:
    """Why the fused backend cannot train `model` (None: it can)."""
    if getattr(model, "family", None) != "layered":
        return f"it is written for the layered family, not {getattr(model, 'family', type(model).__name__)!r}"
    return model.fused_applies
