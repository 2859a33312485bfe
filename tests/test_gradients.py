"""The contract between the backends, and the estimators' defining properties.

The autograd backend differentiates the model's forward pass; it is the reference for the
hand-written (fused) one: the same log weights and the same gradients, for both paper
architectures, a deeper one, and every registered objective.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iwae.backends import AutogradBackend, FusedBackend, select
from iwae.errors import UserError
from iwae.estimators.objectives import REGISTRY, Coefficients, Objective
from iwae.models import LayeredModel
from iwae.plan.architecture import Architecture

SPECS = ["vae", "iwae", "miwae-m2", "ciwae-b0.3", "piwae-m4", "stl", "dreg"]
ARCHITECTURES = [("1", 784), ("2", 784), ("30-20-8/16-6/10-4", 12)]


def small_model(spec: str, input_dim: int, seed: int = 0) -> LayeredModel:
    torch.manual_seed(seed)
    model = LayeredModel(Architecture.parse(spec), input_dim, dtype=torch.float64)
    model.initialize(seed, output_bias=np.random.RandomState(seed).randn(input_dim) * 0.3)
    model.buffer.data.add_(torch.randn_like(model.buffer.data) * 0.05)  # break symmetries
    return model


def batch(model: LayeredModel, B: int, k: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, model.input_dim, generator=g, dtype=torch.float64) < 0.4).double()
    noise = [torch.randn(k, B, d, generator=g, dtype=torch.float64) for d in model.architecture.latent_sizes]
    return x, noise


def gradient(backend, objective: Objective, x, noise) -> tuple[torch.Tensor, torch.Tensor]:
    """(log weights, gradient of the objective) on fixed noise."""
    k = noise[0].shape[0]
    backend.model.buffer.grad.fill_(float("nan"))  # every entry must be written
    fp = backend.forward(x, k, noise=noise, stop_q=objective.stops_q)
    backend.backward(fp, objective(fp.log_w.detach()).coefficients)
    return fp.log_w.detach().clone(), backend.model.buffer.grad.clone()


@pytest.mark.parametrize("arch,input_dim", ARCHITECTURES)
@pytest.mark.parametrize("spec", SPECS)
def test_fused_backend_matches_autograd(arch, input_dim, spec):
    """The contract: the same log weights and gradients from the hand-written backward pass
    as from autograd on the model's forward pass (float64, the same noise)."""
    model = small_model(arch, input_dim)
    x, noise = batch(model, B=3, k=8)
    objective = Objective.parse(spec)
    log_w_fused, grad_fused = gradient(FusedBackend(model), objective, x, noise)
    log_w_auto, grad_auto = gradient(AutogradBackend(model), objective, x, noise)
    torch.testing.assert_close(log_w_fused, log_w_auto, rtol=1e-12, atol=1e-9)
    assert torch.isfinite(grad_fused).all() and torch.isfinite(grad_auto).all()
    scale = grad_auto.abs().max()
    assert (grad_fused - grad_auto).abs().max() <= 1e-10 * scale, (grad_fused - grad_auto).abs().max() / scale


def test_every_registered_objective_is_covered():
    """Every objective is in the contract test, except those written in other terms than the
    log weights, which the fused backend does not serve (sgvb: tests/test_aevb.py)."""
    assert {Objective.parse(s).name for s in SPECS} == {n for n, e in REGISTRY.items() if not e.terms}
    assert {n for n, e in REGISTRY.items() if e.terms} == {"sgvb"}


def test_autograd_gradient_lands_in_the_flat_buffer():
    """The autograd leaves share the buffer: a step of the optimizer is seen by the next
    forward pass, and gradients accumulate into buffer.grad, not into copies."""
    model = small_model("1", 784)
    backend = AutogradBackend(model)
    x, noise = batch(model, B=2, k=3)
    first = backend.log_weights(x, 3, noise=noise).detach().clone()
    fp = backend.forward(x, 3, noise=noise)
    backend.backward(fp, Objective.parse("iwae")(fp.log_w.detach()).coefficients)
    assert model.buffer.grad.abs().sum() > 0
    leaf = model.leaves["decoder.p0.w2"]
    assert leaf.grad.data_ptr() == model.buffer.grad_of("decoder.p0.w2").data_ptr()
    model.buffer.data.add_(model.buffer.grad, alpha=1e-3)
    assert not torch.equal(backend.log_weights(x, 3, noise=noise), first)


def test_auto_picks_fused_for_the_paper_model_and_autograd_elsewhere():
    assert select(small_model("1", 12)).name == "fused"
    conditional = LayeredModel(Architecture.parse("8-2"), 12, condition_dim=3)
    assert select(conditional).name == "autograd"
    with pytest.raises(UserError, match="backend: 'fused' does not apply"):
        select(conditional, "fused")
    with pytest.raises(UserError, match="backend"):
        select(conditional, "jax")


def test_vae_and_iwae_agree_for_one_sample():
    model = small_model("2", 784)
    x, noise = batch(model, B=4, k=1)
    backend = FusedBackend(model)
    grads = {}
    for spec in ("vae", "iwae"):
        fp = backend.forward(x, 1, noise=noise)
        est = Objective.parse(spec)(fp.log_w)
        backend.backward(fp, est.coefficients)
        grads[spec] = (est.bound.clone(), model.buffer.grad.clone())
    torch.testing.assert_close(grads["vae"][0], grads["iwae"][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(grads["vae"][1], grads["iwae"][1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend_class", [FusedBackend, AutogradBackend])
@pytest.mark.parametrize("spec", ["vae", "iwae", "stl"])
def test_the_official_codes_reduction_is_the_gradient_of_the_minibatch_sum(backend_class, spec):
    """reduction 'sum' (the official code: T.grad of the minibatch sum): B times the gradient
    of the mean, for the full gradient and for one that drops the score term."""
    model = small_model("1", 784)
    x, noise = batch(model, B=6, k=3)
    backend, objective = backend_class(model), Objective.parse(spec)
    _, mean = gradient(backend, objective, x, noise)
    fp = backend.forward(x, 3, noise=noise, stop_q=objective.stops_q)
    coefficients = objective(fp.log_w.detach()).coefficients.scaled(6.0)
    assert (coefficients.score is coefficients.path) == (spec != "stl")  # the full gradient stays the full one
    backend.backward(fp, coefficients)
    torch.testing.assert_close(model.buffer.grad, 6.0 * mean, rtol=1e-10, atol=1e-12)  # float64 sums, reordered


@pytest.mark.parametrize("backend_class", [FusedBackend, AutogradBackend])
def test_iwae_gradient_is_normalised_weights_times_grad_log_w(backend_class):
    """grad L_k = sum_i w~_i grad log w_i, with grad log w_i from one-hot coefficients."""
    model = small_model("1", 784)
    backend = backend_class(model)
    k = 6
    x, noise = batch(model, B=1, k=k)
    per_sample = []
    for i in range(k):
        onehot = torch.zeros(k, 1, dtype=torch.float64)
        onehot[i] = 1.0
        backend.backward(backend.forward(x, k, noise=noise), Coefficients(onehot, onehot, onehot))
        per_sample.append(model.buffer.grad.clone())
    fp = backend.forward(x, k, noise=noise)
    w = torch.softmax(fp.log_w.detach()[:, 0], 0)
    expected = sum(w[i] * per_sample[i] for i in range(k))
    backend.backward(fp, Objective.parse("iwae")(fp.log_w.detach()).coefficients)
    torch.testing.assert_close(model.buffer.grad, expected, rtol=1e-10, atol=1e-14)
    # and the normalised weights are not all equal, so this is not the VAE gradient
    assert w.max() / w.min() > 1.5


def _mean_gradient(backend, spec, x, k, reps, seed):
    """Mean and standard error of an estimator's gradient over `reps` independent draws."""
    g = torch.Generator().manual_seed(seed)
    objective = Objective.parse(spec)
    grads = []
    for _ in range(reps):
        fp = backend.forward(x, k, g, stop_q=objective.stops_q)
        backend.backward(fp, objective(fp.log_w.detach()).coefficients)
        grads.append(backend.model.buffer.grad.clone())
    grads = torch.stack(grads)
    return grads.mean(0), grads.std(0) / reps**0.5


def test_decoder_gradients_of_stl_dreg_piwae_are_iwae_gradients():
    """On the same samples, the generative network gets exactly the IWAE gradient."""
    model = small_model("2", 784)
    x, noise = batch(model, B=5, k=16)
    backend = FusedBackend(model)
    fp = backend.forward(x, 16, noise=noise)
    dec = model.buffer.span("decoder")
    backend.backward(fp, Objective.parse("iwae")(fp.log_w).coefficients)
    iwae_decoder = model.buffer.grad[dec].clone()
    for spec in ("stl", "dreg", "piwae-m4"):
        backend.backward(fp, Objective.parse(spec)(fp.log_w).coefficients)
        torch.testing.assert_close(model.buffer.grad[dec], iwae_decoder, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("arch", ["8-2", "8-2/6-1"])
def test_dreg_encoder_gradient_is_unbiased_for_iwae(arch):
    """Tucker et al.: the DReG recognition gradient has the IWAE gradient's expectation."""
    model = small_model(arch, 10, seed=3)
    backend = select(model)
    x, _ = batch(model, B=2, k=1, seed=4)
    enc = model.buffer.span("encoder")
    iwae_mean, iwae_se = _mean_gradient(backend, "iwae", x, 8, 3000, seed=5)
    dreg_mean, dreg_se = _mean_gradient(backend, "dreg", x, 8, 3000, seed=6)
    z = (dreg_mean[enc] - iwae_mean[enc]) / (dreg_se[enc] ** 2 + iwae_se[enc] ** 2).sqrt().clamp_min(1e-12)
    assert z.abs().max() < 5.0, z.abs().max()


def test_stl_encoder_gradient_is_unbiased_for_the_elbo():
    """With one sample STL is Roeder et al.'s estimator: unbiased for the ELBO gradient."""
    model = small_model("8-2", 10, seed=3)
    backend = select(model)
    x, _ = batch(model, B=2, k=1, seed=4)
    enc = model.buffer.span("encoder")
    vae_mean, vae_se = _mean_gradient(backend, "vae", x, 1, 4000, seed=7)
    stl_mean, stl_se = _mean_gradient(backend, "stl", x, 1, 4000, seed=8)
    z = (stl_mean[enc] - vae_mean[enc]) / (stl_se[enc] ** 2 + vae_se[enc] ** 2).sqrt().clamp_min(1e-12)
    assert z.abs().max() < 5.0, z.abs().max()


def test_piwae_encoder_gradient_is_miwae_encoder_gradient():
    model = small_model("1", 784)
    x, noise = batch(model, B=3, k=16)
    backend = FusedBackend(model)
    fp = backend.forward(x, 16, noise=noise)
    enc = model.buffer.span("encoder")
    backend.backward(fp, Objective.parse("miwae-m4")(fp.log_w).coefficients)
    miwae_encoder = model.buffer.grad[enc].clone()
    backend.backward(fp, Objective.parse("piwae-m4")(fp.log_w).coefficients)
    torch.testing.assert_close(model.buffer.grad[enc], miwae_encoder, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("spec", ["miwae", "nosuch", "ciwae-b1.5", "iwae-m2", "piwae-b2", "miwae-m0"])
def test_objective_spec_errors_name_the_spec(spec):
    with pytest.raises(UserError, match=f"objective {spec!r}"):
        Objective.parse(spec)


def test_objective_spec_round_trip_and_labels():
    for spec in SPECS:
        assert Objective.parse(spec).spec == spec
    labels = [Objective.parse(s).label for s in SPECS]
    assert labels == ["VAE", "IWAE", "MIWAE(M=2)", "CIWAE(β=0.3)", "PIWAE(M=4)", "STL", "DReG"]
