"""`python -m iwae bench --gpu-report DIR`: the prepared check of Table 1's cost on one GPU.

It measures, in about six minutes of a GPU's time, what a prediction of the paper's
protocol needs:

 1. versions, the device, its clocks before and after (nvidia-smi);
 2. ceilings: float32 and TF32 products of a step's shapes, one large SGEMM, one copy;
 3. eager steps/s for the six (layers, k) settings and k = 5000 evaluation points/s;
 4. replayed CUDA-graph steps/s per setting, packs of 12 and 24 runs (each run its own graph
    on its own stream), and one full epoch of a 12-run pack through the real training loop;
 5. a minute of steady replay (drift shows clock or thermal effects);
 6. correctness: 200 graphed steps against 200 eager ones from the same seed, across epoch
    ends, for both backends, and a graphed run stopped inside an epoch and resumed (bitwise).

Then it predicts, and says it predicts: Table 1 as the workflow runs it with
`compute.pack: dataset` and one GPU (the MNIST pack, then the Omniglot pack, each 12 runs),
from the median time of a 12-run pack step, with the spread of the trials as the band:

    T = (9,774,400 + 3,772,000) x t(12-run step) + 2 x 3,280 x t(epoch overhead) + evaluation

Minutes of measurement stand for hours of running. Everything is written to DIR/report.json
as it is measured, and a table is printed last. Data are synthetic, of the real shapes
(59,600 and 23,000 points of 784 grey values, never all zeros). On a CPU (`quick=True`, as
the tests run it) every size shrinks and the graph rows say why they are missing.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from iwae.bench import _eval_points, _train_steps, synthetic_dataset
from iwae.config import TrainConfig
from iwae.files import write_json
from iwae.provenance import environment, resolve_device

MNIST_STEPS, OMNIGLOT_STEPS, EPOCHS = 2980 * 3280, 1150 * 3280, 3280  # steps per run: 9,774,400 and 3,772,000
TEST_POINTS = 10000 + 8070  # MNIST's and Omniglot's test sets, k = 5000 each
TABLE1 = [(layers, k, objective) for layers in (1, 2) for k in (1, 5, 50) for objective in ("vae", "iwae")]


def _smi() -> dict:
    query = "name,clocks.sm,clocks.mem,temperature.gpu,power.draw"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(zip(query.split(","), [v.strip() for v in out.split(",")])) if out else {}


class Report:
    def __init__(self, out_dir: Path, device, budget_s: float):
        self.dir, self.device, self.start, self.budget = Path(out_dir), device, time.monotonic(), budget_s
        self.data = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 1)
        write_json(self.dir / "report.json", self.data)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _timed(fn, sync, repeats: int) -> list[float]:
    """Seconds of `fn` per call, `repeats` times (after one warm-up call)."""
    fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def ceilings(device, quick: bool) -> dict:
    """TFLOP/s of the step's largest products (2 layers, k = 50: 1,000 rows) and of one large
    SGEMM, in float32 and TF32, and GB/s of one copy."""
    n = 1024 if quick else 8192
    out = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        name = "tf32" if tf32 else "fp32"
        a, b = torch.randn(1000, 200, device=device), torch.randn(200, 784, device=device)
        step = _timed(lambda a=a, b=b: [a @ b for _ in range(100)], lambda: _sync(device), 3)
        out[f"step_products_{name}_tflops"] = round(100 * 2 * 1000 * 200 * 784 / min(step) / 1e12, 3)
        big = torch.randn(n, n, device=device)
        sgemm = _timed(lambda big=big: big @ big, lambda: _sync(device), 3)
        out[f"sgemm_{n}_{name}_tflops"] = round(2 * n**3 / min(sgemm) / 1e12, 2)
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(2**26 if quick else 2**28, device=device)  # 256 MB or 1 GB
    y = torch.empty_like(x)
    copy = _timed(lambda: y.copy_(x), lambda: _sync(device), 3)
    out["copy_gb_per_s"] = round(2 * x.numel() * 4 / min(copy) / 1e9, 1)
    return out


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager(device, quick: bool) -> dict:
    """Eager steps/s (batch 20, fused backend, IWAE) and k = 5000 evaluation points/s."""
    out = {}
    for layers in (1, 2):
        for k in (1, 5, 50):
            run = _train_steps("fused", layers, k, device)
            seconds = _timed(run, lambda: _sync(device), 2 if quick else 5)
            out[f"train_{layers}l_k{k}_steps_per_s"] = round(10 / statistics.median(seconds), 1)
        points = _eval_points("fused", layers, device, k=500 if quick else 5000)
        seconds = _timed(points, lambda: _sync(device), 1 if quick else 3)
        out[f"eval_{layers}l_k{500 if quick else 5000}_points_per_s"] = round(20 / statistics.median(seconds), 2)
    return out


# --------------------------------------------------------------------------- runs of a pack


def _trainers(root: Path, data_path: Path, settings: list, device, capture: bool) -> list:
    """One Trainer per (layers, k, objective), ready to step (initialised, first epoch begun)."""
    from iwae import cuda, datasets
    from iwae.train import EagerSteps, StopRequest, Trainer

    data = datasets.load(data_path, device)
    stop = StopRequest()
    out = []
    for i, (layers, k, objective) in enumerate(settings):
        cfg = TrainConfig(
            data=str(data_path), layers=str(layers), k=k, objective=objective, seed=i + 1, device=str(device)
        )
        t = Trainer(cfg, root / f"run{i}", True, False, stop=stop, data=data)
        if not capture:
            t.steps = EagerSteps(t)
        elif device.type != "cuda":
            t.steps = cuda.GraphedSteps(t, capture=False)
        t.restore_or_initialize()
        t.opt.lr = cfg.learning_rate(0)
        t.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        t.position = 0
        _begin(t)
        if t.stream is not None:  # its steps come after what the default stream set up
            t.stream.wait_stream(torch.cuda.current_stream(device))
        out.append(t)
    return out


def _begin(t) -> None:
    perm = torch.randperm(t.x.shape[0], generator=t.gen, device=t.device)
    t.steps.begin(perm, torch.zeros((), dtype=torch.float64, device=t.device), 0)
    t.position = 0


def _advance(trainers: list, steps: int) -> None:
    """`steps` steps of every run, round robin, each run on its own stream."""
    import contextlib

    for _ in range(steps):
        for t in trainers:
            with torch.cuda.stream(t.stream) if t.stream is not None else contextlib.nullcontext():
                if t.position == t.n_batches:  # an epoch's end: the next epoch's order
                    _begin(t)
                t.steps.step(t.position, t.position + 1)  # one step per replay
                t.position += 1


def pack_rates(root: Path, data_path: Path, device, sizes: list[int], steps: int, trials: int) -> dict:
    """Seconds per pack step (every run one step) for packs of Table 1's settings."""
    out = {}
    for size in sizes:
        settings = (TABLE1 * (size // len(TABLE1) + 1))[:size]
        trainers = _trainers(root / f"pack{size}", data_path, settings, device, capture=True)
        _advance(trainers, 3)
        _sync(device)
        seconds = []
        for _ in range(trials):
            t0 = time.perf_counter()
            _advance(trainers, steps)
            _sync(device)
            seconds.append((time.perf_counter() - t0) / steps)
        out[size] = {
            "seconds_per_pack_step": seconds,
            "median": statistics.median(seconds),
            "run_steps_per_s": round(size / statistics.median(seconds), 1),
        }
        del trainers
    return out


def graph_rates(root: Path, data_path: Path, device, steps: int) -> dict:
    """Steps/s of one run alone, replayed, per (layers, k)."""
    out = {}
    for layers in (1, 2):
        for k in (1, 5, 50):
            (t,) = _trainers(root / f"solo{layers}{k}", data_path, [(layers, k, "iwae")], device, capture=True)
            _advance([t], 3)
            _sync(device)
            t0 = time.perf_counter()
            _advance([t], steps)
            _sync(device)
            out[f"train_{layers}l_k{k}_steps_per_s"] = round(steps / (time.perf_counter() - t0), 1)
    return out


def steady(root: Path, data_path: Path, device, size: int, seconds: float) -> dict:
    """Replay a pack for `seconds`: its rate in the first and the last tenth of the time."""
    settings = (TABLE1 * (size // len(TABLE1) + 1))[:size]
    trainers = _trainers(root / "steady", data_path, settings, device, capture=True)
    _advance(trainers, 3)
    _sync(device)
    marks, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        _advance(trainers, 20)
        _sync(device)
        marks.append(time.perf_counter() - start)
    tenth = max(1, len(marks) // 10)
    first = tenth / marks[tenth - 1]
    last = tenth / (marks[-1] - marks[-tenth - 1]) if len(marks) > tenth else first
    return {"seconds": round(marks[-1], 1), "first_tenth_pack_steps_per_s": round(20 * first, 1),
            "last_tenth_pack_steps_per_s": round(20 * last, 1), "drift": round(last / first - 1, 4)}  # fmt: skip


def _loop_run(root: Path, data_path: Path, device, name: str, setting: tuple, graphs: bool, stop_at=None):
    """A run of 10 short epochs through the real training loop; graphed or eager; stopped
    `stop_at` steps in (a checkpoint inside an epoch) and resumed, if asked."""
    from iwae import cuda
    from iwae.errors import Interrupted
    from iwae.train import Trainer

    layers, k, objective = setting
    cfg = TrainConfig(data=str(data_path), layers=str(layers), k=k, objective=objective, seed=1, device=str(device),
                      epochs_per_stage=[4, 6], cuda_graphs=graphs)  # fmt: skip

    def trainer():
        t = Trainer(cfg, root / name, True, False)
        if graphs and device.type != "cuda":  # no graph here: the same position-driven steps
            t.steps = cuda.GraphedSteps(t, capture=False)
        return t

    t = trainer()
    if stop_at is not None:
        try:
            for i, _ in enumerate(t.train()):
                if i == stop_at:
                    t.stop.requested = True
        except Interrupted:
            t = trainer()
    t.run()
    return t.model.buffer.data.clone()


def correctness(root: Path, data_path: Path, device) -> dict:
    """Graphed against eager, bitwise, over 200 steps that cross 9 epoch ends, for the fused
    backend (2 layers, k = 5, IWAE) and the autograd one (1 layer, k = 5, DReG); and a graphed
    run stopped inside an epoch and resumed against the same run straight through."""
    out = {}
    for setting in ((2, 5, "iwae"), (1, 5, "dreg")):
        key = f"{setting[0]}l_k{setting[1]}_{setting[2]}"
        graphed = _loop_run(root, data_path, device, f"graphed-{key}", setting, True)
        eager = _loop_run(root, data_path, device, f"eager-{key}", setting, False)
        out[key] = {"bitwise_equal": bool(torch.equal(graphed, eager)),
                    "max_abs_difference": (graphed - eager).abs().max().item()}  # fmt: skip
        if setting[2] == "iwae":
            resumed = _loop_run(root, data_path, device, f"resumed-{key}", setting, True, stop_at=57)
            out[key]["resumed_bitwise_equal"] = bool(torch.equal(resumed, graphed))
    out["bitwise_equal"] = all(v["bitwise_equal"] and v.get("resumed_bitwise_equal", True)
                               for v in out.values() if isinstance(v, dict))  # fmt: skip
    return out


def full_epoch(root: Path, data_path: Path, device, size: int) -> dict:
    """Two epochs of a pack through the real training loop (`iwae.packs._interleave`); the
    second one's time (from the runs' logs), which holds no capture and no first-epoch set-up:
    against the replayed steps alone it gives the per-epoch overhead."""
    import csv

    from iwae import datasets
    from iwae.packs import _interleave
    from iwae.train import StopRequest, Trainer

    data = datasets.load(data_path, device)
    stop = StopRequest()
    settings = (TABLE1 * (size // len(TABLE1) + 1))[:size]
    trainers = []
    for i, (layers, k, objective) in enumerate(settings):
        cfg = TrainConfig(data=str(data_path), layers=str(layers), k=k, objective=objective, seed=i + 1,
                          device=str(device), epochs_per_stage=[2])  # fmt: skip
        trainers.append(Trainer(cfg, root / "epoch" / f"run{i}", True, False, stop=stop, data=data))
    _interleave("report", trainers, device)
    with open(root / "epoch" / "run0" / "train_log.csv") as f:
        second = list(csv.DictReader(f))[1]
    return {"runs": size, "steps": trainers[0].n_batches, "seconds": float(second["seconds"])}


def gpu_report(
    out_dir: Path, device: str = "auto", minutes: float = 6.0, quick: bool | None = None, threads: int | None = None
) -> dict:
    from iwae import cuda, runtime

    dev = cuda.claim(resolve_device(device))  # one device for every run of the check
    runtime.setup(dev, threads)
    quick = dev.type != "cuda" if quick is None else quick
    report = Report(out_dir, dev, minutes * 60)
    root = Path(tempfile.mkdtemp(prefix="iwae-gpu-report-"))
    mnist = synthetic_dataset(root / "mnist-shaped.npz", train=2000 if quick else 59600)
    small = synthetic_dataset(root / "small.npz", train=400)  # 20 steps an epoch: epoch ends, resumption
    report.put("environment", environment(dev))
    report.put("device_before", _smi())
    report.put("quick", quick)
    report.put("ceilings", ceilings(dev, quick))
    report.put("eager", eager(dev, quick))
    graphs = dev.type == "cuda"
    report.put("graph_note", None if graphs else "no GPU: the graph rows replay nothing here")
    steps = 20 if quick else 500
    if graphs:
        report.put("graphed", graph_rates(root, mnist, dev, steps))
    sizes = [2, 4] if quick else [12, 24]
    report.put("packs", pack_rates(root, mnist, dev, sizes, steps=10 if quick else 200, trials=3 if quick else 5))
    report.put("epoch", full_epoch(root, mnist, dev, sizes[0]))
    report.put("correctness", correctness(root, small, dev))
    report.put("steady", steady(root, mnist, dev, sizes[0], 3 if quick else min(60.0, max(10.0, report.left() - 60))))
    report.put("device_after", _smi())
    report.put("prediction", predict(report.data, sizes[0]))
    print(format_report(report.data))
    return report.data


def predict(data: dict, size: int) -> dict:
    pack = data["packs"][size] if size in data["packs"] else data["packs"][str(size)]
    t_med, t_lo, t_hi = pack["median"], min(pack["seconds_per_pack_step"]), max(pack["seconds_per_pack_step"])
    epoch = data["epoch"]
    overhead = max(0.0, epoch["seconds"] / epoch["steps"] - t_med) * epoch["steps"]  # per epoch
    eval_rate = data["eager"].get("eval_2l_k5000_points_per_s") or data["eager"].get("eval_2l_k500_points_per_s")
    evaluation = 24 / 2 * TEST_POINTS / eval_rate if eval_rate else None  # half the runs of each dataset's size

    def total(t):
        return (MNIST_STEPS + OMNIGLOT_STEPS) * t + 2 * EPOCHS * overhead + (evaluation or 0)

    return {
        "formula": f"(9,774,400 + 3,772,000) x t({size}-run pack step) + 2 x 3,280 x t(epoch overhead) + evaluation",
        "pack_size": size,
        "t_pack_step_s": t_med,
        "t_epoch_overhead_s": round(overhead, 4),
        "evaluation_s": round(evaluation, 1) if evaluation else None,
        "hours": round(total(t_med) / 3600, 2),
        "band_hours": [round(total(t_lo) / 3600, 2), round(total(t_hi) / 3600, 2)],
        "note": "a prediction from minutes of measurement, not a measured run; the 2-layer eager evaluation "
        "rate stands for every run's" + (" (quick mode: sizes are not the paper's)" if data.get("quick") else ""),
    }


def format_report(data: dict) -> str:
    lines = [f"device: {data['environment']['device_name']} ({data['environment']['device']}), torch "
             f"{data['environment']['torch']}; {'quick (not the real sizes)' if data['quick'] else 'full'}"]  # fmt: skip
    for section in ("ceilings", "eager", "graphed"):
        for key, value in (data.get(section) or {}).items():
            lines.append(f"{section:<10} {key:<40} {value}")
    for size, row in data["packs"].items():
        lines.append(
            f"{'pack':<10} {size} runs: {row['run_steps_per_s']} run-steps/s, {row['median'] * 1e3:.3f} ms a pack step"
        )
    lines.append(f"{'epoch':<10} {data['epoch']}")
    lines.append(f"{'check':<10} {data['correctness']}")
    lines.append(f"{'steady':<10} {data['steady']}")
    p = data["prediction"]
    lines.append(
        f"prediction: Table 1 in {p['hours']} h (band {p['band_hours'][0]}-{p['band_hours'][1]} h) = {p['formula']}"
    )
    lines.append(f"            {p['note']}")
    return "\n".join(lines)
