"""The importance-weighted bound L_k as an estimate of log p(x): its primitives.

L_k = log (1/k) sum_i w_i, the k samples drawn in chunks of bounded size and combined by
log-sum-exp in float64, so chunking changes memory use, not the value. Evaluation, the
validation and learning curves of training, the benchmarks, `load_run` and the figures all
compute it here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from iwae.system.progress import Progress


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
    condition: Tensor | None = None,
) -> Tensor:
    """L_k for each row of x (float64), the k samples drawn `chunk` at a time; for a
    conditional model, of log p(x | c) given the rows of `condition`.

    `model` is a model or a backend (anything with `log_weights(x, k, generator, noise)`).
    `noise` (one (k, B, d) tensor per stochastic layer) fixes the samples, for tests.
    """
    total = None
    given = {} if condition is None else {"condition": condition}
    for start in range(0, k, chunk):
        stop = min(k, start + chunk)
        part = None if noise is None else [n[start:stop] for n in noise]
        log_w = model.log_weights(x, stop - start, generator, part, **given).double()
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
    condition: Tensor | None = None,
) -> Tensor:
    """L_k per data point over a whole (already binary) dataset, `batch` points at a time."""
    out = []
    for i in range(0, x.shape[0], batch):
        c = None if condition is None else condition[i : i + batch]
        out.append(log_likelihood(model, x[i : i + batch], k, generator, chunk, condition=c))
        if progress:
            progress.update(min(i + batch, x.shape[0]))
    return torch.cat(out)


def mixture_log_likelihood(backend, x: Tensor, classes: int, k: int, gen, batch: int = 20, chunk: int = 1000):
    """log sum_y (1/C) p(x | y) per row of x from L_k of every log p(x | y): (mixture (N,),
    the per-label estimates (N, C))."""
    per_label = []
    for y in range(classes):
        c = torch.zeros(x.shape[0], classes, dtype=x.dtype, device=x.device)
        c[:, y] = 1
        per_label.append(dataset_log_likelihood(backend, x, k, gen, batch, chunk, condition=c))
    per_label = torch.stack(per_label, 1)
    return torch.logsumexp(per_label, 1) - math.log(classes), per_label
