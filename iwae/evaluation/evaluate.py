"""Evaluation: the k = 5000 log-likelihood estimate and the number of active units.

log p(x) is estimated by L_k = log (1/k) sum_i w_i, the samples drawn in chunks of bounded
size and combined by log-sum-exp in float64, so chunking changes memory use, not the value.
The test set is binarised once with a fixed, recorded seed (as the official code), from a
CPU random stream so that it is the same test set on every device and for every run.

The paper evaluates the whole test set. A smaller evaluation (`test_points`, `train_points`,
`valid_points`)
uses points drawn at random, the same for every run, never the first N: test files can be
sorted (Larochelle's binarised MNIST by digit, Omniglot by alphabet; MNIST's first 5,000 test
images are the cleaner, easier half), so the first N points are a biased sample.

A latent unit u is active if Cov_x(E_q[u | x]) > 0.01 (Burda et al., section 5.2), computed
on the first 500 training points as in the official code; for a layer above the first, the
posterior mean is taken given one sample of the layer below. The points' bits and those samples
come from streams of their own seeded by the evaluation's seed, so that the count is the same
whichever other estimates an evaluation makes (`iwae verify` counts again from them).
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from iwae import backends
from iwae.data import datasets
from iwae.data.datasets import subset
from iwae.errors import UserError
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk, mixture_log_likelihood
from iwae.estimators.marginal import HMCConfig, log_marginal
from iwae.estimators.posterior import effective_sample_size, grid_posterior, kl_q_p, knn_accuracy, snis_means
from iwae.models.store import load_model_file, model_of
from iwae.plan.config import EvalConfig
from iwae.system import devices, runtime
from iwae.system.files import check_writable, write_json
from iwae.system.progress import Progress
from iwae.system.provenance import environment, resolve_device

ACTIVE_THRESHOLD = 1e-2


@torch.no_grad()
def unit_variances(model, x: Tensor, generator: torch.Generator | None = None, condition=None) -> list[Tensor]:
    """Per stochastic layer, the variance over data points of each unit's posterior mean."""
    given = {} if condition is None else {"condition": condition}
    return [mu.double().var(0, unbiased=False) for mu in model.posterior_means(x, generator, **given)]


def active_units(model, data, seed: int, points: int, grey_levels: bool, conditional: bool) -> dict:
    """The active units on the first `points` training points, as eval.json records them: the
    points' bits and the samples of the layers below the top from streams of their own seeded
    `seed`, so that the count is the same whichever estimates ran before it (`iwae verify`
    counts again with this function)."""
    n = min(points, data.train.shape[0])
    x = data.binarized("train", seed, grey_levels, rows=n)
    condition = data.one_hot_labels("train")[:n].to(x.device) if conditional else None
    variances = unit_variances(model, x, torch.Generator(device=x.device).manual_seed(seed), condition)
    return {
        "seed": seed,  # of the points' bits and of the samples of the layers below the top
        "threshold": ACTIVE_THRESHOLD,
        "points": n,
        "per_layer": [int((v > ACTIVE_THRESHOLD).sum()) for v in variances],
        "variances": [v.tolist() for v in variances],
    }


def _summary(ll: Tensor, per_point: bool = False) -> dict:
    """Mean, its standard error and, for paired comparisons between runs, every point's value."""
    n = ll.numel()
    summary = {
        "log_likelihood": ll.mean().item(),
        "nll": -ll.mean().item(),
        "stderr": (ll.std().item() / math.sqrt(n)) if n > 1 else None,
        "points": n,
    }
    if per_point:
        summary["per_point"] = [round(v, 4) for v in ll.tolist()]
    return summary


def evaluate(model_path: Path, data_path: Path, out: Path, cfg: EvalConfig | None = None, quiet: bool = False) -> dict:
    """Evaluate a trained run as `cfg` says; write and return its record (eval.json)."""
    cfg = cfg or EvalConfig()
    started = time.monotonic()
    check_writable(out)  # before the work, not after it
    dev = devices.claim(resolve_device(cfg.device))
    k, batch, chunk = cfg.k, cfg.batch, cfg.chunk or default_chunk(dev, cfg.batch)
    runtime.setup(dev, cfg.threads)
    state = load_model_file(Path(model_path))
    model = model_of(state, Path(model_path), dev)
    backend = backends.select(model, cfg.backend)
    data = datasets.load(Path(data_path), dev)
    if data.meta["dataset"] != state["dataset"]:
        raise UserError(
            f"{data_path}: dataset {data.meta['dataset']!r}, but {model_path} was trained on {state['dataset']!r}"
        )
    _check_sizes(cfg, data, state["config"])
    # each split is binarised from a CPU stream of its own (`Data.binarized`), so a point has the
    # same bits on every device, whatever the subset's size and whichever estimates run; the
    # samples come from a stream on the device
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    grey_levels = bool(state["config"].get("grey_levels", False))  # seed 002's runs: never binarised

    @functools.cache
    def binary(split: str) -> Tensor:
        return data.binarized(split, cfg.seed, grey_levels)

    test_points = subset(data.test.shape[0], cfg.test_points).to(dev)
    test_set = binary("test")  # once: every analysis below sees the same bits of a point
    x_test = test_set[test_points]
    # a conditional model is evaluated given each point's label: L_k of log p(x | y)
    conditional = getattr(model, "condition_dim", 0) > 0
    _check_analyses(model, model_path, cfg, conditional)  # before any work: fail fast, write nothing

    def labels(split: str, rows: Tensor) -> Tensor | None:
        return data.one_hot_labels(split)[rows].to(dev) if conditional else None

    c_test = labels("test", test_points)
    n_test = x_test.shape[0]
    bar = Progress(n_test, f"{Path(model_path).parent.name} L_{k}", enabled=False if quiet else None)
    ll = dataset_log_likelihood(backend, x_test, k, gen, batch, chunk, bar, condition=c_test)
    bar.close()
    # per point, in the order of the (sorted) subset, for differences paired on the same points
    record = {"run": Path(model_path).parent.name, "k": k, "eval_seed": cfg.seed, "test": _summary(ll, per_point=True)}
    record["test"]["of"] = data.test.shape[0]
    record["test"]["conditional"] = conditional  # log p(x | y), not log p(x)
    record["bounds"] = {
        str(kk): _summary(dataset_log_likelihood(backend, x_test, kk, gen, batch, chunk, condition=c_test), True)
        for kk in cfg.extra_k
    }
    if cfg.train_points:
        # drawn from the training points the run saw (its train_subset, if any)
        seen = min(state["config"].get("train_subset") or data.train.shape[0], data.train.shape[0])
        rows = subset(seen, cfg.train_points).to(dev)
        x_train = binary("train")[:seen][rows]
        record["train"] = _summary(
            dataset_log_likelihood(backend, x_train, k, gen, batch, chunk, condition=labels("train", rows))
        )
        record["train"]["of"] = seen
    held_out = state["config"].get("train_split", "train") == "train"  # else the run trained on it
    if cfg.valid_points and data.valid.shape[0] and held_out:
        rows = subset(data.valid.shape[0], cfg.valid_points).to(dev)
        x_valid = binary("valid")[rows]
        record["valid"] = _summary(
            dataset_log_likelihood(backend, x_valid, k, gen, batch, chunk, condition=labels("valid", rows))
        )
        record["valid"]["of"] = data.valid.shape[0]
    if cfg.hmc_points:
        record["marginal"] = marginal_likelihoods(model, backend, data, binary, test_set, state, cfg, gen, chunk)
    if cfg.mixture_points:
        record["mixture"] = label_mixture(backend, test_set, data, cfg, gen, chunk)
    if cfg.posterior_points:
        record["posterior"] = posterior_on_grids(model, backend, test_set, cfg, gen, chunk)
    if cfg.snis_samples:
        record["layers"] = latent_layers(model, test_set, data, cfg, gen)
    record["active_units"] = active_units(model, data, cfg.seed, cfg.active_points, grey_levels, conditional)
    train_record_path = Path(model_path).parent / "train.json"
    record["training"] = _read_json(train_record_path) if train_record_path.exists() else {"config": state["config"]}
    record["evaluation"] = {
        **{f.name: getattr(cfg, f.name) for f in cfg.option_fields()},
        "chunk": chunk,
        "backend": backend.name,
    }
    record["eval_seconds"] = round(time.monotonic() - started, 2)
    record["environment"] = environment(dev)
    _check_finite(record, model_path)
    write_json(out, record)
    return record


def _check_sizes(cfg: EvalConfig, data, train_config: dict) -> None:
    """Refuse more test or training points than there are (validation points are capped at
    the split's size on purpose: MNIST's holds 400, fewer than the default 1,000)."""
    name = data.meta["dataset"]
    if cfg.test_points is not None and cfg.test_points > data.test.shape[0]:
        raise UserError(f"test_points: {cfg.test_points} exceeds the {data.test.shape[0]} test points of {name}")
    seen = min(train_config.get("train_subset") or data.train.shape[0], data.train.shape[0])
    if cfg.train_points > seen:
        raise UserError(f"train_points: {cfg.train_points} exceeds the {seen} training points the run saw")


def _check_finite(record: dict, model_path: Path) -> None:
    """A model whose estimates are not finite is refused rather than recorded."""
    summaries = [record["test"], *record["bounds"].values()] + [record[s] for s in ("train", "valid") if s in record]
    if not all(math.isfinite(s["log_likelihood"]) for s in summaries):
        raise UserError(f"{model_path}: its log-likelihood estimate is not finite (NaN or infinite); nothing written")


def marginal_likelihoods(model, backend, data, binary, test_set, state: dict, cfg: EvalConfig, gen, chunk: int) -> dict:
    """Kingma & Welling's HMC estimate of log p(x) and L_k on the same random points of the
    training points the run saw and of the test set (per split: both means, their paired
    difference, the sampler's acceptance rate)."""
    seen = min(state["config"].get("train_subset") or data.train.shape[0], data.train.shape[0])
    out = {"hmc": vars(HMCConfig())}
    for split, x, n in (("train", binary("train")[:seen], seen), ("test", test_set, data.test.shape[0])):
        points = x[subset(n, cfg.hmc_points).to(x.device)]
        hmc, stats = log_marginal(model, points, HMCConfig(), gen)
        lk = dataset_log_likelihood(backend, points, cfg.k, gen, cfg.batch, chunk)
        out[split] = {"hmc": _summary(hmc), f"L_{cfg.k}": _summary(lk), "hmc_minus_lk": _summary(hmc - lk),
                      "accept_rate": stats["accept_rate"].mean().item(), "of": n}  # fmt: skip
    return out


def _check_analyses(model, model_path: Path, cfg: EvalConfig, conditional: bool) -> None:
    """Refuse, in one line, the analyses a model does not support."""
    if cfg.mixture_points and not conditional:
        raise UserError(f"{model_path}: mixture_points needs a model conditioned on the label")
    if conditional and (cfg.posterior_points or cfg.snis_samples):
        raise UserError(f"{model_path}: posterior_points and snis_samples look at q without the label, "
                        "but this model is conditioned on it")  # fmt: skip
    arch = model.architecture
    if cfg.posterior_points and (arch.latent_sizes != [2] or arch.n_stochastic != 1):
        raise UserError(f"{model_path}: posterior_points needs one stochastic layer of 2 units, "
                        f"not layers {arch.spec()!r}")  # fmt: skip


def label_mixture(backend, x_test: Tensor, data, cfg: EvalConfig, gen, chunk: int) -> dict:
    """log p(x) = log sum_y (1/C) p(x | y) of a label-conditional model, from L_k of each
    log p(x | y) on random test points (the same points for every run); beside it L_k of
    log p(x | y) given the true label, which the mixture can never fall below by more than
    log C (on the same estimates it never does)."""
    points = subset(x_test.shape[0], cfg.mixture_points).to(x_test.device)
    x, true = x_test[points], data.labels_of("test")[points]
    mixture, per_label = mixture_log_likelihood(backend, x, data.classes, cfg.k, gen, cfg.batch, chunk)
    given_true = per_label.gather(1, true[:, None]).squeeze(1)
    return {"points": len(points), "classes": data.classes, "k": cfg.k, "log_p_x": _summary(mixture, per_point=True),
            "log_p_x_given_y": _summary(given_true, per_point=True), "label_accuracy": (per_label.argmax(1) == true).double().mean().item(),
            "mixture_minus_true_label": _summary(mixture - given_true)}  # fmt: skip


def posterior_on_grids(model, backend, x_test: Tensor, cfg: EvalConfig, gen, chunk: int) -> dict:
    """For random test points of a model with a 2-D latent space: log p(x) by quadrature on
    an adaptive grid beside L_k and the ELBO, KL(q || p) on the grid, the posterior mass at
    the grid's edge, and the effective sample size of k = 5000 importance weights."""
    points = subset(x_test.shape[0], cfg.posterior_points).to(x_test.device)
    rows = []
    for i in points.tolist():
        x = x_test[i]
        grid = grid_posterior(model, x)
        log_w = torch.cat([backend.log_weights(x[None], min(chunk, cfg.k - s), gen).double()
                           for s in range(0, cfg.k, chunk)])  # fmt: skip
        rows.append({
            "point": i, "grid_log_p_x": grid.log_p_x,
            "lk": (torch.logsumexp(log_w[:, 0], 0) - math.log(cfg.k)).item(), "elbo": log_w[:, 0].mean().item(),
            "kl_q_p": kl_q_p(model, x, grid), "edge_mass": grid.edge_mass(), "ess": effective_sample_size(log_w)[0].item(),
        })  # fmt: skip
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key != "point"}
    return {"points": len(rows), "k": cfg.k, "mean": mean, "per_point": rows}


def latent_layers(model, x_test: Tensor, data, cfg: EvalConfig, gen) -> list[dict]:
    """Per stochastic layer, on the test set: posterior means by self-normalised importance
    sampling (`snis_samples` samples), the active units among them, and how well they
    separate the labels (5-nearest-neighbour accuracy, a random half of the test points
    classifying the other)."""
    means = []
    for i in range(0, x_test.shape[0], 500):
        means.append(snis_means(model, x_test[i : i + 500], cfg.snis_samples, gen))
    layers = [torch.cat([m[j] for m in means]) for j in range(len(means[0]))]
    labels = data.labels_of("test") if data.labels is not None else None
    out = []
    for mu in layers:
        variance = mu.var(0, unbiased=False)
        entry = {"units": mu.shape[1], "active": int((variance > ACTIVE_THRESHOLD).sum())}
        if labels is not None:
            half = subset(mu.shape[0], mu.shape[0] // 2)  # the same reference points for every run
            entry["knn5_accuracy"] = knn_accuracy(mu, labels.to(mu.device), half, 5)
        out.append(entry)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON record ({e})") from None
