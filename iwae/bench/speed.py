"""`python -m iwae bench`: training and evaluation speed of the real code paths, per backend.

Training: full steps (minibatch gather and binarisation, then `train_step`: k samples, the
IWAE gradient, Adam) at batch 20 for both paper architectures and k = 1, 5, 50. Evaluation:
test points per second of the k = 5000 estimate. Each figure is measured `repeats` times for
about `seconds` each; the best and the median are reported, since shared machines vary from
run to run. With both backends (the default), every row is measured for each of them in the
same rounds, so that their ratio is what the fused backward pass buys.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from iwae import backends
from iwae.data import datasets
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk
from iwae.estimators.objectives import Objective
from iwae.models import LayeredModel
from iwae.plan.architecture import ARCHITECTURES
from iwae.plan.config import flags
from iwae.system import runtime
from iwae.system.provenance import environment, resolve_device
from iwae.training.optim import Adam
from iwae.training.steps import train_step

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


# --------------------------------------------------------------------------- packs


def synthetic_dataset(path, train: int, test: int = 200, pixels: int = 784, seed: int = 0):
    """A prepared dataset of grey values (binarised afresh at every use, as MNIST), of the
    real shapes, so that speed can be measured without any dataset at hand."""

    rng = np.random.RandomState(seed)
    arrays = {name: rng.beta(0.3, 0.7, size=(n, pixels)).astype(np.float32) for name, n in
              (("train", train), ("valid", test), ("test", test))}  # fmt: skip
    meta = {"dataset": "synthetic", "label": "synthetic", "binarization": "dynamic", "note": "bench data",
            "splits": {k: v.shape[0] for k, v in arrays.items()}, "image_shape": [28, 28], "sources": [],
            "scale": None}  # fmt: skip
    np.savez(path, **arrays, meta=np.array(json.dumps(meta)))
    return path


PACK_STEPS = {1: 1500, 5: 800, 50: 150}  # steps per run: a few seconds each on a CPU core


def _logged_rate(path: Path) -> float:
    with open(path) as f:
        return float(next(csv.DictReader(f))["points_per_s"])


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "iwae", "train", *args, "--quiet"]


def _as_separate_jobs(runs: list[tuple[Path, dict]], threads: int) -> None:
    """One `iwae train` per run with one thread, at most `threads` at a time."""
    queue, running = list(runs), []
    while queue or running:
        while queue and len(running) < threads:
            out, options = queue.pop(0)
            flags = [f"--{key.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for key, v in options.items()]  # fmt: skip
            command = _train_command("--out", str(out), *flags, "--threads", "1")
            running.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        running[0].wait()
        running = [p for p in running if p.poll() is None]


def _as_pack(runs: list[tuple[Path, dict]], threads: int, spec: Path) -> None:
    spec.write_text(json.dumps({"name": spec.stem, "runs": [{"out": str(d), "flags": flags(o)} for d, o in runs]}))
    subprocess.run(
        _train_command("--pack", str(spec), "--threads", str(threads)), check=True, stdout=subprocess.DEVNULL
    )


def bench_pack(
    size: int, threads: int, device: str = "cpu", ks=(1, 5, 50), layers: int = 1, repeats: int = 2, steps=None
) -> dict:
    """`size` runs of one (layers, k) trained as separate `iwae train` jobs, at most `threads`
    at a time with one thread each (as Snakemake schedules them with --cores `threads`), and
    as one pack job with `threads` threads. Per run: the points/s its training log records;
    aggregate: all points trained over the wall time of all the jobs (start-up included).
    Each is measured `repeats` times, the two in alternating order; the best is reported."""
    steps = steps or PACK_STEPS
    root = Path(tempfile.mkdtemp(prefix="iwae-bench-pack-"))
    data = synthetic_dataset(root / "synthetic.npz", train=20 * max(steps[k] for k in ks))
    rows = []
    for k in ks:
        points = 20 * steps[k]
        options = [
            {"data": str(data), "layers": str(layers), "objective": "iwae", "k": k, "seed": seed,
             "epochs_per_stage": [1], "train_subset": points, "device": device}
            for seed in range(1, size + 1)
        ]  # fmt: skip
        best = {}
        for trial in range(repeats):
            for mode in ("separate", "pack") if trial % 2 == 0 else ("pack", "separate"):
                dirs = [root / f"k{k}-{mode}-{trial}" / f"s{i}" for i in range(size)]
                start = time.perf_counter()
                if mode == "separate":
                    _as_separate_jobs(list(zip(dirs, options)), threads)
                else:
                    _as_pack(list(zip(dirs, options)), threads, root / f"k{k}-{trial}.json")
                wall = time.perf_counter() - start
                per_run = [_logged_rate(d / "train_log.csv") for d in dirs]
                row = {"k": k, "layers": layers, "mode": mode, "runs": size, "threads": threads,
                       "per_run_points_per_s": round(statistics.mean(per_run), 1),
                       "aggregate_points_per_s": round(size * points / wall, 1), "wall_s": round(wall, 2)}  # fmt: skip
                if mode not in best or row["aggregate_points_per_s"] > best[mode]["aggregate_points_per_s"]:
                    best[mode] = row
        rows += [best["separate"], best["pack"]]
    return {"pack": rows, "repeats": repeats, "environment": environment(resolve_device(device))}


def format_pack_table(report: dict) -> str:
    rows = report["pack"]
    lines = [
        f"{'k':>4} {'layers':>6} {'mode':<9} {'runs':>4} {'threads':>7} {'per run (points/s)':>19} "
        f"{'aggregate (points/s)':>21} {'wall (s)':>9}"
    ]
    for r in rows:
        lines.append(
            f"{r['k']:>4} {r['layers']:>6} {r['mode']:<9} {r['runs']:>4} {r['threads']:>7} "
            f"{r['per_run_points_per_s']:>19.1f} {r['aggregate_points_per_s']:>21.1f} {r['wall_s']:>9.1f}"
        )
    by = {(r["k"], r["mode"]): r for r in rows}
    for k in sorted({r["k"] for r in rows}):
        if (k, "pack") in by and (k, "separate") in by:
            a, b = by[(k, "pack")], by[(k, "separate")]
            lines.append(
                f"k = {k}: pack / separate jobs = {a['per_run_points_per_s'] / b['per_run_points_per_s']:.2f} per run, "
                f"{a['aggregate_points_per_s'] / b['aggregate_points_per_s']:.2f} aggregate"
            )
    return "\n".join(lines)
