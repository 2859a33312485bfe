"""The training protocol of Burda et al.: stages of 3^i epochs at a decaying learning rate.

Each step takes a minibatch from the reshuffled training set, binarises it afresh, draws k
samples per point and applies the objective's gradient with Adam. All randomness comes from
one generator on the training device. Checkpoints hold the parameters, the optimizer, that
generator's state and the exact position (stage, epoch, step, the epoch's permutation), so a
run killed at any point resumes where it stopped and, on the same CPU with the same thread
count, ends with bit-identical parameters.

Files in the run directory:
    checkpoints/ckpt-*.pt   the newest two checkpoints (a corrupt newest one falls back)
    train_log.csv           one row per epoch: stage, epoch, lr, objective, seconds, points/s
    model.pt                final parameters, optimizer state and configuration
    train.json              the training record: configuration, versions, device, wall time
"""

from __future__ import annotations

import csv
import io
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iwae import datasets, runtime
from iwae.config import TrainConfig
from iwae.errors import UserError
from iwae.files import atomic_path, write_json, write_text
from iwae.model import Architecture, IWAEModel
from iwae.objectives import Objective
from iwae.optim import Adam
from iwae.progress import Progress
from iwae.provenance import environment, resolve_device
from iwae.sources import file_digest

CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 2
LOG_COLUMNS = ["stage", "epoch", "stage_epoch", "lr", "objective", "seconds", "points_per_s"]


class Diverged(UserError):
    """A non-finite objective or parameter; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGTERM or SIGINT: a checkpoint was written, the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Position:
    """The next thing to do: step `step` of epoch `epoch` (within stage `stage`)."""

    stage: int = 0
    epoch: int = 0
    step: int = 0


class CheckpointStore:
    def __init__(self, directory: Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("ckpt-*.pt"), reverse=True)

    def save(self, state: dict, global_epoch: int, step: int) -> Path:
        path = self.directory / f"ckpt-{global_epoch:06d}-{step:07d}.pt"
        with atomic_path(path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state}, tmp)
        for old in self.paths()[KEEP_CHECKPOINTS:]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, say) -> dict | None:
        """The newest checkpoint that loads and belongs to this configuration."""
        for path in self.paths():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # a damaged file: say so and try the previous one
                say(f"checkpoint {path} is unreadable ({type(e).__name__}); trying an older one")
                continue
            if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != self.fingerprint:
                say(f"checkpoint {path} belongs to another configuration; starting over")
                for stale in self.paths():
                    stale.unlink(missing_ok=True)
                return None
            state["path"] = path
            return state
        return None


def output_bias(train: torch.Tensor) -> np.ndarray:
    """logit of the clipped mean training image, the official code's output-layer bias."""
    mean = train.double().mean(0).clamp(1e-3, 1 - 1e-3).cpu().numpy()
    return np.log(mean / (1 - mean))


def _say(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


def train(cfg: TrainConfig, out_dir: Path, quiet: bool = False, progress: bool | None = None) -> dict:
    """Run (or resume) one training run; return its record (also written to train.json)."""
    out_dir = Path(out_dir)
    run = out_dir.name
    say = _say(quiet)
    device = resolve_device(cfg.device)
    runtime.setup(device, cfg.threads)
    data = datasets.load(Path(cfg.data), device)
    train_x = data.train
    if cfg.train_subset is not None:
        if cfg.train_subset > train_x.shape[0]:
            raise UserError(f"train_subset: {cfg.train_subset} exceeds the {train_x.shape[0]} training points")
        train_x = train_x[: cfg.train_subset]
    n, batch = train_x.shape[0], cfg.batch_size
    n_batches = n // batch  # as the official code: an incomplete last batch is dropped
    if n_batches == 0:
        raise UserError(f"batch_size: {batch} exceeds the {n} training points")
    objective = Objective.parse(cfg.objective)
    model = IWAEModel(Architecture.parse(cfg.layers), train_x.shape[1], device)
    opt = Adam(
        model.buffer.data, model.buffer.grad, cfg.lr, cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, cfg.optimizer
    )
    gen = torch.Generator(device=device)

    lineage = list(data.meta["sources"])
    if cfg.init_from:
        lineage.append({"init_from": file_digest(Path(cfg.init_from), "sha256")})
    store = CheckpointStore(out_dir / "checkpoints", cfg.fingerprint(lineage))
    state = store.latest(say)
    if state is not None:
        model.buffer.data.copy_(state["params"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        pos = Position(**state["position"])
        log, elapsed, resumes = state["log"], state["elapsed"], state["resumes"] + 1
        say(f"{run}: resuming from {state['path'].name} (stage {pos.stage + 1}, epoch {pos.epoch + 1})")
    else:
        gen.manual_seed(cfg.seed)
        if cfg.init_from:
            _continue_from(cfg.init_from, model, opt)
        else:
            model.initialize(cfg.seed, cfg.init, output_bias(train_x))
        pos, log, elapsed, resumes = Position(), [], 0.0, 0

    stop = _StopRequest()
    session_start = last_checkpoint = time.monotonic()
    bar = Progress(cfg.total_epochs, run, enabled=None if progress is None else progress)
    done_epochs = sum(cfg.epochs_per_stage[: pos.stage]) + pos.epoch

    def checkpoint(stage: int, epoch: int, next_pos: Position, extra: dict | None = None):
        """Save the state before `next_pos`; (stage, epoch) only name the place in errors."""
        nonlocal last_checkpoint
        if not bool(torch.isfinite(model.buffer.data).all()):
            raise Diverged(f"run {run}: non-finite parameters at stage {stage + 1}, epoch {epoch + 1}")
        store.save(
            {
                "position": vars(next_pos),
                "params": model.buffer.data.cpu().clone(),
                "optimizer": {k: v.cpu() if torch.is_tensor(v) else v for k, v in opt.state_dict().items()},
                "generator": gen.get_state(),
                "log": log,
                "elapsed": elapsed + time.monotonic() - session_start,
                "resumes": resumes,
                **(extra or {}),
            },
            done_epochs,  # with the step, names sort in training order
            next_pos.step,
        )
        last_checkpoint = time.monotonic()

    def checkpoint_due() -> bool:
        return time.monotonic() - last_checkpoint > cfg.checkpoint_minutes * 60

    try:
        stop.install()
        for stage in range(pos.stage, len(cfg.epochs_per_stage)):
            lr = cfg.learning_rate(stage)
            opt.lr = lr
            for epoch in range(pos.epoch if stage == pos.stage else 0, cfg.epochs_per_stage[stage]):
                pos = Position(stage, epoch, pos.step if (stage, epoch) == (pos.stage, pos.epoch) else 0)
                if pos.step > 0:  # resuming inside an epoch
                    perm = state["perm"].to(device)
                    total = state["epoch_sum"].to(device)
                    seconds_before = state["epoch_seconds"]
                else:
                    perm = (
                        torch.randperm(n, generator=gen, device=device)
                        if cfg.shuffle
                        else torch.arange(n, device=device)
                    )
                    total = torch.zeros((), device=device, dtype=torch.float64)
                    seconds_before = 0.0
                t0 = time.monotonic()
                for step in range(pos.step, n_batches):
                    x = torch.index_select(train_x, 0, perm[step * batch : (step + 1) * batch])
                    if data.dynamic:
                        x = datasets.binarize(x, gen)
                    fp = model.forward(x, cfg.k, gen)
                    estimate = objective(fp.log_w)
                    model.backward(fp, estimate.coefficients)
                    opt.step()
                    total += estimate.bound.sum()
                    if stop.requested or (step + 1 < n_batches and checkpoint_due()):
                        if not math.isfinite(total.item()):
                            raise Diverged(f"run {run}: non-finite objective at stage {stage + 1}, epoch {epoch + 1}")
                        pos = Position(stage, epoch, step + 1)
                        checkpoint(
                            stage,
                            epoch,
                            pos,
                            {
                                "perm": perm.cpu(),
                                "epoch_sum": total.cpu(),
                                "epoch_seconds": seconds_before + time.monotonic() - t0,
                            },
                        )
                        if stop.requested:
                            raise Interrupted(
                                f"{run}: interrupted at stage {stage + 1}, epoch {epoch + 1}", stop.signum
                            )
                mean = total.item() / (n_batches * batch)  # one host synchronisation per epoch
                seconds = seconds_before + time.monotonic() - t0
                if not math.isfinite(mean):
                    raise Diverged(f"run {run}: non-finite objective at stage {stage + 1}, epoch {epoch + 1}")
                done_epochs += 1
                log.append(
                    {
                        "stage": stage + 1,
                        "epoch": done_epochs,
                        "stage_epoch": epoch + 1,
                        "lr": lr,
                        "objective": mean,
                        "seconds": round(seconds, 4),
                        "points_per_s": round(n_batches * batch / max(seconds, 1e-9), 1),
                    }
                )
                _write_log(out_dir / "train_log.csv", log)
                bar.update(done_epochs, f"stage {stage + 1}/{len(cfg.epochs_per_stage)} objective {mean:.2f}")
                pos = Position(stage, epoch + 1, 0)
                last_of_stage = epoch + 1 == cfg.epochs_per_stage[stage]
                if last_of_stage:
                    pos = Position(stage + 1, 0, 0)
                if last_of_stage or checkpoint_due() or stop.requested:
                    checkpoint(stage, epoch, pos)
                    if stop.requested:
                        raise Interrupted(f"{run}: interrupted after stage {stage + 1}, epoch {epoch + 1}", stop.signum)
            if not quiet and not bar.enabled:
                say(f"{run}: stage {stage + 1}/{len(cfg.epochs_per_stage)} done, objective {log[-1]['objective']:.3f}")
    finally:
        stop.uninstall()
        bar.close()

    elapsed += time.monotonic() - session_start
    record = {
        "run": run,
        "config": cfg.to_dict(),
        "objective_final": log[-1]["objective"] if log else None,
        "epochs": done_epochs,
        "steps": done_epochs * n_batches,
        "train_points": n,
        "train_seconds": round(elapsed, 2),
        "resumes": resumes,
        "data": {"path": str(cfg.data), **{k: data.meta[k] for k in ("dataset", "label", "splits", "sources")}},
        "environment": environment(device),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "model": model.state(),
                "optimizer": {k: v.cpu() if torch.is_tensor(v) else v for k, v in opt.state_dict().items()},
                "config": cfg.to_dict(),
                "dataset": data.meta["dataset"],
            },
            tmp,
        )
    write_json(out_dir / "train.json", record)
    return record


def _continue_from(path: str, model: IWAEModel, opt: Adam) -> None:
    """Start from a finished run's parameters and optimizer state (two-stage training)."""
    previous = load_model_file(Path(path))
    if previous["model"]["architecture"] != model.architecture.spec():
        raise UserError(
            f"init_from: {path} has architecture {previous['model']['architecture']}, not {model.architecture.spec()}"
        )
    model.buffer.data.copy_(previous["model"]["params"])
    opt.load_state_dict(previous["optimizer"])


def load_model_file(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such model file") from None
    except Exception as e:
        raise UserError(f"{path}: not a model file ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise UserError(f"{path}: not a model file written by this version")
    return state


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop checks at every step, so that a
    scheduler's kill (Slurm sends SIGTERM first) leaves a fresh checkpoint behind."""

    def __init__(self):
        self.requested = False
        self.signum = 0
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
