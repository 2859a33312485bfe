"""The true posterior seen up close (nbip/IWAE's tasks 1 and 3, seed 004).

For a model with one stochastic layer of two units the posterior p(z | x) ∝ p(x, z) can be
evaluated on a grid. `grid_posterior` does so adaptively: a wide grid first ([-6, 6]^2 by
default, doubled while its edge holds mass), then a fine grid over the box that holds all but a tiny part of the mass, widened
by a margin, so that the posteriors q gets wrong are not clipped (nbip's box of q's mean
± 2 sigma clips exactly those). On the fine grid: log p(x) by quadrature, q's density,
KL(q || p) and the mass left at the grid's edge.

Importance sampling with q as the proposal gives the rest: self-normalised estimates of
posterior means (`snis_means`, any number of layers), sampling-importance-resampling
(`sir`: with replacement by default; nbip drew without replacement, which biases the draws
towards q, an option here), and the effective sample size of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Grid:
    """A posterior on a regular grid: axes, log p(x, z) and log q(z | x) per cell."""

    xs: Tensor  # (n,) first coordinate of the cell centres
    ys: Tensor  # (m,)
    log_joint: Tensor  # (m, n): rows follow ys, columns xs
    log_q: Tensor  # (m, n)

    @property
    def cell(self) -> float:
        return float((self.xs[1] - self.xs[0]) * (self.ys[1] - self.ys[0]))

    @property
    def log_p_x(self) -> float:
        """log p(x) = log sum over cells of p(x, z) * cell area."""
        return (torch.logsumexp(self.log_joint.double().flatten(), 0) + math.log(self.cell)).item()

    @property
    def posterior(self) -> Tensor:
        """p(z | x) per cell, as probabilities (they sum to 1)."""
        return torch.softmax(self.log_joint.double().flatten(), 0).view_as(self.log_joint)

    @property
    def log_posterior_density(self) -> Tensor:
        return self.log_joint.double() - self.log_p_x

    def edge_mass(self) -> float:
        """The posterior mass in the outermost rows and columns of cells."""
        p = self.posterior
        inner = p[1:-1, 1:-1].sum()
        return (1.0 - inner).clamp_min(0).item()

    def mean(self) -> Tensor:
        p = self.posterior
        return torch.stack([(p.sum(0) * self.xs.double()).sum(), (p.sum(1) * self.ys.double()).sum()])


def _grid(model, x: Tensor, lo: Tensor, hi: Tensor, n: int) -> Grid:
    xs = torch.linspace(float(lo[0]), float(hi[0]), n, dtype=x.dtype, device=x.device)
    ys = torch.linspace(float(lo[1]), float(hi[1]), n, dtype=x.dtype, device=x.device)
    zz = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (n, n, 2): rows follow ys
    with torch.no_grad():
        log_joint = model.log_joint(x[None], zz.view(-1, 1, 2)).view(n, n)
        out = model.net("encoder.q0", x[None])
        log_q = model.layer.log_prob(zz.view(-1, 1, 2), out).view(n, n)
    return Grid(xs, ys, log_joint, log_q)


def grid_posterior(model, x: Tensor, wide: float = 6.0, coarse: int = 121, fine: int = 201,
                   tail: float = 1e-7, widest: float = 96.0) -> Grid:  # fmt: skip
    """The posterior of one data point x (D,) on an adaptive grid: a coarse grid over
    [-wide, wide]^2, doubled in size while its outermost cells hold more than `tail` of its
    mass (up to [-widest, widest]^2), then a fine one over the box holding all but `tail` of
    the coarse grid's mass, widened by a quarter of its size on each side."""
    if model.architecture.latent_sizes != [2] or model.architecture.n_stochastic != 1:
        raise ValueError("the posterior on a grid needs one stochastic layer of 2 units")
    g = _grid(model, x, torch.tensor([-wide, -wide]), torch.tensor([wide, wide]), coarse)
    while g.edge_mass() > tail and wide < widest:  # a posterior far out in the prior's tail
        wide *= 2
        g = _grid(model, x, torch.tensor([-wide, -wide]), torch.tensor([wide, wide]), coarse)
    p = g.posterior
    box = []
    for marginal, axis in ((p.sum(0), g.xs), (p.sum(1), g.ys)):
        cdf = torch.cumsum(marginal, 0)
        first = int((cdf > tail / 2).nonzero()[0])
        last = int((cdf < 1 - tail / 2).nonzero()[-1]) + 1 if (cdf < 1 - tail / 2).any() else len(axis) - 1
        step = float(axis[1] - axis[0])
        low, high = float(axis[first]) - step, float(axis[min(last, len(axis) - 1)]) + step
        margin = 0.25 * (high - low)
        box.append((low - margin, high + margin))
    lo = torch.tensor([box[0][0], box[1][0]])
    hi = torch.tensor([box[0][1], box[1][1]])
    return _grid(model, x, lo, hi, fine)


def q_moments(model, x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of q(z | x) for one data point x (D,): two (2,) tensors."""
    with torch.no_grad():
        mean, log_sigma = model.layer.split(model.net("encoder.q0", x[None]))
    return mean[0], log_sigma.exp()[0]


def grid_with_q(model, x: Tensor, grid: Grid, width: float, n: int = 201) -> Grid:
    """A grid over the box that holds both the posterior's `grid` and q (its mean ± `width`
    sd): q is often far broader than the posterior, so the posterior's own grid clips it."""
    mean, sd = q_moments(model, x)
    lo = torch.minimum(mean - width * sd, torch.stack([grid.xs[0], grid.ys[0]]))
    hi = torch.maximum(mean + width * sd, torch.stack([grid.xs[-1], grid.ys[-1]]))
    return _grid(model, x, lo, hi, n)


def kl_q_p(model, x: Tensor, grid: Grid, n: int = 201, width: float = 6.0) -> float:
    """KL(q(z|x) || p(z|x)) by quadrature on a grid over the box holding both q (its mean
    ± `width` sd) and the posterior's grid; log p(z|x) = log p(x, z) - log p(x) from `grid`."""
    wide = grid_with_q(model, x, grid, width, n)
    log_q = wide.log_q.double()
    q = torch.softmax(log_q.flatten(), 0).view_as(log_q)
    return (q * (log_q - (wide.log_joint.double() - grid.log_p_x))).sum().item()


def gaussian_levels(sd: Tensor, masses=(0.99, 0.86, 0.39)) -> list[float]:
    """Density levels of a 2-D Gaussian with diagonal standard deviations `sd` whose
    contours enclose the given masses (increasing levels): the mass within Mahalanobis
    radius r is 1 - exp(-r^2 / 2), where the density is exp(-r^2 / 2) / (2 pi sd_1 sd_2)."""
    peak = 1.0 / (2 * math.pi * float(sd[0]) * float(sd[1]))
    return sorted((1.0 - m) * peak for m in masses)


def importance_samples(model, x: Tensor, k: int, generator=None) -> tuple[list[Tensor], Tensor]:
    """k samples h ~ q(h | x) per point and their log weights: ([(k, B, d_j)], (k, B))."""
    B = x.shape[0]
    noise = [torch.randn((k, B, d), generator=generator, device=x.device, dtype=x.dtype)
             for d in model.architecture.latent_sizes]  # fmt: skip
    with torch.no_grad():
        log_w = model.log_weights(x, k, noise=noise)
        layers, below = [], x
        for j, d in enumerate(model.architecture.latent_sizes):  # the same samples, layer by layer
            out = model.net(f"encoder.q{j}", below)
            h, _ = model.layer.reparameterise(out, noise[j] if j == 0 else noise[j].view(k * B, d))
            h = h.reshape(k, B, d)
            layers.append(h)
            below = h.reshape(k * B, d)
    return layers, log_w


def snis_means(model, x: Tensor, k: int = 10, generator=None) -> list[Tensor]:
    """Self-normalised importance sampling estimates of E_p(h|x)[h_j] per layer, (B, d_j)."""
    layers, log_w = importance_samples(model, x, k, generator)
    w = torch.softmax(log_w.double(), 0)  # (k, B)
    return [(w[..., None] * h.double()).sum(0) for h in layers]


def effective_sample_size(log_w: Tensor) -> Tensor:
    """(sum w)^2 / sum w^2 per column of (k, B) log weights."""
    log_w = log_w.double()
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


def sir(samples: Tensor, log_w: Tensor, n: int, generator=None, replacement: bool = True) -> Tensor:
    """Sampling-importance-resampling: n of the k samples (k, d) drawn with probability
    proportional to their weights, with replacement (draws from the posterior as k grows)
    or without (nbip's choice: n distinct samples, biased towards q)."""
    probs = torch.softmax(log_w.double(), 0)
    index = torch.multinomial(probs, n, replacement=replacement, generator=generator)
    return samples[index]


def knn_accuracy(features: Tensor, labels: Tensor, reference: Tensor, k: int = 5) -> float:
    """k-nearest-neighbour label accuracy: the rows `reference` (indices) classify the others
    (majority vote, ties to the nearest). Evaluation gives a random half, the same for every
    run (`iwae.data.datasets.subset`), because test sets are ordered: MNIST's first 5,000 test
    images are the cleaner ones."""
    is_reference = torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    is_reference[reference.to(features.device)] = True
    reference, query = features[is_reference].double(), features[~is_reference].double()
    reference_labels, query_labels = labels[is_reference], labels[~is_reference]
    votes = []
    for i in range(0, query.shape[0], 1000):
        distance = torch.cdist(query[i : i + 1000], reference)
        nearest = distance.topk(k, largest=False).indices  # (q, k), nearest first
        neighbours = reference_labels[nearest]
        counts = torch.nn.functional.one_hot(neighbours, int(labels.max()) + 1).sum(1).double()
        counts += 0.5 * torch.nn.functional.one_hot(neighbours[:, 0], counts.shape[1])  # ties: the nearest
        votes.append(counts.argmax(1))
    return (torch.cat(votes) == query_labels).double().mean().item()
