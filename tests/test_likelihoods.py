"""Likelihoods and priors against torch.distributions: densities, means, samples, bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import Normal

from iwae.models.likelihoods import Bernoulli, Gaussian, likelihood
from iwae.models.priors import ConditionalNormal, StandardNormal, prior

G = torch.Generator().manual_seed(0)


def test_bernoulli_log_prob_mean_sample():
    logits = torch.randn(3, 4, 7, generator=G, dtype=torch.float64) * 3
    x = (torch.rand(4, 7, generator=G, dtype=torch.float64) < 0.5).double()
    b = Bernoulli()
    expected = TorchBernoulli(logits=logits).log_prob(x.expand(3, 4, 7)).sum(-1)
    torch.testing.assert_close(b.log_prob(x, logits), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.mean(logits), TorchBernoulli(logits=logits).mean)
    draws = torch.stack([b.sample(logits[0], torch.Generator().manual_seed(s)) for s in range(4000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert (draws.mean(0) - b.mean(logits[0])).abs().max() < 0.05


def test_bernoulli_output_bias_is_logit_of_clipped_mean():
    x = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 0.3]])
    p = torch.tensor([1e-3, 1 - 1e-3, 0.4], dtype=torch.float64)
    torch.testing.assert_close(torch.from_numpy(Bernoulli().output_bias(x)), torch.log(p / (1 - p)))


@pytest.mark.parametrize("mean,scale", [("identity", "log_sigma"), ("sigmoid", "log_var")])
def test_gaussian_log_prob_mean_sample(mean, scale):
    out = torch.randn(3, 4, 10, generator=G, dtype=torch.float64)
    x = torch.rand(4, 5, generator=G, dtype=torch.float64)
    g = Gaussian(mean, scale)
    loc = torch.sigmoid(out[..., :5]) if mean == "sigmoid" else out[..., :5]
    sd = (0.5 * out[..., 5:]).exp() if scale == "log_var" else out[..., 5:].exp()
    torch.testing.assert_close(g.log_prob(x, out), Normal(loc, sd).log_prob(x.expand(3, 4, 5)).sum(-1))
    torch.testing.assert_close(g.mean(out), loc)
    draws = torch.stack([g.sample(out[0, 0], torch.Generator().manual_seed(s)) for s in range(6000)])
    assert (draws.mean(0) - loc[0, 0]).abs().max() < 4 * sd[0, 0].max() / math.sqrt(6000)
    torch.testing.assert_close(draws.std(0), sd[0, 0], rtol=0.06, atol=0)


def test_reparameterised_sample_and_its_density():
    out = torch.randn(4, 6, generator=G, dtype=torch.float64)
    eps = torch.randn(5, 4, 3, generator=G, dtype=torch.float64)
    g = Gaussian()
    h, log_q = g.reparameterise(out, eps)
    torch.testing.assert_close(h, out[:, :3] + out[:, 3:].exp() * eps)
    torch.testing.assert_close(log_q, Normal(out[:, :3], out[:, 3:].exp()).log_prob(h).sum(-1))


def test_gaussian_output_bias_matches_the_data():
    x = torch.rand(500, 4, generator=G, dtype=torch.float64) * 0.5 + 0.25
    bias = torch.from_numpy(Gaussian("sigmoid", "log_var").output_bias(x))
    torch.testing.assert_close(torch.sigmoid(bias[:4]), x.mean(0))
    torch.testing.assert_close(bias[4:].exp(), x.var(0, unbiased=False))
    assert likelihood("gaussian").output_size(7) == 14 and likelihood("bernoulli").output_size(7) == 7


def test_standard_normal_prior():
    h = torch.randn(3, 4, 5, generator=G, dtype=torch.float64)
    torch.testing.assert_close(StandardNormal().log_prob(h), Normal(0.0, 1.0).log_prob(h).sum(-1))
    draws = prior("standard").sample(20000, 3, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert draws.shape == (20000, 3) and draws.mean(0).abs().max() < 0.04 and (draws.std(0) - 1).abs().max() < 0.03


def test_conditional_normal_prior():
    p = ConditionalNormal(hidden=(8,))
    assert p.network_sizes(latent=3, condition_dim=10) == [10, 8, 6]
    out = torch.randn(4, 6, generator=G, dtype=torch.float64)  # the prior network's output
    h = torch.randn(2, 4, 3, generator=G, dtype=torch.float64)
    torch.testing.assert_close(p.log_prob(h, out), Normal(out[:, :3], out[:, 3:].exp()).log_prob(h).sum(-1))
    torch.testing.assert_close(p.mean(4, 3, out), out[:, :3])
    draws = torch.stack([p.sample(4, 3, torch.Generator().manual_seed(s), out) for s in range(4000)])
    assert (draws.mean(0) - out[:, :3]).abs().max() < 4 * out[:, 3:].exp().max() / math.sqrt(4000)
