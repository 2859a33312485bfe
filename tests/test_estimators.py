"""The L_k estimator against models whose log p(x) is known exactly.

Small models with one-dimensional latent layers are trained briefly with the library's own
training step (`train_step`), then log p(x) is integrated on a grid: over h for one
stochastic layer, over (h1, h2) for two. The estimate is checked through both backends.
"""

from __future__ import annotations

import math

import pytest
import torch

from iwae.backends import select
from iwae.estimators.likelihood import log_likelihood
from iwae.estimators.objectives import Objective
from iwae.models import LayeredModel
from iwae.plan.architecture import Architecture
from iwae.training.optim import Adam
from iwae.training.steps import train_step

D = 10  # pixels


def trained_model(arch: str, seed: int = 0, steps: int = 400) -> tuple[LayeredModel, torch.Tensor]:
    """A small model fitted with IWAE (k = 10) to data drawn from another random model."""
    torch.manual_seed(seed)
    teacher = LayeredModel(Architecture.parse(arch), D, dtype=torch.float64)
    teacher.initialize(seed + 100)
    teacher.buffer.data.mul_(3.0)  # a sharper generative model than the initialisation
    g = torch.Generator().manual_seed(seed)
    data = torch.bernoulli(teacher.sample(400, g), generator=g)
    model = LayeredModel(Architecture.parse(arch), D, dtype=torch.float64)
    model.initialize(seed)
    opt = Adam(model.buffer.data, model.buffer.grad, lr=3e-3)
    backend, objective = select(model), Objective.parse("iwae")
    for step in range(steps):
        train_step(backend, objective, opt, data[(step * 20) % 400 :][:20], 10, g)
    return model, data[:8]


@torch.no_grad()
def exact_log_px(model: LayeredModel, x: torch.Tensor, points: int = 1201) -> torch.Tensor:
    """log p(x) by quadrature on a fine grid (latent layers must be one-dimensional)."""
    grid = torch.linspace(-12.0, 12.0, points, dtype=torch.float64)
    log_dh = math.log(float(grid[1] - grid[0]))
    log_prior = -0.5 * grid**2 - 0.5 * math.log(2 * math.pi)
    logits = model.net("decoder.p0", grid[:, None])  # p(x | h1 = grid)
    log_px_h1 = (x[:, None, :] * logits - torch.nn.functional.softplus(logits)).sum(-1)  # (B, G)
    if model.architecture.n_stochastic == 1:
        return torch.logsumexp(log_px_h1 + log_prior + log_dh, dim=1)
    out = model.net("decoder.p1", grid[:, None])  # p(h1 | h2 = grid): (G2, 2)
    mean, log_sigma = out[:, :1], out[:, 1:]
    log_p_h1_h2 = -0.5 * ((grid[None, :] - mean) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    # log p(x) = log sum_{h2} p(h2) sum_{h1} p(h1|h2) p(x|h1) dh1 dh2
    inner = torch.logsumexp(log_p_h1_h2[None, :, :] + log_px_h1[:, None, :] + log_dh, dim=2)  # (B, G2)
    return torch.logsumexp(inner + log_prior + log_dh, dim=1)


@pytest.fixture(scope="module", params=["12-1", "12-1/8-1"], ids=["one-layer", "two-layer"])
def known(request):
    model, x = trained_model(request.param)
    return model, x, exact_log_px(model, x)


def test_grid_is_fine_enough(known):
    """Halving the grid spacing changes the integral by far less than the test tolerances."""
    model, x, exact = known
    torch.testing.assert_close(exact_log_px(model, x, points=2401), exact, rtol=0, atol=1e-5)
    assert torch.all(exact < 0)


@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_l5000_is_within_005_nats_of_log_px(known, backend):
    model, x, exact = known
    g = torch.Generator().manual_seed(1)
    estimate = log_likelihood(select(model, backend), x, 5000, g, chunk=700)
    assert (estimate - exact).abs().max() < 0.05, estimate - exact
    assert (estimate - exact).mean().abs() < 0.02


def test_bounds_increase_with_k_towards_log_px(known):
    """E[L_1] <= E[L_5] <= E[L_50] <= log p(x), each expectation over many draws."""
    model, x, exact = known
    g = torch.Generator().manual_seed(2)
    reps = 400
    means, ses = [], []
    for k in (1, 5, 50):
        draws = torch.stack([log_likelihood(select(model), x, k, g) for _ in range(reps)])  # (reps, B)
        means.append(draws.mean(0))
        ses.append(draws.std(0) / math.sqrt(reps))
    for (m_lo, s_lo), (m_hi, s_hi) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert torch.all(m_lo < m_hi + 3 * (s_lo + s_hi))
    assert torch.all(means[-1] <= exact + 3 * ses[-1])
    # the bounds are not all equal: with k = 1 the gap to log p(x) is clearly visible
    mean_se = ses[0].square().sum().sqrt() / len(ses[0])
    assert (exact - means[0]).mean() > 5 * mean_se


def test_chunked_equals_unchunked():
    model, x = trained_model("12-1", steps=50)
    k = 1000
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(k, x.shape[0], 1, generator=g, dtype=torch.float64)]
    whole = log_likelihood(model, x, k, noise=noise, chunk=k)
    for chunk in (1, 37, 500):
        torch.testing.assert_close(log_likelihood(model, x, k, noise=noise, chunk=chunk), whole, rtol=0, atol=1e-10)


def test_float32_chunks_are_combined_in_float64():
    """log-sum-exp over chunks in float64: a large-k estimate is not limited by fp32 sums."""
    model = LayeredModel(Architecture.parse("1"), 784)
    model.initialize(0)
    x = (torch.rand(2, 784, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    result = log_likelihood(model, x, 64, torch.Generator().manual_seed(0), chunk=16)
    assert result.dtype == torch.float64
