"""Packs: several runs of one dataset trained in one job. A pack is a scheduling choice only.

Every run keeps its own seed and random stream, data order, binarisation and noise, its run
directory, checkpoints, train_log.csv, model.pt and train.json (which records the pack), so
that its result does not depend on its pack-mates: a run trained in a pack ends bit-identical
to the same run trained alone (with the same threads per run). A run that diverges stops
alone; the others finish. A killed pack resumes every run from its own checkpoints.

In one process the runs are interleaved: the pack advances each run's trainer in turn
(`Trainer.advance`, `interleave`), one epoch at a time on a CPU and one step at a time on a
GPU, where every run has a stream of its own and its steps overlap with its pack-mates'.
On a CPU with several threads the pack is split over worker processes, one per thread, each
training its share of the runs with one thread: a pack is then never slower than the same
runs as separate jobs with the same total threads.

The pack file (written by the workflow, `results/<configuration>/packs/<experiment>/<pack>.json`):

    {"name": "table1-mnist", "runs": [{"out": "results/paper/runs/table1/mnist-1l-vae-k1-s1",
                                       "flags": ["--data", "results/data/mnist.npz", ...]}, ...]}

Each run's flags are those `iwae train` would get for it alone (`iwae.plan.config.flags`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from iwae.errors import Diverged, Interrupted, UserError
from iwae.plan.architecture import Architecture
from iwae.plan.config import TrainConfig, from_flags
from iwae.training.signals import StopRequest


def load_spec(path: Path) -> tuple[str, list[tuple[Path, TrainConfig]]]:
    """The pack's name and its runs (run directory, configuration), checked."""
    try:
        spec = json.loads(Path(path).read_text())
        name, runs = spec["name"], spec["runs"]
        members = [(Path(r["out"]), [str(a) for a in r["flags"]]) for r in runs]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a pack file ({type(e).__name__}: {e})") from None
    if not members:
        raise UserError(f"{path}: a pack needs at least one run")
    out = [(run_dir, from_flags(TrainConfig, argv, f"{path}: {run_dir.name}")) for run_dir, argv in members]
    for key in ("data", "device", "tf32"):  # one dataset in memory, one device, one TF32 setting
        values = {getattr(cfg, key) for _, cfg in out}
        if len(values) > 1:
            raise UserError(f"{path}: the runs of a pack share one {key}, got {sorted(values)}")
    if len({run_dir for run_dir, _ in out}) < len(out):
        raise UserError(f"{path}: a run appears twice")
    return name, out


def cost(cfg: TrainConfig, train_points: int) -> float:
    """Relative CPU time of a run: steps, times a step's cost at this k (bench: a k = 50
    step costs about ten k = 1 steps), times the stochastic layers."""
    layers = Architecture.parse(cfg.layers).n_stochastic
    points = min(cfg.train_subset or train_points, train_points)
    return cfg.total_epochs * points / cfg.batch_size * (1 + 0.2 * cfg.k) * (1 + 0.5 * (layers - 1))


def _train_points(data: str) -> int:
    """The training split's size, from the prepared file's metadata (no PyTorch needed)."""
    try:
        with np.load(data) as z:
            return int(json.loads(str(z["meta"]))["splits"]["train"])
    except (OSError, KeyError, ValueError):
        return 1  # an unreadable file: the run's own load reports it


def shares(costs: list[float], workers: int) -> list[list[int]]:
    """Run indices per worker, longest runs first to the least loaded worker."""
    loads, out = [0.0] * workers, [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = loads.index(min(loads))
        out[w].append(i)
        loads[w] += costs[i]
    return [sorted(s) for s in out if s]


def train_pack(path: Path, threads: int | None = None, quiet: bool = False, only: list[int] | None = None) -> list:
    """Train (or resume) every run of the pack file `path` (or the runs `only`, a worker's
    share); return the records of the runs trained in this process."""
    name, members = load_spec(path)
    chosen = list(range(len(members))) if only is None else only
    for i in chosen:
        if not 0 <= i < len(members):
            raise UserError(f"{path}: no run {i} (the pack has {len(members)})")
    if only is None and (threads or 1) > 1 and len(members) > 1 and _on_cpu(members[0][1].device):
        return _in_workers(path, name, members, threads, quiet)
    if only is not None:
        die_with_parent()
    return _in_process(name, members, chosen, threads, quiet)


def _on_cpu(device: str) -> bool:
    """Whether the pack trains on a CPU, decided before PyTorch is imported where possible
    (importing it takes seconds that every worker would wait for)."""
    no_gpu = shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists()
    if device == "cpu" or (device == "auto" and no_gpu):
        return True
    from iwae.system.provenance import resolve_device

    return resolve_device(device).type == "cpu"


def _in_process(name: str, members: list, chosen: list[int], threads: int | None, quiet: bool, also=None) -> list:
    from iwae.data import datasets
    from iwae.system import devices, runtime
    from iwae.system.provenance import resolve_device
    from iwae.training.loop import Trainer
    from iwae.training.run import build, callbacks

    first = members[chosen[0]][1]
    device = devices.claim(resolve_device(first.device))  # one GPU for the whole pack
    record = {"name": name, "runs": [d.name for d, _ in members], "in_process": [members[i][0].name for i in chosen]}
    stop = StopRequest(also)
    stop.install()
    try:
        runtime.setup(device, threads, first.tf32)
        data = datasets.load(Path(first.data), device)
        streams = devices.run_streams(device, len(chosen))  # made together, before any capture
        trainers = []
        for i, stream in zip(chosen, streams):
            run_dir, cfg = members[i]
            cfg.threads, cfg.device = threads, str(device)
            run = build(cfg, run_dir, quiet, stop=stop, data=data, pack=record, stream=stream)
            trainers.append(Trainer(run, callbacks(run, progress=False)))
        return interleave(name, trainers)
    finally:
        stop.uninstall()


def interleave(name: str, trainers: list) -> list:
    """Advance each run's training loop in turn (`Trainer.advance`) until every run has
    finished or failed: one epoch at a time on a CPU, one step at a time on a GPU, where every
    run has a stream of its own; a run's CUDA graphs end as soon as it is done."""
    to = "step" if trainers[0].run.device.type == "cuda" else "epoch"
    running, records, diverged, interrupted = list(trainers), [], [], []
    try:
        while running:
            for trainer in list(running):
                try:
                    done = trainer.advance(to) is None
                    if done:
                        records.append(trainer.finish())
                except Diverged as e:  # this run stops; its pack-mates go on
                    print(f"error: {e}", file=sys.stderr, flush=True)
                    diverged.append(str(e))
                    done = True
                except Interrupted as e:
                    interrupted.append(e)
                    done = True
                if done:
                    trainer.release()
                    running.remove(trainer)
    finally:
        for trainer in trainers:
            trainer.release()
    if interrupted:
        raise Interrupted(f"pack {name}: {len(interrupted)} runs interrupted", interrupted[0].signum)
    if diverged:
        raise Diverged(f"pack {name}: {len(diverged)} of {len(trainers)} runs diverged ({'; '.join(diverged)})")
    return records


def _in_workers(path: Path, name: str, members: list, threads: int, quiet: bool) -> list:
    """Split the pack over one single-threaded process per thread: this one trains the first
    share, worker processes (started first) the others. A stop request (SIGTERM, SIGINT)
    reaches every worker as SIGUSR1, for as long as any runs, and each checkpoints."""
    points = _train_points(members[0][1].data)
    workers = shares([cost(cfg, points) for _, cfg in members], min(threads, len(members)))
    per_worker = max(1, threads // len(workers))
    procs = []
    for share in workers[1:]:
        cmd = [sys.executable, "-m", "iwae", "train", "--pack", str(path), "--pack-runs", ",".join(map(str, share))]
        cmd += ["--threads", str(per_worker)] + (["--quiet"] if quiet else [])
        procs.append(subprocess.Popen(cmd))  # (OMP_NUM_THREADS=1 here would slow start-up by a second)

    def forward(signum=None):
        for p in procs:
            if p.poll() is None:
                p.send_signal(StopRequest.FROM_PACK)

    stop = StopRequest(also=forward)
    stop.install()
    failure, records = None, []
    try:
        records = _in_process(name, members, workers[0], per_worker, quiet, also=forward)
    except (Diverged, Interrupted) as e:  # the workers go on (or stop) by themselves
        failure = e
    except BaseException:
        forward()  # any other failure here: the workers checkpoint and stop too
        raise
    finally:
        codes = [p.wait() for p in procs]
        stop.uninstall()
    signals = [c for c in codes if c >= 128 or c < 0]
    if isinstance(failure, Interrupted) or signals or stop.requested:
        signum = failure.signum if isinstance(failure, Interrupted) else stop.signum or signal.SIGTERM
        raise Interrupted(f"pack {name}: interrupted", signum)
    if failure is not None or 3 in codes:
        raise Diverged(f"pack {name}: a run diverged (its error is above); the others finished")
    if any(c != 0 for c in codes):
        raise UserError(f"pack {name}: a worker failed with status {max(codes)} (its error is above)")
    trained_here = {r["run"] for r in records}
    return records + [json.loads((d / "train.json").read_text()) for d, _ in members if d.name not in trained_here]


def die_with_parent() -> None:
    """A worker: stop (checkpointing) if the pack's first process dies (Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.prctl(1, int(signal.SIGUSR1))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGUSR1)
