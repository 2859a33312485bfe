"""Model structure: the paper's architectures, parameter layout, sampling helpers."""

from __future__ import annotations

import pytest
import torch

from iwae.errors import UserError
from iwae.model import ARCHITECTURES, Architecture, IWAEModel


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def test_paper_architectures():
    one = IWAEModel(ARCHITECTURES[1], 784)
    # 784-200-200-50 with a mirrored decoder; the Gaussian head outputs mean and log sigma
    assert one.buffer.data.numel() == n_params([784, 200, 200, 100]) + n_params([50, 200, 200, 784])
    two = IWAEModel(ARCHITECTURES[2], 784)
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


def test_encoder_and_decoder_are_contiguous():
    model = IWAEModel(ARCHITECTURES[2], 784)
    enc, dec = model.buffer.span("encoder"), model.buffer.span("decoder")
    assert enc.stop == dec.start and dec.stop == model.buffer.data.numel()


def test_samples_and_reconstructions_are_probabilities():
    model = IWAEModel(ARCHITECTURES[2], 784)
    model.initialize(0)
    g = torch.Generator().manual_seed(0)
    for out in (model.sample(16, g), model.reconstruct(torch.zeros(4, 784), g)):
        assert out.min() >= 0 and out.max() <= 1 and out.shape[1] == 784
    means = model.posterior_means(torch.zeros(5, 784), g)
    assert [m.shape for m in means] == [(5, 100), (5, 50)]


def test_state_round_trip():
    model = IWAEModel(ARCHITECTURES[1], 784)
    model.initialize(3)
    copy = IWAEModel.from_state(model.state())
    assert torch.equal(copy.buffer.data, model.buffer.data)
