"""`python -m iwae bench`: training and evaluation speed of the real code paths.

Training: full steps (minibatch gather and binarisation, k samples, IWAE gradient, Adam) at
batch 20 for both paper architectures and k = 1, 5, 50. Evaluation: test points per second
of the k = 5000 estimate. Each figure is measured `repeats` times for about `seconds` each;
the best and the median are reported, since shared machines vary from run to run.
"""

from __future__ import annotations

import statistics
import time

import torch

from iwae import datasets, runtime
from iwae.evaluate import dataset_log_likelihood, default_chunk
from iwae.model import ARCHITECTURES, IWAEModel
from iwae.objectives import Objective
from iwae.optim import Adam
from iwae.provenance import environment, resolve_device


def _trial(fn, seconds: float, sync) -> float:
    """Items per second over one trial of about `seconds`."""
    count, start = 0, time.perf_counter()
    while True:
        count += fn()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def _train_steps(layers: int, k: int, device, batch: int = 20, steps: int = 10):
    gen = torch.Generator(device=device).manual_seed(0)
    data = torch.rand((1000, 784), generator=gen, device=device)  # grey values, binarised per step
    model = IWAEModel(ARCHITECTURES[layers], 784, device)
    model.initialize(0)
    opt = Adam(model.buffer.data, model.buffer.grad)
    objective = Objective.parse("iwae")
    perm = torch.randperm(1000, generator=gen, device=device)

    def run() -> int:
        for s in range(steps):
            x = datasets.binarize(torch.index_select(data, 0, perm[s * batch % 1000 :][:batch]), gen)
            fp = model.forward(x, k, gen)
            model.backward(fp, objective(fp.log_w).coefficients)
            opt.step()
        return steps

    return run


def _eval_points(layers: int, device, k: int = 5000, points: int = 20):
    gen = torch.Generator(device=device).manual_seed(0)
    model = IWAEModel(ARCHITECTURES[layers], 784, device)
    model.initialize(0)
    x = (torch.rand((points, 784), generator=gen, device=device) < 0.15).float()

    def run() -> int:
        dataset_log_likelihood(model, x, k, gen, batch=20, chunk=default_chunk(device, 20))
        return points

    return run


def bench(device: str = "auto", threads: int | None = None, seconds: float = 2.0, repeats: int = 5) -> dict:
    dev = resolve_device(device)
    runtime.setup(dev, threads)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cases = [("train", layers, k, _train_steps(layers, k, dev)) for layers in (1, 2) for k in (1, 5, 50)]
    cases += [("eval", layers, 5000, _eval_points(layers, dev)) for layers in (1, 2)]
    for *_, fn in cases:  # warm-up: allocator, kernels, caches
        fn()
        sync()
    # rounds of one trial per case, so that a slow spell on a shared machine is spread
    # over all figures instead of spoiling one
    rates = [[] for _ in cases]
    for _ in range(repeats):
        for i, (*_, fn) in enumerate(cases):
            rates[i].append(_trial(fn, seconds, sync))
    results = [
        _row(kind, layers, k, r, per_step=20 if kind == "train" else None)
        for (kind, layers, k, _), r in zip(cases, rates)
    ]
    return {"results": results, "seconds": seconds, "repeats": repeats, "environment": environment(dev)}


def _row(kind: str, layers: int, k: int, rates: list[float], per_step: int | None = None) -> dict:
    row = {
        "kind": kind,
        "layers": layers,
        "k": k,
        "best": round(max(rates), 2),
        "median": round(statistics.median(rates), 2),
        "unit": "steps/s" if kind == "train" else "points/s",
    }
    if per_step:
        row["points_per_s_best"] = round(max(rates) * per_step, 1)
    return row


def format_table(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"device: {env['device_name']} ({env['device']}), {env['threads']} threads, torch {env['torch']}",
        f"{'what':<6} {'layers':>6} {'k':>5} {'best':>10} {'median':>10}  {'unit':<9} {'points/s (best)':>15}",
    ]
    for r in report["results"]:
        points = r.get("points_per_s_best", r["best"])
        lines.append(
            f"{r['kind']:<6} {r['layers']:>6} {r['k']:>5} {r['best']:>10.1f} {r['median']:>10.1f}  "
            f"{r['unit']:<9} {points:>15.1f}"
        )
    return "\n".join(lines)
