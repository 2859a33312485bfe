"""The hand-written backward pass against autograd, and the estimators' defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iwae.model import Architecture, Coefficients, IWAEModel
from iwae.objectives import REGISTRY, Objective

import reference

SPECS = ["vae", "iwae", "miwae-m2", "ciwae-b0.3", "piwae-m4", "stl", "dreg"]


def small_model(spec: str, input_dim: int, seed: int = 0) -> IWAEModel:
    torch.manual_seed(seed)
    model = IWAEModel(Architecture.parse(spec), input_dim, dtype=torch.float64)
    model.initialize(seed, output_bias=np.random.RandomState(seed).randn(input_dim) * 0.3)
    model.buffer.data.add_(torch.randn_like(model.buffer.data) * 0.05)  # break symmetries
    return model


def batch(model: IWAEModel, B: int, k: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, model.input_dim, generator=g, dtype=torch.float64) < 0.4).double()
    noise = [torch.randn(k, B, d, generator=g, dtype=torch.float64) for d in model.architecture.latent_sizes]
    return x, noise


@pytest.mark.parametrize("arch,input_dim", [("1", 784), ("2", 784), ("30-20-8/16-6/10-4", 12)])
def test_log_weights_match_independent_implementation(arch, input_dim):
    model = small_model(arch, input_dim)
    x, noise = batch(model, B=3, k=8)
    fp = model.forward(x, 8, noise=noise)
    expected = reference.log_weights(model, model.buffer.data.clone(), x, noise)
    torch.testing.assert_close(fp.log_w, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("arch,input_dim", [("1", 784), ("2", 784), ("30-20-8/16-6/10-4", 12)])
@pytest.mark.parametrize("spec", SPECS)
def test_gradient_matches_autograd_surrogate(arch, input_dim, spec):
    """Every estimator's gradient equals autograd's gradient of its surrogate loss."""
    model = small_model(arch, input_dim)
    x, noise = batch(model, B=3, k=8)
    objective = Objective.parse(spec)
    model.buffer.grad.fill_(float("nan"))  # every entry must be written
    fp = model.forward(x, 8, noise=noise)
    model.backward(fp, objective(fp.log_w).coefficients)
    expected = reference.surrogate_gradient(model, objective, x, noise)
    torch.testing.assert_close(model.buffer.grad, expected, rtol=1e-10, atol=1e-12)


def test_every_registered_objective_is_covered():
    assert {Objective.parse(s).name for s in SPECS} == set(REGISTRY)


def test_vae_and_iwae_agree_for_one_sample():
    model = small_model("2", 784)
    x, noise = batch(model, B=4, k=1)
    fp = model.forward(x, 1, noise=noise)
    grads = {}
    for spec in ("vae", "iwae"):
        est = Objective.parse(spec)(fp.log_w)
        model.backward(fp, est.coefficients)
        grads[spec] = (est.bound.clone(), model.buffer.grad.clone())
    torch.testing.assert_close(grads["vae"][0], grads["iwae"][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads["vae"][1], grads["iwae"][1], rtol=0, atol=1e-15)


def test_iwae_gradient_is_normalised_weights_times_grad_log_w():
    """grad L_k = sum_i w~_i grad log w_i, with grad log w_i from one-hot coefficients."""
    model = small_model("1", 784)
    k = 6
    x, noise = batch(model, B=1, k=k)
    fp = model.forward(x, k, noise=noise)
    per_sample = []
    for i in range(k):
        onehot = torch.zeros(k, 1, dtype=torch.float64)
        onehot[i] = 1.0
        model.backward(fp, Coefficients(onehot, onehot, onehot))
        per_sample.append(model.buffer.grad.clone())
    w = torch.softmax(fp.log_w[:, 0], 0)
    expected = sum(w[i] * per_sample[i] for i in range(k))
    model.backward(fp, Objective.parse("iwae")(fp.log_w).coefficients)
    torch.testing.assert_close(model.buffer.grad, expected, rtol=1e-10, atol=1e-14)
    # and the normalised weights are not all equal, so this is not the VAE gradient
    assert w.max() / w.min() > 1.5


def _mean_gradient(model, spec, x, k, reps, seed):
    """Mean and standard error of an estimator's gradient over `reps` independent draws."""
    g = torch.Generator().manual_seed(seed)
    objective = Objective.parse(spec)
    grads = []
    for _ in range(reps):
        fp = model.forward(x, k, g)
        model.backward(fp, objective(fp.log_w).coefficients)
        grads.append(model.buffer.grad.clone())
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / reps**0.5


def test_decoder_gradients_of_stl_dreg_piwae_are_iwae_gradients():
    """On the same samples, the generative network gets exactly the IWAE gradient."""
    model = small_model("2", 784)
    x, noise = batch(model, B=5, k=16)
    fp = model.forward(x, 16, noise=noise)
    dec = model.buffer.span("decoder")
    model.backward(fp, Objective.parse("iwae")(fp.log_w).coefficients)
    iwae_decoder = model.buffer.grad[dec].clone()
    for spec in ("stl", "dreg", "piwae-m4"):
        model.backward(fp, Objective.parse(spec)(fp.log_w).coefficients)
        torch.testing.assert_close(model.buffer.grad[dec], iwae_decoder, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("arch", ["8-2", "8-2/6-1"])
def test_dreg_encoder_gradient_is_unbiased_for_iwae(arch):
    """Tucker et al.: the DReG recognition gradient has the IWAE gradient's expectation."""
    model = small_model(arch, 10, seed=3)
    x, _ = batch(model, B=2, k=1, seed=4)
    enc = model.buffer.span("encoder")
    iwae_mean, iwae_se = _mean_gradient(model, "iwae", x, 8, 3000, seed=5)
    dreg_mean, dreg_se = _mean_gradient(model, "dreg", x, 8, 3000, seed=6)
    z = (dreg_mean[enc] - iwae_mean[enc]) / (dreg_se[enc] ** 2 + iwae_se[enc] ** 2).sqrt().clamp_min(1e-12)
    assert z.abs().max() < 5.0, z.abs().max()


def test_stl_encoder_gradient_is_unbiased_for_the_elbo():
    """With one sample STL is Roeder et al.'s estimator: unbiased for the ELBO gradient."""
    model = small_model("8-2", 10, seed=3)
    x, _ = batch(model, B=2, k=1, seed=4)
    enc = model.buffer.span("encoder")
    vae_mean, vae_se = _mean_gradient(model, "vae", x, 1, 4000, seed=7)
    stl_mean, stl_se = _mean_gradient(model, "stl", x, 1, 4000, seed=8)
    z = (stl_mean[enc] - vae_mean[enc]) / (stl_se[enc] ** 2 + vae_se[enc] ** 2).sqrt().clamp_min(1e-12)
    assert z.abs().max() < 5.0, z.abs().max()


def test_piwae_encoder_gradient_is_miwae_encoder_gradient():
    model = small_model("1", 784)
    x, noise = batch(model, B=3, k=16)
    fp = model.forward(x, 16, noise=noise)
    enc = model.buffer.span("encoder")
    model.backward(fp, Objective.parse("miwae-m4")(fp.log_w).coefficients)
    miwae_encoder = model.buffer.grad[enc].clone()
    model.backward(fp, Objective.parse("piwae-m4")(fp.log_w).coefficients)
    torch.testing.assert_close(model.buffer.grad[enc], miwae_encoder, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("spec", ["miwae", "nosuch", "ciwae-b1.5", "iwae-m2", "piwae-b2", "miwae-m0"])
def test_objective_spec_errors_name_the_spec(spec):
    from iwae.errors import UserError

    with pytest.raises(UserError, match=f"objective {spec!r}"):
        Objective.parse(spec)


def test_objective_spec_round_trip():
    for spec in SPECS:
        assert Objective.parse(spec).spec == spec
