"""Kingma & Welling's AEVB (seed 002): what would catch a wrong implementation of its model,
estimator B, MAP prior, Adagrad, step-size pilot, learning curves, the HMC marginal
likelihood estimator and the Frey Face data."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from iwae.backends import select
from iwae.errors import UserError
from iwae.estimators import marginal
from iwae.estimators.objectives import Objective
from iwae.models import AEVBModel
from iwae.models.likelihoods import Gaussian
from iwae.plan.architecture import Architecture
from iwae.plan.config import TrainConfig
from iwae.training.curves import curve_steps
from iwae.training.optim import Adagrad

F64 = torch.float64


def test_analytic_kl_against_torch_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 6, generator=g, dtype=F64)  # mean and log variance of 3 units, 5 points
    layer = Gaussian("identity", "log_var")
    kl = layer.kl_standard_normal(out)
    mean, sd = out[:, :3], (0.5 * out[:, 3:]).exp()
    torch.testing.assert_close(kl, kl_divergence(Normal(mean, sd), Normal(0.0, 1.0)).sum(-1))
    z, log_q = layer.reparameterise(out, torch.randn(200_000, 5, 3, generator=g, dtype=F64))
    draws = log_q - Normal(0.0, 1.0).log_prob(z).sum(-1)
    se = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - kl).abs() < 4 * se).all(), (draws.mean(0) - kl) / se


class LinearGaussian:
    """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I): log p(x) and p(z | x) are exact."""

    def __init__(self, d=2, D=5, s=0.7, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W, self.b, self.s = torch.randn(D, d, generator=g, dtype=F64), torch.randn(D, generator=g, dtype=F64), s
        self.d = d

    def log_joint(self, x, z):
        return Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    def log_p(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=F64)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self, x):
        precision = torch.eye(self.d, dtype=F64) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W @ cov.T / self.s**2
        return mean, cov

    def sgvb_bound(self, x, mean, log_var, n, g):
        """Estimator B (analytic KL, n samples of log p(x|z)) through the registered
        objective, for a diagonal Gaussian q."""
        out = torch.cat([mean, log_var], -1)
        layer = Gaussian("identity", "log_var")
        z, _ = layer.reparameterise(out, torch.randn(n, x.shape[0], self.d, generator=g, dtype=F64))
        log_lik = Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(-1)
        terms = {"log_lik": log_lik, "kl": layer.kl_standard_normal(out)}
        return Objective.parse("sgvb")(torch.zeros_like(log_lik), terms).bound


def test_estimator_b_is_below_log_p_and_equal_with_the_exact_posterior():
    model = LinearGaussian(d=1, D=4)  # one latent unit: the exact posterior is a diagonal Gaussian
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=F64) * 2
    mean, cov = model.posterior(x)
    exact = model.sgvb_bound(x, mean, cov.diagonal().log().expand(6, 1), 50_000, g)
    torch.testing.assert_close(exact, model.log_p(x), rtol=0, atol=0.01)
    worse = model.sgvb_bound(x, mean + 0.5, cov.diagonal().log().expand(6, 1) + 1.0, 50_000, g)
    assert (worse < model.log_p(x) - 0.05).all()


def test_hmc_estimator_converges_to_the_exact_marginal_likelihood():
    """Per point the error shrinks as the samples grow (50: KW's; here 0.2 nats on average),
    and it is unbiased over points."""
    model = LinearGaussian(d=2, D=5)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 5, generator=g, dtype=F64) * 1.5
    errors = {}
    for n in (50, 1000):
        z0 = torch.zeros(40, 2, dtype=F64)
        estimate, stats = marginal.log_marginal(model, x, marginal.HMCConfig(samples=n), g, z0=z0)
        errors[n] = estimate - model.log_p(x)
        assert 0.8 < stats["accept_rate"].mean() < 0.98  # the step size adapted towards 0.9
    assert errors[1000].abs().mean() < 0.03 and errors[1000].abs().mean() < errors[50].abs().mean() / 4
    assert abs(errors[1000].mean()) < 0.01 and abs(errors[50].mean()) < 0.1


def test_hmc_has_the_moments_of_a_known_gaussian_and_a_reversible_leapfrog():
    g = torch.Generator().manual_seed(3)
    target = MultivariateNormal(torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64))

    def log_density(z):
        return target.log_prob(z)

    z0 = torch.zeros(400, 2, dtype=F64)  # 400 chains
    samples, _ = marginal.hmc(log_density, z0, marginal.HMCConfig(samples=100, burn_in=100), g)
    flat = samples.reshape(-1, 2)
    torch.testing.assert_close(flat.mean(0), target.mean, rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(flat.T), target.covariance_matrix, rtol=0, atol=0.03)
    z, p = torch.randn(7, 2, generator=g, dtype=F64), torch.randn(7, 2, generator=g, dtype=F64)
    step = torch.full((7, 1), 0.1, dtype=F64)
    z1, p1, _ = marginal.leapfrog(z, p, step, 5, log_density)
    z2, p2, _ = marginal.leapfrog(z1, -p1, step, 5, log_density)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-12)
    torch.testing.assert_close(-p2, p, rtol=0, atol=1e-12)


def small_aevb(likelihood="bernoulli", D=12, spec="9-3", seed=0) -> AEVBModel:
    model = AEVBModel(Architecture.parse(spec), D, dtype=F64, likelihood=likelihood)
    model.initialize(seed)
    model.buffer.data.mul_(30)  # away from the tiny initial weights
    return model


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-sigmoid"])
def test_sgvb_gradient_is_the_gradient_of_its_bound(likelihood):
    """The registered estimator's coefficients, through the autograd backend, give the
    gradient of mean_i log p(x|z_i) - KL computed directly, on fixed noise."""
    model = small_aevb(likelihood)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 12, generator=g, dtype=F64)
    x = (x < 0.5).double() if likelihood == "bernoulli" else x
    noise = [torch.randn(2, 3, 3, generator=g, dtype=F64)]
    backend, objective = select(model), Objective.parse("sgvb")
    fp = backend.forward(x, 2, noise=noise)
    estimate = objective(fp.log_w.detach(), {k: v.detach() for k, v in fp.terms.items()})
    backend.backward(fp, estimate.coefficients)
    ours = model.buffer.grad.clone()
    fp = model.forward(x, 2, noise=noise)
    direct = fp.terms["log_lik"].mean(0) - fp.terms["kl"]  # per point
    grads = torch.autograd.grad(direct.mean(), list(model.leaves.values()))
    torch.testing.assert_close(ours, torch.cat([gr.reshape(-1) for gr in grads]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(estimate.bound, direct.detach())


def test_adagrad_accumulates_during_warm_up_then_steps():
    params, grads = torch.zeros(3, dtype=F64), torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    opt = Adagrad(params, grads, lr=0.1, warmup=2)
    opt.step()
    opt.step()
    assert torch.equal(params, torch.zeros(3, dtype=F64))
    opt.step()
    torch.testing.assert_close(params, 0.1 * grads / (math.sqrt(3) * grads.abs() + 1e-8))


def test_initialisation_and_refusals():
    model = AEVBModel(Architecture.parse("500-20"), 784)
    model.initialize(1)
    assert abs(model.buffer.data.std().item() - 0.01) < 5e-4 and abs(model.buffer.data.mean().item()) < 1e-4
    with pytest.raises(UserError, match="one hidden layer"):
        AEVBModel(Architecture.parse("2"), 784)
    # Kingma's code: the encoder's log-variance head and the decoder's output biases start at zero
    faces = AEVBModel(Architecture.parse("200-20"), 560, likelihood="gaussian-sigmoid")
    faces.initialize(1, "official")
    head, bias = faces.buffer.param("encoder.q0.w1"), faces.buffer.param("encoder.q0.b1")
    assert (head[:, 20:] == 0).all() and (bias[20:] == 0).all() and (faces.buffer.param("decoder.p0.b1") == 0).all()
    assert (head[:, :20] != 0).all() and (faces.buffer.param("decoder.p0.w1") != 0).all()  # the rest as KW's
    with pytest.raises(UserError, match="objective"):
        TrainConfig(data="x", objective="sgvb")  # the layered family gives no analytic KL
    with pytest.raises(UserError, match="layers"):
        TrainConfig(data="x", family="aevb", layers="200-200-50")


def test_curve_points_are_log_spaced_in_samples_seen():
    steps = curve_steps(total_steps=10_000, batch=100, per_decade=2)
    # 10^0 .. 10^2 samples fall in the first step; then 10^2.5, 10^3, ... samples; and the last step
    assert steps == [1, 4, 10, 32, 100, 317, 1000, 3163, 10000]


# --------------------------------------------------------------------------- training


def _cfg(data, **kw):
    base = dict(data=str(data), family="aevb", layers="20-3", objective="sgvb", k=1, batch_size=100,
                epochs_per_stage=[4], optimizer="adagrad", adagrad_warmup=5, sampling="replacement",
                weight_prior="normal", train_subset=1000, threads=1)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _params(run):
    return torch.load(run / "model.pt", weights_only=False)["model"]["params"]


def test_the_pilot_picks_a_rate_and_the_run_is_the_run_of_that_rate(prepared, tmp_path):
    from iwae.training.loop import train

    record = train(
        _cfg(prepared["mnist"], lr_pilot=[0.001, 0.02, 50.0], pilot_steps=20), tmp_path / "pilot", quiet=True
    )
    assert set(record["pilot"]) == {"0.001", "0.02", "50"} and record["first_lr"] == 0.02
    train(_cfg(prepared["mnist"], lr=0.02), tmp_path / "plain", quiet=True)
    assert torch.equal(_params(tmp_path / "pilot"), _params(tmp_path / "plain"))


def test_curve_is_written_beside_the_checkpoints_as_the_run_goes_and_kept_by_resume(prepared, tmp_path):
    from iwae.errors import Interrupted
    from iwae.training.loop import Trainer, train
    from iwae.training.run import build, callbacks

    cfg = _cfg(prepared["mnist"], lr=0.02, curve_per_decade=2)
    train(_cfg(prepared["mnist"], lr=0.02), tmp_path / "no-curve", quiet=True)
    run = build(cfg, tmp_path / "curve", True)
    t = Trainer(run, callbacks(run, progress=False))
    with pytest.raises(Interrupted):
        for i in range(1000):
            t.advance("step")
            if i == 25:  # inside the third epoch
                run.stop.requested = True
    assert not (tmp_path / "curve" / "curve.csv").exists()  # an output: written once, when the run ends
    with open(tmp_path / "curve" / "checkpoints" / "curve.csv") as f:  # the curve so far
        before = list(csv.DictReader(f))
    assert [int(r["samples"]) for r in before] == [100, 400, 1000]
    record = train(cfg, tmp_path / "curve", quiet=True)
    with open(tmp_path / "curve" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["samples"]) for r in rows] == [100, 400, 1000, 3200, 4000]
    assert rows[:3] == before and len(record["curve"]) == 5
    assert float(rows[-1]["train_bound"]) > float(rows[0]["train_bound"]) + 50  # it learns
    assert torch.equal(_params(tmp_path / "curve"), _params(tmp_path / "no-curve"))  # a stream of its own


def test_a_map_step_ascends_kingma_and_wellings_whole_objective(prepared, tmp_path):
    """The trainer's MAP step: its gradient, weights and biases, is 1 / N times the gradient of
    KW's (N / M) sum_batch L(x_i) + log p(theta), with a N(0, I) prior on the weight matrices.
    The prior's share is checked to matter: with the prior at M / N (100 times too strong)
    or without it, the gradient differs by far more than the tolerance."""
    from iwae.data import datasets
    from iwae.training.run import build, initialize
    from iwae.training.steps import train_step

    cfg = _cfg(prepared["mnist"], lr=0.02, adagrad_warmup=5, train_subset=500)  # in warm-up: no step is taken
    run = build(cfg, tmp_path / "map", True)
    initialize(run)
    model, n, m = run.model, run.x.shape[0], cfg.batch_size
    model.buffer.data.mul_(30)  # weights of a trained network's size, not 0.01
    x = datasets.binarize(run.x[:m], torch.Generator().manual_seed(0))
    before = model.buffer.data.clone()
    prior = run.step_state.prior
    train_step(run.backend, run.objective, run.opt, x, 1, torch.Generator().manual_seed(1), prior)
    assert torch.equal(model.buffer.data, before)
    ours = model.buffer.grad.clone()

    leaves = model.leaves  # the forward pass's own leaves
    fp = model.forward(x, 1, torch.Generator().manual_seed(1))  # the same noise
    bound = fp.terms["log_lik"].mean(0) - fp.terms["kl"]  # estimator B per point
    log_prior = sum(-0.5 * w.square().sum() for name, w in leaves.items() if ".w" in name)
    data_part = torch.autograd.grad(n / m * bound.sum(), list(leaves.values()), retain_graph=True)
    prior_part = torch.autograd.grad(log_prior, list(leaves.values()), allow_unused=True)
    prior_part = [torch.zeros_like(w) if g is None else g for w, g in zip(leaves.values(), prior_part)]
    flat = [torch.cat([g.reshape(-1) for g in grads]) for grads in (data_part, prior_part)]
    data_grad, prior_grad = flat[0] / n, flat[1] / n
    torch.testing.assert_close(ours, data_grad + prior_grad, rtol=1e-4, atol=1e-7)
    assert (prior_grad.abs().max() > 1e-4) and (prior_grad[model.buffer.span("encoder")].abs().max() > 1e-4)
    for wrong in (data_grad, data_grad + m * prior_grad):
        assert (ours - wrong).abs().max() > 100 * 1e-7 + 1e-4 * wrong.abs().max()
