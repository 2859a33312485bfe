"""nbip's tasks (seed 004): the posterior on a grid, self-normalised importance sampling,
sampling-importance-resampling, conditioning on the label and the label mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iwae.data import datasets
from iwae.data.datasets import subset
from iwae.estimators import posterior
from iwae.estimators.likelihood import log_likelihood, mixture_log_likelihood
from iwae.estimators.posterior import knn_accuracy
from iwae.models import LayeredModel
from iwae.models.likelihoods import Gaussian
from iwae.plan.architecture import Architecture
from iwae.plan.config import TrainConfig

F64 = torch.float64


@pytest.fixture(scope="module")
def trained_2d(prepared, tmp_path_factory):
    """A model with a 2-D latent space, trained briefly on real MNIST, and test digits."""
    from iwae.training.loop import train

    out = tmp_path_factory.mktemp("twod") / "run"
    cfg = TrainConfig(data=str(prepared["mnist"]), layers="100-2", k=5, epochs_per_stage=[3], train_subset=3000,
                      threads=2)  # fmt: skip
    train(cfg, out, quiet=True)
    from iwae.models.store import load_model

    data = datasets.load(prepared["mnist"])
    x = datasets.binarize(data.test[:200:20], torch.Generator().manual_seed(123))
    return load_model(out / "model.pt"), x


def test_grid_log_p_x_agrees_with_l5000_and_holds_the_mass(trained_2d):
    model, x = trained_2d
    g = torch.Generator().manual_seed(0)
    grid_values, lk = [], []
    for row in x:
        grid = posterior.grid_posterior(model, row)
        assert grid.edge_mass() < 1e-4  # the adaptive box holds the posterior
        grid_values.append(grid.log_p_x)
        lk.append(log_likelihood(model, row[None], 5000, g, 1000).item())
    assert abs(np.mean(grid_values) - np.mean(lk)) < 0.05, (np.mean(grid_values), np.mean(lk))


class KnownPosterior:
    """log p(x, z) = log_p_x + log N(z; centre, 0.5^2 I), so the posterior is that Gaussian;
    q is N(0, I)."""

    architecture = Architecture.parse("10-2")
    layer = Gaussian()

    def __init__(self, centre: tuple[float, float], log_p_x: float = -7.0):
        self.posterior = torch.distributions.Normal(torch.tensor(centre, dtype=F64), 0.5)
        self.log_p_x = log_p_x

    def log_joint(self, x, z):
        return self.log_p_x + self.posterior.log_prob(z.double()).sum(-1)

    def net(self, name, x):
        return torch.zeros(x.shape[0], 4, dtype=F64)


def test_a_posterior_far_out_in_the_prior_tail_is_not_clipped():
    """The first grid grows until its edge holds no mass, so a posterior centred beyond it
    is found whole: log p(x) and its mean exactly, and nothing at the fine grid's edge."""
    model = KnownPosterior((9.0, -14.0))
    grid = posterior.grid_posterior(model, torch.zeros(10, dtype=F64))
    assert grid.edge_mass() < 1e-6
    assert abs(grid.log_p_x - model.log_p_x) < 1e-6
    torch.testing.assert_close(grid.mean(), torch.tensor([9.0, -14.0], dtype=F64), atol=1e-6, rtol=0)


def test_gaussian_levels_enclose_their_masses():
    """q's contours in the posterior figure: the levels of a 2-D Gaussian that hold 39, 86
    and 99 % of its mass, whatever part of it a plotting box holds."""
    sd = torch.tensor([0.3, 2.0], dtype=F64)
    z = torch.randn(200000, 2, generator=torch.Generator().manual_seed(8), dtype=F64) * sd
    density = torch.distributions.Normal(torch.zeros(2, dtype=F64), sd).log_prob(z).sum(-1).exp()
    for level, mass in zip(posterior.gaussian_levels(sd), (0.99, 0.86, 0.39)):
        assert abs((density >= level).double().mean().item() - mass) < 0.005


def test_elbo_is_log_p_x_minus_kl_on_the_grid(trained_2d):
    """ELBO = log p(x) - KL(q || p): the Monte Carlo ELBO against the grid's log p(x) and KL,
    also where q is much broader than the posterior."""
    model, x = trained_2d
    g = torch.Generator().manual_seed(7)
    gaps = []
    for row in x[:5]:
        grid = posterior.grid_posterior(model, row)
        kl = posterior.kl_q_p(model, row, grid)
        elbo = model.log_weights(row[None], 20000, g).double().mean().item()
        gaps.append(elbo - (grid.log_p_x - kl))
        assert kl > 0
    assert abs(np.mean(gaps)) < 0.05, gaps


def test_self_normalised_means_converge_to_the_grid_mean(trained_2d):
    model, x = trained_2d
    g = torch.Generator().manual_seed(1)
    errors = {}
    for k in (10, 20000):
        error = []
        for row in x[:5]:
            exact = posterior.grid_posterior(model, row).mean()
            estimate = posterior.snis_means(model, row[None], k, g)[0][0]
            error.append((estimate - exact).norm().item())
        errors[k] = np.mean(error)
    assert errors[20000] < 0.02 and errors[20000] < errors[10] / 3, errors


def test_sir_with_replacement_reproduces_a_known_gaussian():
    """Target N(1, 0.5^2), proposal N(0, 2^2): resampling with replacement gives the target's
    moments; without replacement (nbip's choice) the draws stay closer to the proposal."""
    g = torch.Generator().manual_seed(2)
    z = 2.0 * torch.randn(100_000, 1, generator=g, dtype=F64)
    target, proposal = torch.distributions.Normal(1.0, 0.5), torch.distributions.Normal(0.0, 2.0)
    log_w = target.log_prob(z[:, 0]) - proposal.log_prob(z[:, 0])
    drawn = posterior.sir(z, log_w, 20_000, g)
    assert abs(drawn.mean().item() - 1.0) < 0.02 and abs(drawn.std().item() - 0.5) < 0.02
    distinct = posterior.sir(z, log_w, 50_000, g, replacement=False)
    assert distinct.std().item() > 0.6  # biased towards q
    ess = posterior.effective_sample_size(log_w[:, None])[0].item()
    assert 0.1 * 100_000 < ess < 0.5 * 100_000  # about k / (E[w^2]) for these two Gaussians


def _conditional_pair(prior: str):
    """A conditional model whose label weights are zero, and the unconditional model with the
    same other parameters."""
    arch = Architecture.parse("12-3/8-2")
    plain = LayeredModel(arch, 10, dtype=F64)
    plain.initialize(0, output_bias=np.random.RandomState(0).randn(10) * 0.3)
    plain.buffer.data.add_(torch.randn(plain.buffer.data.shape, generator=torch.Generator().manual_seed(0),
                                       dtype=F64) * 0.1)  # fmt: skip
    given = LayeredModel(arch, 10, dtype=F64, prior=prior, condition_dim=10)
    given.initialize(1)
    for name in given.buffer.slices:
        target = given.buffer.param(name)
        if name.startswith("prior."):
            target.zero_()  # mean 0, log sigma 0: the standard normal
        elif name.endswith(".w0"):  # first layer: the rows of the input, then the label's rows
            source = plain.buffer.param(name)
            target.zero_()
            target[: source.shape[0]].copy_(source)
        else:
            target.copy_(plain.buffer.param(name))
    return plain, given


@pytest.mark.parametrize("prior", ["standard", "label"])
def test_zero_label_weights_make_the_conditional_model_the_unconditional_one(prior):
    plain, given = _conditional_pair(prior)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(4, 10, generator=g, dtype=F64) < 0.4).double()
    noise = [torch.randn(6, 4, d, generator=g, dtype=F64) for d in (3, 2)]
    c = torch.nn.functional.one_hot(torch.tensor([0, 3, 9, 3]), 10).double()
    torch.testing.assert_close(given.log_weights(x, 6, noise=noise, condition=c), plain.log_weights(x, 6, noise=noise),
                               rtol=0, atol=1e-12)  # fmt: skip


def test_the_label_mixture_is_never_below_its_single_label_terms():
    _, given = _conditional_pair("label")
    given.buffer.data.add_(torch.randn(given.buffer.data.shape, generator=torch.Generator().manual_seed(4),
                                       dtype=F64) * 0.3)  # labels now matter  # fmt: skip
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(7, 10, generator=g, dtype=F64) < 0.4).double()
    mixture, per_label = mixture_log_likelihood(given, x, 10, 200, g, batch=7, chunk=50)
    assert per_label.shape == (7, 10) and per_label.std(1).min() > 0.01  # the labels change p(x | y)
    assert (mixture[:, None] >= per_label - math.log(10) - 1e-12).all()
    torch.testing.assert_close(mixture, torch.logsumexp(per_label, 1) - math.log(10))


def test_knn_accuracy_separates_what_is_separable():
    g = torch.Generator().manual_seed(6)
    labels = torch.arange(400) % 4
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    features = centres[labels] + torch.randn(400, 2, generator=g)
    half = subset(400, 200)
    assert knn_accuracy(features, labels, half, 5) == 1.0
    assert knn_accuracy(torch.randn(400, 2, generator=g), labels, half, 5) < 0.4  # no information: chance


def test_knn_accuracy_splits_at_random_not_by_order():
    """Test sets are ordered (MNIST's first half is the cleaner): on rows sorted by label,
    a first-half/second-half split would classify labels it never saw; a random split
    does not."""
    labels = torch.arange(400) // 100  # sorted: 0s, then 1s, 2s, 3s
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    features = centres[labels] + torch.randn(400, 2, generator=torch.Generator().manual_seed(7))
    assert knn_accuracy(features, labels, subset(400, 200), 5) == 1.0
    assert knn_accuracy(features, labels, torch.arange(200), 5) == 0.0  # by order: labels it never saw


def test_analyses_a_model_does_not_support_are_refused_before_any_work(tmp_path):
    """One-line errors naming the model file, raised before the test set is evaluated."""
    from iwae.errors import UserError
    from iwae.evaluation.evaluate import _check_analyses
    from iwae.plan.config import EvalConfig

    path = tmp_path / "model.pt"
    plain = LayeredModel(Architecture.parse("20-10"), 784)
    given = LayeredModel(Architecture.parse("20-2"), 784, condition_dim=10)
    for model, conditional, option, says in (
        (plain, False, {"mixture_points": 5}, "needs a model conditioned on the label"),
        (plain, False, {"posterior_points": 5}, "one stochastic layer of 2 units, not layers '20-10'"),
        (given, True, {"posterior_points": 5}, "conditioned on it"),
        (given, True, {"snis_samples": 10}, "conditioned on it"),
    ):
        with pytest.raises(UserError, match=says) as error:
            _check_analyses(model, path, EvalConfig(**option), conditional)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    _check_analyses(given, path, EvalConfig(mixture_points=5), True)  # what it supports passes
