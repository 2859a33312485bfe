"""`python -m iwae bench --gpu-report DIR`: the prepared check of Table 1's cost on one GPU.

Built to take about four minutes of a GPU's time, within a budget of `minutes` (6): each
section starts only if the time it needs is left, the steady replay takes what remains. Every
section writes DIR/report.json as it ends; one that fails is recorded with its error, and the
others still run. In order:

 1. versions, first: `torch.__version__`, `torch.version.cuda`, the driver and the GPU's name
    (the machines lent run their own PyTorch, 2.11 with CUDA 13 at last report, not the tests'),
    and any call of the CUDA path that PyTorch lacks; the device and its clocks (nvidia-smi);
 2. a probe of one step of each backend on the device (`iwae.training.probe.probe_step`: no host
    reads, no tensors off the device, no random draws but from the run's generator, no writes
    that the warm-up does not undo);
 3. correctness: bitwise, graphed steps against eager ones from the same seed, across epoch
    ends and a change of stage, for the fused backend (IWAE) and the autograd one (DReG, two
    backward passes); a graphed run stopped strictly inside an epoch (at step 10 of 21) and
    resumed, a ten-step and a one-step replay left, against the run unstopped, with where its
    checkpoint fell; a pack of three runs (two with k = 50) against the same runs trained
    alone, one after another; and, for that pack with every graph captured, each graph's
    memory pool, distinct from every other's, with a segment of the cuBLAS workspace in it
    (the comparison alone sees a shared workspace only if cuBLAS picks kernels that use one);
 4. eager steps/s for the six (layers, k) settings, all warmed up before any is timed, k = 5000
    evaluation points/s, and the start-up of an evaluation job;
 5. replayed steps/s of each setting alone, and packs of 10 and 20 runs (each run its own
    graphs on its own stream), with the host's share of the time apart;
 6. one full epoch of a 10-run pack through the real training loop;
 7. ceilings: float32 and TF32 products of a step's shapes, one large SGEMM, one copy;
 8. a minute of steady replay of the 10-run pack (drift shows clock or thermal effects), and
    the clocks after.

Then it predicts, and says it predicts: Table 1 as the workflow runs it with
`compute.pack: dataset` and one GPU (the MNIST pack, then the Omniglot pack, 10 runs each:
VAE and IWAE with k = 1 are one objective and share one run, so 20 runs fill the 24 cells):

    T = (9,774,400 + 3,772,000) x t(10-run pack step) + 2 x 3,280 x t(epoch overhead) + evaluation

from the median time of a pack step (every run one step), the band from the spread of the
trials and of the steady minute together, evaluation as every run's test and validation
points at its layers' k = 5000 rate plus one job start-up per run. Beside it the floor no
packing can beat: the longest run alone, 9,774,400 x t(2-layer k = 50 step replayed alone).
Minutes of measurement stand for hours of running. If a check fails (a comparison that is not
bitwise equal, a resume not exercised, graphs sharing a pool or without a workspace of their
own, a step a graph cannot hold, a call this PyTorch lacks, a checking section that did not
run), report.json's `failed` names it and the command exits 1, after every section has run
and been written. Data are synthetic, of the real shapes
(59,600 points of 784 grey values, never all zeros). On a CPU (`quick=True`, as the tests run
it) every size shrinks and the steps run as graphs would, without one.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from iwae.bench.speed import _eval_points, _train_steps, synthetic_dataset
from iwae.data import datasets
from iwae.errors import Interrupted
from iwae.plan.config import TrainConfig
from iwae.system import devices, runtime
from iwae.system.files import write_json
from iwae.system.provenance import environment, resolve_device
from iwae.training.callbacks import Callback
from iwae.training.graphs import STEPS_PER_GRAPH
from iwae.training.loop import Trainer, train_run
from iwae.training.packs import interleave
from iwae.training.probe import probe_step
from iwae.training.run import build, callbacks, initialize
from iwae.training.signals import StopRequest

MNIST_STEPS, OMNIGLOT_STEPS, EPOCHS = 2980 * 3280, 1150 * 3280, 3280  # steps per run: 9,774,400 and 3,772,000
EVAL_POINTS = {"mnist": 10000 + 400, "omniglot": 8070 + 1000}  # test and validation points per run
# the runs of one dataset's Table 1 pack, as the workflow plans them (iwae.plan.experiments._share):
# VAE and IWAE with k = 1 are one objective, trained once as the VAE's run
TABLE1 = [(layers, k, objective) for layers in (1, 2) for k in (1, 5, 50)
          for objective in (("vae",) if k == 1 else ("vae", "iwae"))]  # fmt: skip
CHECK_POINTS = 420  # training points of the correctness runs: 21 steps an epoch, so a graph of 10 leaves one
# the stop of the resumed run: one ten-step replay into its second epoch, so the checkpoint falls at
# step 10 of 21 and the resume replays ten steps, then one
STOP_AFTER = CHECK_POINTS // 20 + STEPS_PER_GRAPH


@dataclass(frozen=True)
class Sizes:
    mnist_points: int  # training points of the synthetic MNIST-shaped dataset
    steps: int  # steps of every run in one timed trial
    trials: int
    packs: tuple[int, ...]  # pack sizes; the first is the workflow's (10 runs per dataset), then both datasets
    eager_steps: int  # eager steps per timed call
    eager_repeats: int
    eval_k: int
    check_epochs: tuple[int, ...]  # epochs per stage of the correctness runs
    check_pack: tuple[tuple, ...]  # the runs of the pack checked against the same runs alone
    steady_s: float
    sgemm: int
    copy_floats: int
    products: int


FULL = Sizes(mnist_points=59600, steps=500, trials=7, packs=(10, 20), eager_steps=10, eager_repeats=5, eval_k=5000,
             check_epochs=(4, 6), check_pack=((2, 50, "iwae"), (2, 50, "vae"), (1, 5, "iwae")), steady_s=60.0,
             sgemm=8192, copy_floats=2**28, products=100)  # fmt: skip
QUICK = Sizes(mnist_points=CHECK_POINTS, steps=10, trials=2, packs=(2, 3), eager_steps=3, eager_repeats=2, eval_k=100,
              check_epochs=(1, 1), check_pack=((1, 10, "iwae"), (1, 10, "vae"), (2, 5, "iwae")), steady_s=1.0,
              sgemm=1024, copy_floats=2**22, products=5)  # fmt: skip
# seconds each section needs on an H200 (estimates, with a margin): it starts only if they are left
NEEDS = {"probe": 10, "correctness": 75, "eager": 45, "graphed": 30, "packs": 60, "epoch": 30, "ceilings": 15}


class Report:
    """The report's sections as measured, written to report.json after each."""

    def __init__(self, out_dir: Path, device, budget_s: float):
        self.dir, self.device, self.start, self.budget = Path(out_dir), device, time.monotonic(), budget_s
        self.data = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "section_seconds": {}}
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 1)
        write_json(self.dir / "report.json", self.data)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def section(self, key: str, fn, *args, need: float = 0.0):
        """fn(*args) as the section `key`: skipped if fewer than `need` seconds are left; its
        error, if it fails, recorded in its place (the other sections still run)."""
        if self.left() < need:
            self.put(key, {"skipped": f"{need:.0f} s needed, {max(0.0, self.left()):.0f} s left"})
            return None
        start = time.monotonic()
        try:
            value = fn(*args)
        except Exception as e:  # noqa: BLE001 - one failing section must not cost the others
            traceback.print_exc()
            value = {"error": f"{type(e).__name__}: {e}"}
        self.data["section_seconds"][key] = round(time.monotonic() - start, 1)
        self.put(key, value)
        return value


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int) -> list[float]:
    """Seconds of `fn` per call, `repeats` times (after one warm-up call)."""
    fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


# --------------------------------------------------------------------------- the device


# the last two are one field's names in newer and in older drivers
SMI_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
              "temperature.gpu", "power.draw", "clocks_event_reasons.active", "clocks_throttle_reasons.active")  # fmt: skip
# what the CUDA path calls: the machines lent run their own PyTorch (2.11 with CUDA 13 at last
# report, nothing installable there), not the one the CPU tests run, so the check says which it lacks
CUDA_APIS = ("torch.cuda.CUDAGraph.register_generator_state", "torch.cuda.CUDAGraph.pool", "torch.cuda.graph",
             "torch.cuda.Stream", "torch.cuda.memory._snapshot", "torch._C._cuda_clearCublasWorkspaces",
             "torch._fused_adam_")  # fmt: skip


def _smi(fields=SMI_FIELDS) -> dict:
    """nvidia-smi's view of the device, one field at a time (a field this driver does not
    know costs that field only)."""
    out = {}
    for name in fields:
        try:
            result = subprocess.run(["nvidia-smi", f"--query-gpu={name}", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return out  # no nvidia-smi here
        if result.returncode == 0:
            out[name] = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
    return out


def _lacking(names) -> list[str]:
    """The dotted names (from `torch`) this PyTorch does not have."""
    out = []
    for name in names:
        found = torch
        for part in name.split(".")[1:]:
            found = getattr(found, part, None)
        if found is None:
            out.append(name)
    return out


def versions(device) -> dict:
    """What every figure of the report comes from: PyTorch and the CUDA it was built with,
    the driver and the GPU; on a GPU, the calls of the CUDA path this PyTorch lacks."""
    cuda = device.type == "cuda"
    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "driver": _smi(("driver_version",)).get("driver_version") if cuda else None,
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "lacking_cuda_apis": _lacking(CUDA_APIS) if cuda else "not checked on CPU"}  # fmt: skip


def device_record(device) -> dict:
    """Versions and properties that decide the numbers: PyTorch's CUDA, the driver, the device."""
    out = {**environment(device), "torch_cuda": torch.version.cuda, "smi": _smi(),
           "environment_variables": {k: os.environ.get(k) for k in ("CUDA_DEVICE_MAX_CONNECTIONS",
                                                                     "CUBLAS_WORKSPACE_CONFIG")}}  # fmt: skip
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())  # fmt: skip
    return out


def ceilings(device, sizes: Sizes) -> dict:
    """TFLOP/s of the step's largest products (2 layers, k = 50: 1,000 rows) and of one large
    SGEMM, in float32 and TF32, and GB/s of one copy."""
    n, out = sizes.sgemm, {}
    try:
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            name = "tf32" if tf32 else "fp32"
            a, b = torch.randn(1000, 200, device=device), torch.randn(200, 784, device=device)
            step = _timed(lambda a=a, b=b: [a @ b for _ in range(sizes.products)], device, 3)
            out[f"step_products_{name}_tflops"] = round(sizes.products * 2 * 1000 * 200 * 784 / min(step) / 1e12, 3)
            big = torch.randn(n, n, device=device)
            sgemm = _timed(lambda big=big: big @ big, device, 3)
            out[f"sgemm_{n}_{name}_tflops"] = round(2 * n**3 / min(sgemm) / 1e12, 2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(sizes.copy_floats, device=device)
    y = torch.empty_like(x)
    copy = _timed(lambda: y.copy_(x), device, 3)
    out["copy_gb_per_s"] = round(2 * x.numel() * 4 / min(copy) / 1e9, 1)
    return out


# --------------------------------------------------------------------------- eager steps, evaluation


def eager(root: Path, device, sizes: Sizes) -> dict:
    """Eager steps/s (batch 20, fused backend, IWAE) and evaluation points/s, every setting
    run once before any is timed: the first one timed pays no one-time start-up."""
    n = sizes.eager_steps
    steps = {(layers, k): _train_steps("fused", layers, k, device, steps=n) for layers in (1, 2) for k in (1, 5, 50)}
    points = {layers: _eval_points("fused", layers, device, k=sizes.eval_k) for layers in (1, 2)}
    for fn in [*steps.values(), *points.values()]:
        fn()
    _sync(device)
    out = {}
    for (layers, k), fn in steps.items():
        seconds = _timed(fn, device, sizes.eager_repeats)
        out[f"train_{layers}l_k{k}_steps_per_s"] = round(n / statistics.median(seconds), 1)
    for layers, fn in points.items():
        seconds = _timed(fn, device, max(1, sizes.eager_repeats // 2))
        out[f"eval_{layers}l_k{sizes.eval_k}_points_per_s"] = round(20 / statistics.median(seconds), 2)
    out["eval_job_startup_s"] = evaluation_startup(device, synthetic_dataset(root / "startup.npz", train=100))
    return out


def evaluation_startup(device, data: Path) -> float:
    """Seconds a fresh process takes to import the package, start the device and load a
    dataset onto it: what every evaluation job pays before its first point."""
    code = ("import sys, torch; from iwae.data import datasets; from iwae.evaluation import evaluate; "
            "datasets.load(sys.argv[1], torch.device(sys.argv[2])).train.sum().item()")  # fmt: skip
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(data), str(device)], check=True, capture_output=True)
    return round(time.perf_counter() - start, 2)


# --------------------------------------------------------------------------- runs and packs


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="iwae-gpu-report-"))


def _config(data_path: Path, device, setting, seed: int, **options) -> TrainConfig:
    layers, k, objective = setting
    return TrainConfig(data=str(data_path), layers=str(layers), k=k, objective=objective, seed=seed,
                       device=str(device), **options)  # fmt: skip


def _pack(root: Path, data_path: Path, device, settings: list) -> list[Trainer]:
    """Trainers for `settings`, each on a stream of its own, as a pack's are, each one replay
    into its first epoch (its graphs captured). One stage of the paper's 3,280 epochs, so that
    no stage's end checkpoints in the middle of a measurement."""
    data, stop = datasets.load(data_path, device), StopRequest()
    streams = devices.run_streams(device, len(settings))
    trainers = []
    for i, (setting, stream) in enumerate(zip(settings, streams)):
        cfg = _config(data_path, device, setting, i + 1, epochs_per_stage=[EPOCHS])
        run = build(cfg, root / f"run{i}", True, stop=stop, data=data, stream=stream, graphed=True)
        trainers.append(Trainer(run, callbacks(run, progress=False)))
    _advance(trainers, 1)
    return trainers


def _advance(trainers: list[Trainer], steps: int) -> int:
    """At least `steps` steps of every run, round robin, each run one replay at a time through
    its training loop (`Trainer.advance`), as a pack advances it; returns the steps taken
    (the runs share one dataset, so each takes as many)."""
    start = trainers[0].steps_done
    while trainers[0].steps_done - start < steps:
        for t in trainers:
            t.advance("step")
    return trainers[0].steps_done - start


def _release(trainers: list[Trainer]) -> None:
    for t in trainers:
        t.release()


def _settings(size: int) -> list:
    return (TABLE1 * (size // len(TABLE1) + 1))[:size]


def graph_rates(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """Steps/s of one run alone, replayed, per (layers, k)."""
    out = {}
    for layers in (1, 2):
        for k in (1, 5, 50):
            trainers = _pack(root / f"solo{layers}{k}", data_path, device, [(layers, k, "iwae")])
            try:
                taken = []
                seconds = _timed(lambda t=trainers, taken=taken: taken.append(_advance(t, sizes.steps)), device, 1)
                out[f"train_{layers}l_k{k}_steps_per_s"] = round(taken[-1] / seconds[0], 1)
            finally:
                _release(trainers)
    return out


def pack_rates(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """Seconds per pack step (every run one step) for packs of Table 1's settings, and the
    host's share: how long enqueueing took before the device caught up."""
    out = {}
    for size in sizes.packs:
        trainers = _pack(root / f"pack{size}", data_path, device, _settings(size))
        try:
            _advance(trainers, sizes.steps)
            _sync(device)
            seconds, host = [], []
            for _ in range(sizes.trials):
                t0 = time.perf_counter()
                taken = _advance(trainers, sizes.steps)
                host.append((time.perf_counter() - t0) / taken)
                _sync(device)
                seconds.append((time.perf_counter() - t0) / taken)
        finally:
            _release(trainers)
        median = statistics.median(seconds)
        out[str(size)] = {"seconds_per_pack_step": seconds, "median": median, "host_seconds_per_pack_step": host,
                          "run_steps_per_s": round(size / median, 1)}  # fmt: skip
    return out


def steady(root: Path, data_path: Path, device, size: int, seconds: float) -> dict:
    """Replay a pack for `seconds`: seconds per pack step in its first and last tenth."""
    trainers = _pack(root / "steady", data_path, device, _settings(size))
    try:
        _advance(trainers, 20)
        _sync(device)
        marks, steps, start = [], [0], time.perf_counter()
        while time.perf_counter() - start < seconds or len(marks) < 2:
            steps.append(steps[-1] + _advance(trainers, 20))
            _sync(device)
            marks.append(time.perf_counter() - start)
    finally:
        _release(trainers)
    tenth = max(1, len(marks) // 10)
    first = marks[tenth - 1] / steps[tenth]
    last = (marks[-1] - marks[-tenth - 1]) / (steps[-1] - steps[-tenth - 1])
    return {"seconds": round(marks[-1], 1), "pack_size": size, "first_tenth_s_per_pack_step": first,
            "last_tenth_s_per_pack_step": last, "drift": round(last / first - 1, 4)}  # fmt: skip


def full_epoch(root: Path, data_path: Path, device, size: int) -> dict:
    """Two epochs of a pack through the real training loop (`iwae.training.packs.interleave`);
    the second one's time (from the first run's log), which holds no capture and no first-epoch
    set-up: against the replayed steps alone it gives the per-epoch overhead."""
    data, stop = datasets.load(data_path, device), StopRequest()
    settings = _settings(size)
    trainers = []
    for i, (setting, stream) in enumerate(zip(settings, devices.run_streams(device, size))):
        cfg = _config(data_path, device, setting, i + 1, epochs_per_stage=[2])
        run = build(cfg, root / "epoch" / f"run{i}", True, stop=stop, data=data, stream=stream, graphed=True)
        trainers.append(Trainer(run, callbacks(run, progress=False)))
    interleave("report", trainers)
    with open(root / "epoch" / "run0" / "train_log.csv") as f:
        second = list(csv.DictReader(f))[1]
    return {"runs": size, "steps": trainers[0].run.n_batches, "seconds": float(second["seconds"])}


# --------------------------------------------------------------------------- correctness


CASES = {  # the graphed-against-eager runs: each backend, the autograd one with two backward passes
    "2l_k5_iwae": {"layers": "2", "k": 5, "objective": "iwae", "backend": "fused"},
    "1l_k5_dreg": {"layers": "1", "k": 5, "objective": "dreg", "backend": "autograd"},
}


def _check_config(data_path: Path, device, setting: dict, epochs) -> TrainConfig:
    return TrainConfig(data=str(data_path), device=str(device), epochs_per_stage=list(epochs), **setting)


def _trained(root: Path, data_path: Path, device, name: str, setting: dict, graphed: bool, epochs):
    """A run through the real training loop, graphed or eager: the run at its end."""
    run = build(_check_config(data_path, device, setting, epochs), root / name, True, graphed=graphed)
    train_run(run, progress=False)
    return run


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    return {"bitwise_equal": bool(torch.equal(a, b)), "max_abs_difference": (a - b).abs().max().item()}


def graphed_against_eager(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """Each backend's graphed run against the same run eager, bitwise."""
    out = {}
    for key, setting in CASES.items():
        graphed = _trained(root, data_path, device, f"graphed-{key}", setting, True, sizes.check_epochs)
        eager_run = _trained(root, data_path, device, f"eager-{key}", setting, False, sizes.check_epochs)
        out[key] = {"backend": graphed.backend.name, "steps_as": graphed.steps.kind,
                    **_compare(graphed.model.buffer.data, eager_run.model.buffer.data)}  # fmt: skip
    return out


class _StopAfter(Callback):
    """Requests the run's stop once it has taken `steps` steps, as a scheduler's SIGTERM would
    then: the trainer saves the run at that very step boundary and stops it."""

    def __init__(self, stop: StopRequest, steps: int):
        self.stop, self.steps = stop, steps

    def after_steps(self, view):
        if view.steps_done >= self.steps:
            self.stop.requested = True


def resumed_inside_an_epoch(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """The fused backend's graphed run stopped after STOP_AFTER steps, strictly inside an epoch
    (its checkpoint there), and resumed by a new trainer, against the same run unstopped,
    bitwise. Records where the checkpoint fell and the replays that finished its epoch: the
    resume is exercised only if they include one of STEPS_PER_GRAPH steps and one of a single
    step (a checkpoint at an epoch's last step leaves the resume nothing to replay)."""
    key, setting = "2l_k5_iwae", CASES["2l_k5_iwae"]
    unstopped = _trained(root, data_path, device, f"unstopped-{key}", setting, True, sizes.check_epochs)
    cfg = _check_config(data_path, device, setting, sizes.check_epochs)
    first = build(cfg, root / f"resumed-{key}", True, graphed=True)
    try:
        train_run(first, progress=False, extra=[_StopAfter(first.stop, STOP_AFTER)])
        raise RuntimeError(f"the run ended before its stop after {STOP_AFTER} steps")
    except Interrupted:
        pass
    run = build(cfg, root / f"resumed-{key}", True, graphed=True)
    where = run.store.latest(run.say)["position"]
    epoch = sum(cfg.epochs_per_stage[: where["stage"]]) + where["epoch"]  # epochs before the checkpoint's
    done, replays = epoch * run.n_batches + where["step"], []
    t = Trainer(run, callbacks(run, progress=False))
    try:
        while t.advance("step") == "step":  # a replay (or step) of the epoch the checkpoint fell in
            replays.append(t.steps_done - done)
            done = t.steps_done
        while t.advance():
            pass
        t.finish()
    finally:
        t.release()
    n, step = run.n_batches, where["step"]
    fell = {"stage": where["stage"] + 1, "epoch": epoch + 1, "step": step, "steps_in_epoch": n, "steps_left": n - step}
    return {
        "run": key,
        "stop_after_steps": STOP_AFTER,
        "checkpoint": fell,
        "replays_after_resume": replays,
        "resumes": t.state.resumes,
        "exercised": t.state.resumes == 1 and 0 < step < n and STEPS_PER_GRAPH in replays and 1 in replays,
        **_compare(run.model.buffer.data, unstopped.model.buffer.data),
    }


def pack_against_alone(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """The runs of `sizes.check_pack` trained as one pack (on a GPU their graphs replaying at
    once, each on its stream) and each alone: the same parameters, bitwise."""
    settings = [{"layers": str(layers), "k": k, "objective": o} for layers, k, o in sizes.check_pack]
    data, stop = datasets.load(data_path, device), StopRequest()
    configs = [TrainConfig(data=str(data_path), device=str(device), epochs_per_stage=list(sizes.check_epochs), seed=i + 1,
                           **s) for i, s in enumerate(settings)]  # fmt: skip
    packed = []
    for i, (cfg, stream) in enumerate(zip(configs, devices.run_streams(device, len(configs)))):
        run = build(cfg, root / "pack" / f"run{i}", True, stop=stop, data=data, stream=stream, graphed=True)
        packed.append(Trainer(run, callbacks(run, progress=False)))
    interleave("check", packed)
    out = []
    for i, (cfg, t) in enumerate(zip(configs, packed)):
        alone = build(cfg, root / "alone" / f"run{i}", True, graphed=True)
        train_run(alone, progress=False)
        out.append({"run": f"{cfg.layers}l_k{cfg.k}_{cfg.objective}",
                    **_compare(t.run.model.buffer.data, alone.model.buffer.data)})  # fmt: skip
    return {"runs": out, "bitwise_equal": all(r["bitwise_equal"] for r in out)}


# --------------------------------------------------------------------------- each graph's own workspace

LARGE_SEGMENT = 20 * 2**20  # the caching allocator serves requests of 1 to 10 MiB from segments of this size


def workspace_bytes(device) -> int:
    """The cuBLAS workspace PyTorch allocates per (handle, stream), as it reads it: the
    :KiB:count pairs of CUBLAS_WORKSPACE_CONFIG summed (the command line sets :4096:8, 32 MiB),
    else its default (32 MiB from compute capability 9 on, else 4096 KiB x 2 + 16 KiB x 8)."""
    pairs = re.findall(r":(\d+):(\d+)", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""))
    if pairs:
        return sum(int(size) * int(count) for size, count in pairs) * 1024
    major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0
    return (4096 * 8 if major >= 9 else 4096 * 2 + 16 * 8) * 1024


def pools_in_snapshot(snapshot: dict, pools: dict[str, tuple], workspace: int, device_index: int | None = None) -> dict:
    """Each graph's private memory pool (`pools`: name -> `CUDAGraph.pool()`) in a memory
    snapshot (`torch.cuda.memory._snapshot()`): its segments, and those of at least the cuBLAS
    workspace's size. A workspace larger than the allocator's 20 MiB segments has a segment of
    its own, which nothing else a step allocates (every tensor under 10 MiB) could fill: such
    a segment in a graph's pool is that graph's workspace. Distinct pools, each with one, are
    the proof that graphs replaying at once never share a workspace."""
    segments = [
        s for s in snapshot["segments"] if device_index is None or s.get("device", device_index) == device_index
    ]
    graphs = {}
    for name, pool in pools.items():
        own = [s for s in segments if tuple(s["segment_pool_id"]) == tuple(pool)]
        graphs[name] = {"pool": list(pool), "segments": len(own), "reserved_bytes": sum(s["total_size"] for s in own),
                        "workspace_segments": [s["total_size"] for s in own if s["total_size"] >= workspace]}  # fmt: skip
    distinguishable = workspace > LARGE_SEGMENT
    return {
        "workspace_bytes": workspace,
        "workspace_distinguishable": distinguishable,
        "pools_distinct": len({tuple(p) for p in pools.values()}) == len(pools),
        "each_has_its_workspace": distinguishable and all(g["workspace_segments"] for g in graphs.values()),
        "graphs": graphs,
    }


def graph_pools(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    """The direct evidence of each graph's own workspace, for the pack of `sizes.check_pack`
    (three runs, two with k = 50) with all its graphs captured (`pools_in_snapshot`). The pack
    against its runs alone sees a shared workspace only if cuBLAS happens to choose kernels
    that use one."""
    if device.type != "cuda":
        return {"measured": False, "note": "not measurable on CPU: graphs and their memory pools exist only on a GPU"}
    trainers = _pack(root / "pools", data_path, device, list(sizes.check_pack))
    try:
        _sync(device)
        pools = {f"run{i} {layers}l_k{k}_{objective}, {n} steps": graph.pool()
                 for i, (t, (layers, k, objective)) in enumerate(zip(trainers, sizes.check_pack))
                 for n, graph in sorted(t.run.steps.graphs.items())}  # fmt: skip
        found = pools_in_snapshot(torch.cuda.memory._snapshot(device), pools, workspace_bytes(device), device.index)
    finally:
        _release(trainers)
    return {"measured": True, **found}


def correctness(root: Path, data_path: Path, device, sizes: Sizes) -> dict:
    out = {"graphed_vs_eager": graphed_against_eager(root, data_path, device, sizes),
           "resumed_inside_an_epoch": resumed_inside_an_epoch(root, data_path, device, sizes),
           "pack_vs_alone": pack_against_alone(root, data_path, device, sizes),
           "graph_pools": graph_pools(root, data_path, device, sizes)}  # fmt: skip
    out["failed"] = correctness_failures(out)
    out["passed"] = not out["failed"]
    return out


def _differ(name: str, compared: dict) -> str:
    return f"{name} not bitwise equal (max |difference| {compared['max_abs_difference']:.3g})"


def correctness_failures(found: dict) -> list[str]:
    """What the correctness section found wrong, one phrase each, naming the comparison."""
    out = [
        _differ(f"graphed_vs_eager {key}", c) for key, c in found["graphed_vs_eager"].items() if not c["bitwise_equal"]
    ]
    resumed = found["resumed_inside_an_epoch"]
    if not resumed["bitwise_equal"]:
        out.append(_differ(f"resumed_inside_an_epoch {resumed['run']}", resumed))
    if not resumed["exercised"]:
        fell = resumed["checkpoint"]
        out.append(f"resumed_inside_an_epoch {resumed['run']} not exercised (checkpoint at step {fell['step']} of "
                   f"{fell['steps_in_epoch']}, replays after it {resumed['replays_after_resume']})")  # fmt: skip
    out += [_differ(f"pack_vs_alone {r['run']}", r) for r in found["pack_vs_alone"]["runs"] if not r["bitwise_equal"]]
    pools = found["graph_pools"]
    if pools["measured"] and not pools["pools_distinct"]:
        out.append("graph_pools: graphs share a memory pool")
    if pools["measured"] and not pools["each_has_its_workspace"]:
        lacking = [name for name, g in pools["graphs"].items() if not g["workspace_segments"]]
        out.append(f"graph_pools: no segment of the {pools['workspace_bytes']} B workspace in the pools of "
                   f"{', '.join(lacking) or 'any graph'}" + ("" if pools["workspace_distinguishable"] else
                   " (a workspace of 20 MiB or less cannot be told apart: set CUBLAS_WORKSPACE_CONFIG=:4096:8)"))  # fmt: skip
    return out


PROBE_FINDINGS = ("host_reads", "off_device", "random_order", "foreign_random", "writes_elsewhere")
PROBED = {  # a step of each backend, and of the random-weight family (autograd, wider noise)
    "fused": {"layers": "2", "k": 5},
    "autograd-dreg": {"k": 5, "objective": "dreg", "backend": "autograd"},
    "random-weights": {"k": 5, "random": "both"},
}


def probe(root: Path, data_path: Path, device) -> dict:
    """What a capture would record of one step of each backend, on this device."""
    out = {}
    for name, setting in PROBED.items():
        run = build(TrainConfig(data=str(data_path), device=str(device), **setting), root / f"probe-{name}", True,
                    graphed=True)  # fmt: skip
        with devices.on(run.stream):  # as the trainer's first epoch begins, then one step
            initialize(run)
            run.steps.begin(run.order(), torch.zeros((), dtype=torch.float64, device=run.device), 0)
            found = probe_step(run.steps)
        run.release()
        out[name] = {"capturable": found.capturable, "repeatable": found.repeatable,
                     **{key: getattr(found, key) for key in PROBE_FINDINGS}, "operations": len(found.trace)}  # fmt: skip
    return out


# --------------------------------------------------------------------------- the report


def gpu_report(
    out_dir: Path, device: str = "auto", minutes: float = 6.0, quick: bool | None = None, threads: int | None = None
) -> dict:
    dev = devices.claim(resolve_device(device))  # one device for every run of the check
    runtime.setup(dev, threads)
    quick = dev.type != "cuda" if quick is None else quick
    sizes = QUICK if quick else FULL
    report = Report(out_dir, dev, minutes * 60)
    root = _scratch()
    mnist = synthetic_dataset(root / "mnist-shaped.npz", train=sizes.mnist_points)
    small = synthetic_dataset(root / "small.npz", train=CHECK_POINTS)  # epoch ends, a stage change, resumption
    report.put("quick", quick)
    report.section("versions", versions, dev)  # first: whatever fails later, the versions are known
    report.section("device_before", device_record, dev)
    report.section("probe", probe, root, small, dev, need=NEEDS["probe"])
    report.section("correctness", correctness, root, small, dev, sizes, need=NEEDS["correctness"])
    report.section("eager", eager, root, dev, sizes, need=NEEDS["eager"])
    report.section("graphed", graph_rates, root, mnist, dev, sizes, need=NEEDS["graphed"])
    report.section("packs", pack_rates, root, mnist, dev, sizes, need=NEEDS["packs"])
    report.section("epoch", full_epoch, root, mnist, dev, sizes.packs[0], need=NEEDS["epoch"])
    report.section("ceilings", ceilings, dev, sizes, need=NEEDS["ceilings"])
    seconds = sizes.steady_s if quick else min(sizes.steady_s, report.left() - 15)
    report.section("steady", steady, root, mnist, dev, sizes.packs[0], seconds, need=min(10.0, sizes.steady_s) + 15)
    report.section("device_after", _smi)
    report.put("prediction", predict(report.data, sizes.packs[0]))
    report.put("failed", failures(report.data))  # last: every section is written whatever failed
    print(format_report(report.data))
    return report.data


def failures(data: dict) -> list[str]:
    """What the check found wrong, one phrase each naming the comparison or section: a
    correctness comparison (`correctness_failures`), a probed step a graph cannot hold, a call
    of the CUDA path this PyTorch lacks, or a checking section that failed or was skipped (it
    proved nothing). Timings are measurements, not checks: they fail nothing."""
    out = []
    for key in ("versions", "probe", "correctness"):
        if _measured(data, key) is None:
            value = data.get(key) if isinstance(data.get(key), dict) else {}
            out.append(f"{key} did not run ({value.get('error') or value.get('skipped') or 'missing'})")
    lacking = (_measured(data, "versions") or {}).get("lacking_cuda_apis")
    if isinstance(lacking, list) and lacking:
        out.append(f"torch {data['versions']['torch']} lacks {', '.join(lacking)}")
    for name, found in (_measured(data, "probe") or {}).items():
        if not (found["capturable"] and found["repeatable"]):
            why = {k: found[k] for k in PROBE_FINDINGS if found[k]} or {"repeatable": False}
            out.append(f"probe {name}: a graph cannot replay its step ({why})")
    return out + (_measured(data, "correctness") or {}).get("failed", [])


def _measured(data: dict, key: str) -> dict | None:
    """A section's results, or None where it failed or was skipped."""
    value = data.get(key)
    return value if isinstance(value, dict) and "error" not in value and "skipped" not in value else None


def evaluation_seconds(eager_rates: dict) -> float | None:
    """Table 1's 20 evaluations (one per run; a shared run's fills both its cells): every run's
    test and validation points at the k = 5000 rate (the quick form's k where it ran no other)
    of its layers, and one job start-up each."""
    rates = {layers: next((v for k, v in eager_rates.items() if k.startswith(f"eval_{layers}l_")), None)
             for layers in (1, 2)}  # fmt: skip
    if None in rates.values() or "eval_job_startup_s" not in eager_rates:
        return None
    runs = {layers: sum(1 for setting in TABLE1 if setting[0] == layers) for layers in (1, 2)}  # per dataset
    seconds = sum(runs[layers] * points / rates[layers] for layers in (1, 2) for points in EVAL_POINTS.values())
    return seconds + len(EVAL_POINTS) * len(TABLE1) * eager_rates["eval_job_startup_s"]


def predict(data: dict, size: int) -> dict:
    """Table 1's time from what was measured; `missing` names what was not, and what it costs."""
    missing = []
    packs, epoch, eager_rates = _measured(data, "packs"), _measured(data, "epoch"), _measured(data, "eager")
    pack = (packs or {}).get(str(size))
    if pack is None:
        return {
            "hours": None,
            "missing": [f"packs ({size} runs)"],
            "note": "no prediction: the pack's step time is missing",
        }
    times = list(pack["seconds_per_pack_step"])
    drift = _measured(data, "steady")
    if drift and drift["pack_size"] == size:
        times += [drift["first_tenth_s_per_pack_step"], drift["last_tenth_s_per_pack_step"]]
    else:
        missing.append("steady (the band holds the trials only)")
    t_med = pack["median"]
    overhead = max(0.0, epoch["seconds"] / epoch["steps"] - t_med) * epoch["steps"] if epoch else 0.0
    if not epoch:
        missing.append("epoch (no per-epoch overhead counted)")
    evaluation = evaluation_seconds(eager_rates) if eager_rates else None
    if evaluation is None:
        missing.append("eager evaluation rates or start-up (no evaluation counted)")

    def total(t):
        return (MNIST_STEPS + OMNIGLOT_STEPS) * t + 2 * EPOCHS * overhead + (evaluation or 0.0)

    graphed = _measured(data, "graphed") or {}
    solo = graphed.get("train_2l_k50_steps_per_s")
    if not solo:
        missing.append("graphed (no critical-path floor)")
    return {
        "formula": f"(9,774,400 + 3,772,000) x t({size}-run pack step) + 2 x 3,280 x t(epoch overhead) + evaluation",
        "pack_size": size,
        "t_pack_step_s": t_med,
        "t_epoch_overhead_s": round(overhead, 4),
        "evaluation_s": round(evaluation, 1) if evaluation is not None else None,
        "hours": round(total(t_med) / 3600, 2),
        "band_hours": [round(total(min(times)) / 3600, 2), round(total(max(times)) / 3600, 2)],
        "floor_hours": round(MNIST_STEPS / solo / 3600, 2) if solo else None,
        "floor_formula": "9,774,400 x t(2-layer k = 50 step replayed alone): the longest run, whatever the packing",
        "missing": missing,
        "note": "a prediction from minutes of measurement, not a measured run; the band spans the trials and the "
        "steady minute" + (" (quick mode: sizes are not the paper's)" if data.get("quick") else ""),
    }


def format_report(data: dict) -> str:
    env, v = _measured(data, "device_before") or {}, _measured(data, "versions") or {}
    lines = [f"device: {v.get('gpu') or env.get('device_name', '?')} ({env.get('device', '?')}), torch "
             f"{v.get('torch', '?')} (CUDA {v.get('torch_cuda')}, driver {v.get('driver')}); "
             f"{'quick (not the real sizes)' if data['quick'] else 'full'}"]  # fmt: skip
    for section in ("probe", "ceilings", "eager", "graphed"):
        if _measured(data, section) is None:
            lines.append(f"{section:<10} {data.get(section)}")
            continue
        lines += [f"{section:<10} {key:<40} {value}" for key, value in data[section].items()]
    for size, row in (_measured(data, "packs") or {}).items():
        host = statistics.median(row["host_seconds_per_pack_step"])
        lines.append(f"{'pack':<10} {size} runs: {row['run_steps_per_s']} run-steps/s, {row['median'] * 1e3:.3f} ms a "
                     f"pack step ({host * 1e3:.3f} ms of it enqueueing)")  # fmt: skip
    for section in ("epoch", "correctness", "steady"):
        lines.append(f"{section:<10} {data.get(section)}")
    p = data["prediction"]
    if p["hours"] is None:
        lines.append(f"prediction: none ({p['note']})")
    else:
        lines.append(f"prediction: Table 1 in {p['hours']} h (band {p['band_hours'][0]}-{p['band_hours'][1]} h) "
                     f"= {p['formula']}")  # fmt: skip
        lines.append(f"floor:      {p['floor_hours']} h = {p['floor_formula']}")
    lines.append(f"            {p['note']}" + (f"; missing: {', '.join(p['missing'])}" if p["missing"] else ""))
    failed = data.get("failed", [])
    lines.append(f"check:      {'FAILED: ' + '; '.join(failed) if failed else 'passed'}")
    return "\n".join(lines)
