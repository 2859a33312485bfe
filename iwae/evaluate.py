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

from iwae import datasets, runtime
from iwae.errors import UserError
from iwae.files import write_json
from iwae.model import IWAEModel
from iwae.progress import Progress
from iwae.provenance import environment, resolve_device
from iwae.train import load_model_file

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
    model: IWAEModel,
    x: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    chunk: int = 1000,
    noise: list[Tensor] | None = None,
) -> Tensor:
    """L_k for each row of x (float64), the k samples drawn `chunk` at a time.

    `noise` (one (k, B, d) tensor per stochastic layer) fixes the samples, for tests.
    """
    total = None
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        part = None if noise is None else [n[start:stop] for n in noise]
        log_w = model.forward(x, stop - start, generator, noise=part).log_w.double()
        lse = torch.logsumexp(log_w, 0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(k)


@torch.no_grad()
def dataset_log_likelihood(
    model: IWAEModel,
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
def unit_variances(model: IWAEModel, x: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
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


def evaluate(
    model_path: Path,
    data_path: Path,
    out: Path,
    k: int = 5000,
    test_points: int | None = None,
    extra_k: list[int] | None = None,
    train_points: int = 0,
    active_points: int = 500,
    threshold: float = ACTIVE_THRESHOLD,
    seed: int = 123,
    batch: int = 20,
    chunk: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    quiet: bool = False,
) -> dict:
    """Evaluate a trained run; write and return its record (eval.json)."""
    for name, value in (("k", k), ("batch", batch), ("chunk", chunk or 1), ("active_points", active_points)):
        if value < 1:
            raise UserError(f"{name}: {value} must be a positive integer")
    for value in extra_k or []:
        if value < 1:
            raise UserError(f"extra_k: {value} must be a positive integer")
    started = time.monotonic()
    dev = resolve_device(device)
    chunk = chunk or default_chunk(dev, batch)
    runtime.setup(dev, threads)
    state = load_model_file(Path(model_path))
    model = IWAEModel.from_state(state["model"], dev)
    data = datasets.load(Path(data_path), dev)
    if data.meta["dataset"] != state["dataset"]:
        raise UserError(
            f"{data_path}: dataset {data.meta['dataset']!r}, but {model_path} was trained on {state['dataset']!r}"
        )
    # binarisations come from a CPU stream, so the test set is the same on every device;
    # the samples come from a stream on the device
    bits = torch.Generator().manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)

    def binary(x: Tensor) -> Tensor:
        return datasets.binarize(x.cpu(), bits).to(dev) if data.dynamic else x

    # the whole test set is binarised, then subsampled: a point gets the same bits in every
    # evaluation, whatever the subset's size
    x_test = binary(data.test)[subset(data.test.shape[0], test_points).to(dev)]
    n_test = x_test.shape[0]
    bar = Progress(n_test, f"{Path(model_path).parent.name} L_{k}", enabled=False if quiet else None)
    ll = dataset_log_likelihood(model, x_test, k, gen, batch, chunk, bar)
    bar.close()
    record = {"run": Path(model_path).parent.name, "k": k, "eval_seed": seed, "test": _summary(ll)}
    record["test"]["of"] = data.test.shape[0]
    record["bounds"] = {
        str(kk): _summary(dataset_log_likelihood(model, x_test, kk, gen, batch, chunk)) for kk in (extra_k or [])
    }
    if train_points:
        # drawn from the training points the run saw (its train_subset, if any)
        seen = min(state["config"].get("train_subset") or data.train.shape[0], data.train.shape[0])
        x_train = binary(data.train[:seen][subset(seen, train_points).to(dev)])
        record["train"] = _summary(dataset_log_likelihood(model, x_train, k, gen, batch, chunk))
        record["train"]["of"] = seen
    variances = unit_variances(model, binary(data.train[:active_points]), gen)
    record["active_units"] = {
        "threshold": threshold,
        "points": min(active_points, data.train.shape[0]),
        "per_layer": [int((v > threshold).sum()) for v in variances],
        "variances": [v.tolist() for v in variances],
    }
    train_record_path = Path(model_path).parent / "train.json"
    record["training"] = _read_json(train_record_path) if train_record_path.exists() else {"config": state["config"]}
    record["eval_seconds"] = round(time.monotonic() - started, 2)
    record["environment"] = environment(dev)
    write_json(out, record)
    return record


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable JSON record ({e})") from None
