"""Model structure: the paper's architectures, parameter layout, conditioning, sampling
helpers, saved state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iwae import models
from iwae.errors import UserError
from iwae.models import LayeredModel
from iwae.plan.architecture import ARCHITECTURES, Architecture


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def test_paper_architectures():
    one = LayeredModel(ARCHITECTURES[1], 784)
    # 784-200-200-50 with a mirrored decoder; the Gaussian head outputs mean and log sigma
    assert one.buffer.data.numel() == n_params([784, 200, 200, 100]) + n_params([50, 200, 200, 784])
    two = LayeredModel(ARCHITECTURES[2], 784)
    assert two.architecture.latent_sizes == [100, 50]
    assert two.buffer.data.numel() == (
        n_params([784, 200, 200, 200])
        + n_params([100, 100, 100, 100])
        + n_params([50, 100, 100, 200])
        + n_params([100, 200, 200, 784])
    )


def test_architecture_specs():
    assert Architecture.parse("1") == ARCHITECTURES[1]
    assert Architecture.parse("200-200-100/100-100-50") == ARCHITECTURES[2]
    assert Architecture.parse(2).spec() == "200-200-100/100-100-50"
    for bad in ("0", "200--50", "a-b", "200-0"):
        with pytest.raises(UserError):
            Architecture.parse(bad)


def test_encoder_and_generative_parameters_are_contiguous():
    model = LayeredModel(ARCHITECTURES[2], 784)
    enc, dec = model.buffer.span("encoder"), model.buffer.span("decoder")
    assert enc.stop == dec.start and dec.stop == model.buffer.data.numel()
    groups = model.parameter_groups()
    assert sum(p.numel() for p in groups["encoder"]) == enc.stop - enc.start
    assert sum(p.numel() for p in groups["generative"]) == dec.stop - dec.start


def test_first_encoder_runs_once_per_point():
    model = LayeredModel(Architecture.parse("2"), 784)
    model.initialize(0)
    seen = []
    original = model.net

    def spy(name, x, detach=False):
        seen.append((name, tuple(x.shape)))
        return original(name, x, detach)

    model.net = spy
    log_w = model.log_weights(torch.zeros(3, 784), 7, torch.Generator().manual_seed(0))
    assert log_w.shape == (7, 3)
    assert ("encoder.q0", (3, 784)) in seen  # the data, not 7 copies of it
    assert ("encoder.q1", (21, 100)) in seen  # above it, one row per sample


def test_samples_and_reconstructions_are_probabilities():
    model = LayeredModel(ARCHITECTURES[2], 784)
    model.initialize(0)
    g = torch.Generator().manual_seed(0)
    for out in (model.sample(16, g), model.reconstruct(torch.zeros(4, 784), g)):
        assert out.min() >= 0 and out.max() <= 1 and out.shape[1] == 784
    means = model.posterior_means(torch.zeros(5, 784), g)
    assert [m.shape for m in means] == [(5, 100), (5, 50)]


def test_state_round_trip_and_older_model_files():
    model = LayeredModel(ARCHITECTURES[1], 784)
    model.initialize(3)
    copy = models.from_state(model.state())
    assert torch.equal(copy.buffer.data, model.buffer.data)
    old = {k: v for k, v in model.state().items() if k in ("architecture", "input_dim", "params")}
    assert torch.equal(models.from_state(old).buffer.data, model.buffer.data)  # written before families
    with pytest.raises(UserError, match="family"):
        models.from_state({**model.state(), "family": "nosuch"})


def _with_zero_condition_weights(plain: LayeredModel, c: int) -> LayeredModel:
    """A conditional copy of `plain`: the same weights, zero weights from the condition."""
    cond = LayeredModel(plain.architecture, plain.input_dim, dtype=plain.dtype, condition_dim=c)
    cond.buffer.data.zero_()
    for name in plain.buffer.slices:
        theirs, ours = plain.buffer.param(name), cond.buffer.param(name)
        ours[tuple(slice(0, n) for n in theirs.shape)] = theirs  # the condition's rows stay 0
    return cond


def test_zero_condition_weights_give_the_unconditional_model():
    plain = LayeredModel(Architecture.parse("10-3/8-2"), 12, dtype=torch.float64)
    plain.initialize(1, output_bias=np.zeros(12))
    cond = _with_zero_condition_weights(plain, 4)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(5, 12, generator=g, dtype=torch.float64) < 0.5).double()
    labels = torch.nn.functional.one_hot(torch.arange(5) % 4, 4).double()
    noise = [torch.randn(6, 5, d, generator=g, dtype=torch.float64) for d in (3, 2)]
    torch.testing.assert_close(
        cond.log_weights(x, 6, noise=noise, condition=labels), plain.log_weights(x, 6, noise=noise), rtol=0, atol=1e-12
    )
    # and with non-zero weights the condition matters
    cond.buffer.data.add_(0.1)
    assert not torch.allclose(
        cond.log_weights(x, 6, noise=noise, condition=labels), plain.log_weights(x, 6, noise=noise)
    )


def test_label_prior_conditions_the_top_layer():
    model = LayeredModel(Architecture.parse("10-3"), 12, dtype=torch.float64, prior="label", condition_dim=4)
    model.initialize(0)
    assert "prior.net.w0" in model.buffer.slices and model.buffer.param("prior.net.w0").shape == (4, 200)
    assert model.buffer.param("prior.net.w0").abs().sum() > 0  # initialised
    labels = torch.eye(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert model.sample(4, g, condition=labels).shape == (4, 12)
    x = torch.zeros(4, 12, dtype=torch.float64)
    assert model.log_weights(x, 3, g, condition=labels).shape == (3, 4)
    with pytest.raises(UserError, match="needs a condition"):
        LayeredModel(Architecture.parse("10-3"), 12, prior="label")


def test_gaussian_likelihood_model_for_continuous_data():
    model = LayeredModel(Architecture.parse("20-2"), 12, dtype=torch.float64, likelihood="gaussian-sigmoid")
    assert model.decoder_sizes[0][-1] == 24  # mean and log variance per pixel
    x = torch.rand(6, 12, dtype=torch.float64)
    model.initialize(0, output_bias=model.likelihood.output_bias(x))
    out = model.reconstruct(x, torch.Generator().manual_seed(0))
    assert out.shape == (6, 12) and 0 < out.min() and out.max() < 1
    assert torch.isfinite(model.log_weights(x, 4, torch.Generator().manual_seed(1))).all()
