"""Evaluation: the k = 5000 log-likelihood estimate and the number of active units.

log p(x) is estimated by L_k = log (1/k) sum_i w_i, the samples drawn in chunks of bounded
size and combined by log-sum-exp in float64, so chunking changes memory use, not the value.
The test set is binarised once with a fixed, recorded seed (as the official code), from a
CPU random stream so that it is the same test set on every device and for every run.

The paper evaluates the whole test set. A smaller evaluation (`test_points`, `train_points`)
uses points drawn at random, the same for every run, never the first N: test files can be
sorted (Larochelle's binarised MNIST by digit, Omniglot by alphabet; MNIST's first 5,000 test
images are the cleaner, easier half), so the first N points are a biased sample.

A latent unit u is active if Cov_x(E_q[u | x]) > 0.01 (Burda et al., section 5.2), computed
on the first 500 training points as in the official code; for a layer above the first, the
posterior mean is taken given one sample of the layer below.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import Tensor

from iwae import backends, cuda, datasets, models, runtime
from iwae.checkpoints import load_model_file
from iwae.config import EvalConfig
from iwae.errors import UserError
from iwae.files import write_json
from iwae.progress import Progress
from iwae.provenance import environment, resolve_device

ACTIVE_THRESHOLD = 1e-2
SUBSET_SEED = 2016  # draws the evaluation subsets; fixed so that every run sees the same points


def subset(total: int, n: int | None) -> Tensor:
    """Indices of n of `total` points drawn at random without replacement, in increasing
    order (the same for every run); all of them when n is None or at least `total`."""
    if n is None or n >= total:
        return torch.arange(total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return order[:n].sort().values


def default_chunk(device, batch: int) -> int:
    """Samples per data point per pass: about 10,000 rows at a time on a CPU, where the
    working set then stays in cache, and 250,000 on a GPU (a few GB)."""
    rows = 250_000 if torch.device(device).type == "cuda" else 10_000
    return max(1, rows // batch)


@torch.no_grad()
def log_likelihood(
    model,
    x: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    chunk: int = 1000,
    noise: list[Tensor] | None = None,
) -> Tensor:
    """L_k for each row of x (float64), the k samples drawn `chunk` at a time.

    `model` is a model or a backend (anything with `log_weights(x, k, generator, noise)`).
    `noise` (one (k, B, d) tensor per stochastic layer) fixes the samples, for tests.
    """
    total = None
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        part = None if noise is None else [n[start:stop] for n in noise]
        log_w = model.log_weights(x, stop - start, generator, part).double()
        lse = torch.logsumexp(log_w, 0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(k)


@torch.no_grad()
def dataset_log_likelihood(
    model,
    x: Tensor,
    k: int,
    generator: torch.Generator,
    batch: int = 20,
    chunk: int = 1000,
    progress: Progress | None = None,
) -> Tensor:
    """L_k per data point over a whole (already binary) dataset, `batch` points at a time."""
    out = []
    for i in range(0, x.shape[0], batch):
        out.append(log_likelihood(model, x[i : i + batch], k, generator, chunk))
        if progress:
            progress.update(min(i + batch, x.shape[0]))
    return torch.cat(out)


@torch.no_grad()
def unit_variances(model, x: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
    """Per stochastic layer, the variance over data points of each unit's posterior mean."""
    return [mu.double().var(0, unbiased=False) for mu in model.posterior_means(x, generator)]


def _summary(ll: Tensor) -> dict:
    n = ll.numel()
    return {
        "log_likelihood": ll.mean().item(),
        "nll": -ll.mean().item(),
        "stderr": (ll.std().item() / math.sqrt(n)) if n > 1 else None,
        "points": n,
    }


def evaluate(model_path: Path, data_path: Path, out: Path, cfg: EvalConfig | None = None, quiet: bool = False) -> dict:
    """Evaluate a trained run as `cfg` says; write and return its record (eval.json)."""
    cfg = cfg or EvalConfig()
    started = time.monotonic()
    dev = cuda.claim(resolve_device(cfg.device))
    k, batch, chunk = cfg.k, cfg.batch, cfg.chunk or default_chunk(dev, cfg.batch)
    runtime.setup(dev, cfg.threads)
    state = load_model_file(Path(model_path))
    model = models.from_state(state["model"], dev)
    backend = backends.select(model, cfg.backend)
    data = datasets.load(Path(data_path), dev)
    if data.meta["dataset"] != state["dataset"]:
        raise UserError(
            f"{data_path}: dataset {data.meta['dataset']!r}, but {model_path} was trained on {state['dataset']!r}"
        )
    # binarisations come from a CPU stream, so the test set is the same on every device;
    # the samples come from a stream on the device
    bits = torch.Generator().manual_seed(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)

    grey_levels = bool(state["config"].get("grey_levels", False))  # seed 002's runs: never binarised

    def binary(x: Tensor) -> Tensor:
        return datasets.binarize(x.cpu(), bits).to(dev) if data.dynamic and not grey_levels else x

    # the whole test set is binarised, then subsampled: a point gets the same bits in every
    # evaluation, whatever the subset's size
    x_test = binary(data.test)[subset(data.test.shape[0], cfg.test_points).to(dev)]
    n_test = x_test.shape[0]
    bar = Progress(n_test, f"{Path(model_path).parent.name} L_{k}", enabled=False if quiet else None)
    ll = dataset_log_likelihood(backend, x_test, k, gen, batch, chunk, bar)
    bar.close()
    record = {"run": Path(model_path).parent.name, "k": k, "eval_seed": cfg.seed, "test": _summary(ll)}
    record["test"]["of"] = data.test.shape[0]
    # per point, in the order of the (sorted) subset, for differences paired on the same points
    record["test"]["per_point"] = [round(v, 4) for v in ll.tolist()]
    record["bounds"] = {
        str(kk): _summary(dataset_log_likelihood(backend, x_test, kk, gen, batch, chunk)) for kk in cfg.extra_k
    }
    if cfg.train_points:
        # drawn from the training points the run saw (its train_subset, if any)
        seen = min(state["config"].get("train_subset") or data.train.shape[0], data.train.shape[0])
        x_train = binary(data.train[:seen][subset(seen, cfg.train_points).to(dev)])
        record["train"] = _summary(dataset_log_likelihood(backend, x_train, k, gen, batch, chunk))
        record["train"]["of"] = seen
    if cfg.hmc_points:
        record["marginal"] = marginal_likelihoods(model, backend, data, binary, state, cfg, gen, chunk)
    variances = unit_variances(model, binary(data.train[: cfg.active_points]), gen)
    record["active_units"] = {
        "threshold": ACTIVE_THRESHOLD,
        "points": min(cfg.active_points, data.train.shape[0]),
        "per_layer": [int((v > ACTIVE_THRESHOLD).sum()) for v in variances],
        "variances": [v.tolist() for v in variances],
    }
    train_record_path = Path(model_path).parent / "train.json"
    record["training"] = _read_json(train_record_path) if train_record_path.exists() else {"config": state["config"]}
    record["evaluation"] = {
        **{f.name: getattr(cfg, f.name) for f in cfg.option_fields()},
        "chunk": chunk,
        "backend": backend.name,
    }
    record["eval_seconds"] = round(time.monotonic() - started, 2)
    record["environment"] = environment(dev)
    write_json(out, record)
    return record


def marginal_likelihoods(model, backend, data, binary, state: dict, cfg: EvalConfig, gen, chunk: int) -> dict:
    """Kingma & Welling's HMC estimate of log p(x) and L_k on the same random points of the
    training points the run saw and of the test set (per split: both means, their paired
    difference, the sampler's acceptance rate)."""
    from iwae.marginal import HMCConfig, log_marginal

    seen = min(state["config"].get("train_subset") or data.train.shape[0], data.train.shape[0])
    out = {"hmc": vars(HMCConfig())}
    for split, x, n in (("train", data.train[:seen], seen), ("test", data.test, data.test.shape[0])):
        points = binary(x)[subset(n, cfg.hmc_points).to(x.device)]
        hmc, stats = log_marginal(model, points, HMCConfig(), gen)
        lk = dataset_log_likelihood(backend, points, cfg.k, gen, cfg.batch, chunk)
        out[split] = {"hmc": _summary(hmc), f"L_{cfg.k}": _summary(lk), "hmc_minus_lk": _summary(hmc - lk),
                      "accept_rate": stats["accept_rate"].mean().item(), "of": n}  # fmt: skip
    return out


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON record ({e})") from None
