"""IWAE with random network weights (seed 001): what would catch a wrong implementation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iwae import models
from iwae.backends import select
from iwae.errors import UserError
from iwae.estimators.likelihood import log_likelihood
from iwae.estimators.objectives import Objective
from iwae.models import LayeredModel, RandomWeightsModel
from iwae.plan.architecture import Architecture
from iwae.plan.config import TrainConfig

F64 = torch.float64


def random_model(spec="12-3", input_dim=10, random="both", log_sigma=-1.5, seed=0) -> RandomWeightsModel:
    model = RandomWeightsModel(Architecture.parse(spec), input_dim, dtype=F64, random=random, log_sigma_init=log_sigma)
    model.initialize(seed, output_bias=np.random.RandomState(seed).randn(input_dim) * 0.3)
    g = torch.Generator().manual_seed(seed)
    model.buffer.data.add_(torch.randn(model.buffer.data.shape, generator=g, dtype=F64) * 0.05)
    return model


def noise_for(model, k, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=F64) for shape in model.noise_shapes(k, B)]


def binary(B, D, seed=2):
    return (torch.rand(B, D, generator=torch.Generator().manual_seed(seed), dtype=F64) < 0.4).double()


@pytest.mark.parametrize("random", ["encoder", "both"])
def test_zero_weight_noise_is_the_plain_model(random):
    """sigma -> 0: the same log weights as the layered model with the means as its weights."""
    model = random_model("400-20", 784, random=random, log_sigma=-1e4)  # exp(-1e4) = 0 exactly
    plain = LayeredModel(Architecture.parse("400-20"), 784, dtype=F64)
    for name in plain.buffer.slices:
        plain.buffer.param(name).copy_(model.buffer.param(name))
    x, noise = binary(3, 784), noise_for(model, 5, 3)
    torch.testing.assert_close(model.log_weights(x, 5, noise=noise), plain.log_weights(x, 5, noise=noise[:1]),
                               rtol=0, atol=1e-9)  # fmt: skip


def test_local_reparameterisation_matches_explicit_weight_draws():
    """Pre-activations of a random layer: the mean and covariance of explicit draws of W, b;
    and two samples of one point are uncorrelated (each has weights of its own)."""
    model = random_model(log_sigma=-1.0)
    a = torch.rand(2, 10, generator=torch.Generator().manual_seed(3), dtype=F64)
    m, b = model.buffer.param("encoder.q0.w0"), model.buffer.param("encoder.q0.b0")
    sw, sb = model.buffer.param("encoder.q0.w0.log_sigma").exp(), model.buffer.param("encoder.q0.b0.log_sigma").exp()
    n, g = 20000, torch.Generator().manual_seed(4)
    eps = torch.randn(n, 2, 12, generator=g, dtype=F64)
    ours = model._linear("encoder.q0", 0, a, eps, False).view(n, 2, 12)
    w = m + sw * torch.randn(n, 10, 12, generator=g, dtype=F64)
    explicit = torch.einsum("pi,nij->npj", a, w) + b + sb * torch.randn(n, 2, 12, generator=g, dtype=F64)
    se = explicit.std(0) / math.sqrt(n)
    assert ((ours.mean(0) - explicit.mean(0)).abs() < 5 * se).all()
    torch.testing.assert_close(ours.var(0), explicit.var(0), rtol=0.06, atol=0)
    across_units = torch.corrcoef(ours[:, 0, :4].T)  # independent units
    assert (across_units - torch.eye(4, dtype=F64)).abs().max() < 0.05
    # two importance samples of one point (the point repeated n times, k = 2): separate weights
    same_point = a[:1].expand(n, 10)
    samples = model._linear("encoder.q0", 0, same_point, torch.randn(2, n, 12, generator=g, dtype=F64), False)
    samples = samples.view(2, n, 12)
    correlation = torch.corrcoef(torch.stack([samples[0, :, 0], samples[1, :, 0]]))[0, 1]
    assert abs(correlation) < 0.05


def test_average_weight_over_all_patterns_is_one():
    """On 3 binary pixels, E[w(x)] = p(x) for the mixture over q(theta): summed over all 8
    patterns, the average importance weight is 1 within Monte Carlo error."""
    model = random_model("6-2", 3, log_sigma=-0.7, seed=5)
    patterns = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=F64)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        w = torch.cat([model.log_weights(patterns, 2000, g).exp() for _ in range(20)])  # (40000, 8)
    total = w.mean(0).sum()
    se = (w.sum(1).std() / math.sqrt(w.shape[0])).item()
    assert abs(total.item() - 1) < 4 * se + 1e-3, (total.item(), se)


def test_gradients_match_finite_differences():
    model = random_model(log_sigma=-1.0)
    backend = select(model)
    assert backend.name == "autograd"
    x, noise = binary(3, 10), noise_for(model, 4, 3)
    objective = Objective.parse("iwae")

    def bound():
        with torch.no_grad():
            return objective(model.log_weights(x, 4, noise=noise)).bound.mean().item()

    fp = backend.forward(x, 4, noise=noise)
    backend.backward(fp, objective(fp.log_w.detach()).coefficients)
    grad = model.buffer.grad.clone()
    g = torch.Generator().manual_seed(7)
    for index in torch.randint(0, grad.numel(), (12,), generator=g).tolist():
        old = model.buffer.data[index].item()
        model.buffer.data[index] = old + 1e-6
        up = bound()
        model.buffer.data[index] = old - 1e-6
        down = bound()
        model.buffer.data[index] = old
        assert abs((up - down) / 2e-6 - grad[index].item()) < 1e-6 + 1e-4 * abs(grad[index].item()), index


def test_chunking_does_not_change_the_estimate():
    model = random_model(log_sigma=-1.0)
    x, noise = binary(3, 10), noise_for(model, 600, 3)
    whole = log_likelihood(model, x, 600, noise=noise, chunk=600)
    for chunk in (1, 77, 250):
        torch.testing.assert_close(log_likelihood(model, x, 600, noise=noise, chunk=chunk), whole, rtol=0, atol=1e-10)


def test_configuration_builds_the_family_and_refuses_what_it_does_not_support():
    cfg = TrainConfig(data="x", layers="400-20", random="encoder")
    model = models.build(cfg, 784)
    assert isinstance(model, RandomWeightsModel) and not model.randomised["decoder.p0"]
    assert isinstance(models.build(TrainConfig(data="x", layers="400-20"), 784), LayeredModel)
    copy = models.from_state(model.state())
    assert torch.equal(copy.buffer.data, model.buffer.data) and copy.random == "encoder"
    for bad, key in (({"random": "all"}, "random"), ({"random": "both", "objective": "dreg"}, "objective"),
                     ({"random": "both", "layers": "2"}, "layers")):  # fmt: skip
        with pytest.raises(UserError, match=key):
            TrainConfig(data="x", **bad)


def test_scales_and_samples():
    model = RandomWeightsModel(Architecture.parse("400-20"), 784, random="both")  # log sigma -6, as seed 001's runs
    model.initialize(0)
    scales = model.scales()
    assert set(scales) == {"encoder.q0.w0", "encoder.q0.w1", "decoder.p0.w0", "decoder.p0.w1"}
    sigma, ratio = scales["encoder.q0.w0"]
    assert torch.allclose(sigma, torch.full_like(sigma, math.exp(-6.0)))
    g = torch.Generator().manual_seed(0)
    for out in (model.sample(5, g), model.reconstruct(binary(4, 784).float(), g)):
        assert out.min() >= 0 and out.max() <= 1 and out.shape[1] == 784
    assert model.posterior_means(binary(4, 784).float())[0].shape == (4, 20)
