"""`python -m iwae bench`: training and evaluation speed of the real code paths, per backend.

Training: full steps (minibatch gather and binarisation, then `train_step`: k samples, the
IWAE gradient, Adam) at batch 20 for both paper architectures and k = 1, 5, 50. Evaluation:
test points per second of the k = 5000 estimate. Each figure is measured `repeats` times for
about `seconds` each; the best and the median are reported, since shared machines vary from
run to run. With both backends (the default), every row is measured for each of them in the
same rounds, so that their ratio is what the fused backward pass buys.
"""

from __future__ import annotations

import statistics
import time

import torch

from iwae import backends, datasets, runtime
from iwae.architecture import ARCHITECTURES
from iwae.evaluate import dataset_log_likelihood, default_chunk
from iwae.models import LayeredModel
from iwae.objectives import Objective
from iwae.optim import Adam
from iwae.provenance import environment, resolve_device
from iwae.train import train_step

BENCH_BACKENDS = ("fused", "autograd")


def _trial(fn, seconds: float, sync) -> float:
    """Items per second over one trial of about `seconds`."""
    count, start = 0, time.perf_counter()
    while True:
        count += fn()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def _model(layers: int, device) -> LayeredModel:
    model = LayeredModel(ARCHITECTURES[layers], 784, device)
    model.initialize(0)
    return model


def _train_steps(backend_name: str, layers: int, k: int, device, batch: int = 20, steps: int = 10):
    gen = torch.Generator(device=device).manual_seed(0)
    data = torch.rand((1000, 784), generator=gen, device=device)  # grey values, binarised per step
    model = _model(layers, device)
    backend = backends.select(model, backend_name)
    opt = Adam(model.buffer.data, model.buffer.grad)
    objective = Objective.parse("iwae")
    perm = torch.randperm(1000, generator=gen, device=device)

    def run() -> int:
        for s in range(steps):
            x = datasets.binarize(torch.index_select(data, 0, perm[s * batch % 1000 :][:batch]), gen)
            train_step(backend, objective, opt, x, k, gen)
        return steps

    return run


def _eval_points(backend_name: str, layers: int, device, k: int = 5000, points: int = 20):
    gen = torch.Generator(device=device).manual_seed(0)
    backend = backends.select(_model(layers, device), backend_name)
    x = (torch.rand((points, 784), generator=gen, device=device) < 0.15).float()

    def run() -> int:
        dataset_log_likelihood(backend, x, k, gen, batch=20, chunk=default_chunk(device, 20))
        return points

    return run


def bench(
    device: str = "auto",
    threads: int | None = None,
    seconds: float = 2.0,
    repeats: int = 5,
    backend_names: tuple[str, ...] = BENCH_BACKENDS,
) -> dict:
    dev = resolve_device(device)
    runtime.setup(dev, threads)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cases = []
    for layers in (1, 2):
        for k in (1, 5, 50):
            cases += [("train", name, layers, k, _train_steps(name, layers, k, dev)) for name in backend_names]
    for layers in (1, 2):
        cases += [("eval", name, layers, 5000, _eval_points(name, layers, dev)) for name in backend_names]
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
        _row(kind, name, layers, k, r, per_step=20 if kind == "train" else None)
        for (kind, name, layers, k, _), r in zip(cases, rates)
    ]
    return {"results": results, "seconds": seconds, "repeats": repeats, "environment": environment(dev)}


def _row(kind: str, backend: str, layers: int, k: int, rates: list[float], per_step: int | None = None) -> dict:
    row = {
        "kind": kind,
        "backend": backend,
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
    rows = report["results"]
    fused = {(r["kind"], r["layers"], r["k"]): r["median"] for r in rows if r["backend"] == "fused"}
    lines = [
        f"device: {env['device_name']} ({env['device']}), {env['threads']} threads, torch {env['torch']}",
        f"{'what':<6} {'backend':<9} {'layers':>6} {'k':>5} {'best':>10} {'median':>10}  {'unit':<9} "
        f"{'points/s (best)':>15} {'fused / this':>12}",
    ]
    for r in rows:
        points = r.get("points_per_s_best", r["best"])
        base = fused.get((r["kind"], r["layers"], r["k"]))
        ratio = f"{base / r['median']:.2f}x" if base and r["median"] else "-"
        lines.append(
            f"{r['kind']:<6} {r['backend']:<9} {r['layers']:>6} {r['k']:>5} {r['best']:>10.1f} {r['median']:>10.1f}  "
            f"{r['unit']:<9} {points:>15.1f} {ratio:>12}"
        )
    return "\n".join(lines)
