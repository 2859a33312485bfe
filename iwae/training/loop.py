"""The training protocol of Burda et al.: stages of 3^i epochs at a decaying learning rate,
each epoch one pass of minibatch steps over the reshuffled training set.

`Trainer.train` is that protocol and nothing else. What else happens as a run goes attaches
as callbacks (`iwae.training.callbacks`): checkpoints, and the stop a scheduler's signal
requests (`iwae.training.signals`); the training log and its validation bound; the learning
curve (`iwae.training.curves`); snapshots of the parameters; progress. A step itself is
`iwae.training.steps.data_step`, taken eagerly or replayed as a CUDA graph
(`iwae.training.graphs`), which see only the run's `StepState`.

All randomness comes from one generator on the training device. Checkpoints hold the
parameters, the optimizer, that generator's state and the exact position (stage, epoch, step,
the epoch's permutation), so a run killed at any point resumes where it stopped and, on the
same CPU with the same thread count, ends with bit-identical parameters.

Files in the run directory:
    checkpoints/ckpt-*.pt   the newest two checkpoints (a corrupt newest one falls back)
    train_log.csv           one row per epoch: stage, epoch, lr, objective, seconds, points/s
    model.pt                final parameters, optimizer state and configuration (with
                            `snapshot_stages`, also the parameters at the start and after each stage)
    train.json              the training record: configuration, versions, device, wall time
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from iwae import backends, models
from iwae.data import datasets
from iwae.data.sources import file_digest
from iwae.errors import Diverged, Interrupted, UserError
from iwae.estimators.objectives import Objective
from iwae.models.store import load_model_file, on_cpu, save_model_file
from iwae.plan import rundirs
from iwae.plan.config import TrainConfig
from iwae.system import devices, runtime
from iwae.system.files import check_writable, write_json
from iwae.system.provenance import environment, resolve_device
from iwae.training import callbacks, graphs, optim
from iwae.training.checkpoints import CheckpointStore
from iwae.training.curves import LearningCurve
from iwae.training.signals import StopRequest
from iwae.training.steps import EagerSteps, StepState, data_step


@dataclass
class Position:
    """The next thing to do: step `step` of epoch `epoch` (within stage `stage`)."""

    stage: int = 0
    epoch: int = 0
    step: int = 0


def train(
    cfg: TrainConfig, out_dir: Path, quiet: bool = False, progress: bool | None = None, restart: bool = False
) -> dict:
    """Run (or resume) one training run; return its record (also written to train.json).
    `restart` trains over a finished run (or checkpoints) of another configuration."""
    return Trainer(cfg, Path(out_dir), quiet, progress, restart=restart).run()


class Trainer:
    """One run: its data, model, optimizer, random stream, checkpoints and position."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        quiet: bool,
        progress: bool | None,
        stop: StopRequest | None = None,
        data: datasets.Data | None = None,
        pack: dict | None = None,
        restart: bool = False,
        graphed: bool | None = None,
    ):
        """`stop`, `data` and `pack` are shared by the runs of a pack: one stop request for
        the process, one copy of the dataset, and the pack's name and members. A directory
        holding a run of another configuration is refused, unless `restart` clears it.
        `graphed`: None replays CUDA graphs where they apply; True takes the steps a graph
        replays also off a GPU, where they run without one (the tests and the GPU check's CPU
        form compare them with eager steps); False takes eager steps."""
        self.cfg, self.out_dir, self.run_name = cfg, out_dir, out_dir.name
        self.say = _say(quiet)
        _claim(out_dir, cfg, restart, self.say)
        self.device = devices.claim(resolve_device(cfg.device), say=self.say)
        runtime.setup(self.device, cfg.threads, cfg.tf32)
        self.data = data if data is not None else datasets.load(Path(cfg.data), self.device)
        self.pack = pack
        self.x = self.data.points(cfg.train_split)
        if cfg.train_subset is not None:
            if cfg.train_subset > self.x.shape[0]:
                raise UserError(f"train_subset: {cfg.train_subset} exceeds the {self.x.shape[0]} training points")
            self.x = self.x[: cfg.train_subset]
        self.n_batches = self.x.shape[0] // cfg.batch_size  # as the official code: no last partial batch
        if self.n_batches == 0:
            raise UserError(f"batch_size: {cfg.batch_size} exceeds the {self.x.shape[0]} training points")
        # binarised afresh at every use, unless the run models the grey levels (seed 002)
        self.binarize = self.data.dynamic and not cfg.grey_levels
        self.objective = Objective.parse(cfg.objective)
        likelihood = self.data.likelihood if cfg.likelihood == "auto" else cfg.likelihood
        # a conditional model's condition: the one-hot labels of the training points
        self.c = self.data.one_hot_labels(cfg.train_split)[: self.x.shape[0]] if cfg.condition == "label" else None
        classes = 0 if self.c is None else self.c.shape[1]
        self.model = models.build(cfg, self.x.shape[1], self.device, likelihood, classes)
        self.backend = backends.select(self.model, cfg.backend)
        self.eager_because = graphs.graphs_apply(cfg, self.device)
        if graphed is not None and self.eager_because in (None, graphs.NOT_ON_A_GPU):
            self.eager_because = None if graphed else "eager steps were asked for"
        # the objectives give the gradient of the minibatch mean, so the prior's gradient weighs 1 / N:
        # KW's (N / M) sum_batch L + log p(theta), divided by N
        self.prior = (
            optim.WeightPrior(self.model.buffer, 1.0 / self.x.shape[0]) if cfg.weight_prior == "normal" else None
        )
        self.gen = torch.Generator(device=self.device)
        self.state = StepState(self.x, self.c, self.binarize, cfg.batch_size, cfg.k, self.backend, self.model.buffer,
                               self.objective, self._optimizer(cfg.lr), self.gen, self.prior,
                               float(cfg.batch_size) if cfg.reduction == "sum" else 1.0)  # fmt: skip
        self.first_lr, self.pilot = cfg.lr, None  # the first stage's rate, and the pilot's findings
        lineage = list(self.data.meta["sources"])
        if cfg.init_from:  # a second stage belongs to its first stage's exact parameters
            lineage.append({"init_from": file_digest(Path(cfg.init_from), "sha256")})
        self.store = CheckpointStore(out_dir / "checkpoints", cfg.fingerprint(lineage))
        self.stop = stop or StopRequest()
        capture = self.device.type == "cuda"
        self.steps = EagerSteps(self.state) if self.eager_because else graphs.GraphedSteps(self.state, capture)
        self.curve = LearningCurve(self) if cfg.curve_per_decade else None
        self.progress = callbacks.ProgressReport(self, progress)
        self.callbacks = [c for c in (  # called in this order: a checkpoint holds what the others did
            self.curve,
            callbacks.Validation(self) if cfg.valid_every else None,
            callbacks.StageSnapshots() if cfg.snapshot_stages else None,
            callbacks.TrainingLog(out_dir / "train_log.csv"),
            self.progress,
            callbacks.Checkpoints(),
        ) if c is not None]  # fmt: skip

    # ---------------------------------------------------------------- the protocol

    def train(self) -> Iterator[str]:
        """The training loop as a generator: it yields "step" after every step (or replay of
        a graph of steps) and "epoch" after every epoch, so that a pack (`iwae.training.packs`)
        can interleave its runs. Raises Diverged or Interrupted; `finish` writes the results."""
        resumed = self.restore_or_initialize()
        self.session_start = time.monotonic()
        self.done_epochs = sum(self.cfg.epochs_per_stage[: self.pos.stage]) + self.pos.epoch
        self._call("start", resumed)
        stages = self.cfg.epochs_per_stage
        for stage in range(self.pos.stage, len(stages)):
            self.opt.lr = self.cfg.learning_rate(stage, self.first_lr)
            for epoch in range(self.pos.epoch if stage == self.pos.stage else 0, stages[stage]):
                # only the restored position can lie inside an epoch
                yield from self.epoch(stage, epoch, resumed if self.pos.step > 0 else None)
                last = epoch + 1 == stages[stage]
                self.pos = Position(stage + 1, 0, 0) if last else Position(stage, epoch + 1, 0)
                self._call("after_epoch", stage, epoch, last)
                yield "epoch"
            self._call("after_stage", stage)

    def epoch(self, stage: int, epoch: int, resumed: dict | None) -> Iterator[str]:
        """One pass over the training set (from the middle, if `resumed` holds a checkpoint
        taken inside this epoch). Syncs with the device once, at the end."""
        if resumed is not None:
            first, seconds_before = self.pos.step, resumed["epoch_seconds"]
            perm, total = resumed["perm"].to(self.device), resumed["epoch_sum"].to(self.device)
        else:
            first, seconds_before = 0, 0.0
            perm = self._rows(self.x.shape[0], self.gen)
            total = torch.zeros((), device=self.device, dtype=torch.float64)
        self.steps.begin(perm, total, first)
        self.epoch_perm, self.epoch_start = perm, time.monotonic() - seconds_before
        before = self.done_epochs * self.n_batches  # steps of the epochs before this one
        step = first
        while step < self.n_batches:
            step += self.steps.step(step, self._stop_for_host(before, step))  # one step, or a graph's
            self._call("after_steps", stage, epoch, step)
            yield "step"
        mean = self.steps.total.item() / (self.n_batches * self.cfg.batch_size)
        seconds = time.monotonic() - self.epoch_start
        if not math.isfinite(mean):
            raise self.diverged("objective", stage, epoch)
        self.done_epochs += 1
        row = {"stage": stage + 1, "epoch": self.done_epochs, "stage_epoch": epoch + 1, "lr": self.opt.lr,
               "objective": mean, "seconds": round(seconds, 4),
               "points_per_s": round(self.n_batches * self.cfg.batch_size / max(seconds, 1e-9), 1),
               "valid_bound": None}  # fmt: skip
        self._call("log_row", row)
        self.log.append(row)

    # ---------------------------------------------------------------- around the loop

    def run(self) -> dict:
        """Train to the end (or resume and do so), alone in this process, on a stream of its
        own on a GPU."""
        self.stop.install()
        try:
            with devices.on(devices.run_streams(self.device, 1)[0]):  # finish() too: it reads the results
                for _ in self.train():
                    pass
                return self.finish()
        finally:
            self.release()
            self.stop.uninstall()
            self.progress.close()

    def release(self) -> None:
        """End the run's CUDA graphs (if any) now; call it when the run has finished or failed."""
        self.steps.release()

    @property
    def opt(self):
        """The run's optimizer (the step-size pilot tries others)."""
        return self.state.opt

    @opt.setter
    def opt(self, optimizer) -> None:
        self.state.opt = optimizer

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _optimizer(self, lr: float):
        """The run's optimizer; with the learning rate on the device on a GPU (graphed steps
        or not, so that both are the same arithmetic) and wherever the steps are a graph's."""
        on_device = self.device.type == "cuda" or not self.eager_because
        return optim.make(self.cfg, self.model.buffer.data, self.model.buffer.grad, lr, lr_on_device=on_device)

    def _rows(self, n: int, generator) -> torch.Tensor:
        """An epoch's order of the training points: a permutation (or the identity without
        shuffling), or with `sampling: replacement` n draws with replacement."""
        if self.cfg.sampling == "replacement":
            return torch.randint(n, (n,), generator=generator, device=self.device)
        if self.cfg.shuffle:
            return torch.randperm(n, generator=generator, device=self.device)
        return torch.arange(n, device=self.device)

    def _stop_for_host(self, before: int, step: int) -> int:
        """Where the steps from `step` of this epoch on must pause for the host: the epoch's
        end, or the next point of the learning curve (`before` steps were in earlier epochs)."""
        stops = self.curve.stops if self.curve else []
        i = bisect.bisect_right(stops, before + step)
        return min(self.n_batches, stops[i] - before) if i < len(stops) else self.n_batches

    # ---------------------------------------------------------------- state

    def restore_or_initialize(self) -> dict | None:
        """Load the newest valid checkpoint, or initialise; return the checkpoint (or None)."""
        state = self.store.latest(self.say)
        if state is not None:
            self.model.buffer.data.copy_(state["params"])
            self.opt.load_state_dict(state["optimizer"])
            self.gen.set_state(state["generator"])
            self.pos = Position(**state["position"])
            self.log, self.elapsed, self.resumes = state["log"], state["elapsed"], state["resumes"] + 1
            self.first_lr, self.pilot = state.get("first_lr", self.cfg.lr), state.get("pilot")
            for callback in self.callbacks:
                callback.restore(state)
            self.say(
                f"{self.run_name}: resuming from {state['path'].name} (stage {self.pos.stage + 1}, epoch {self.pos.epoch + 1})"
            )
            return state
        if self.cfg.lr_pilot and not self.cfg.init_from:
            self.first_lr, self.pilot = self.run_pilot()
            self.opt = self._optimizer(self.first_lr)
        self.gen.manual_seed(self.cfg.seed)
        if self.cfg.init_from:
            _continue_from(self.cfg.init_from, self.model, self.opt)
        else:
            self.model.initialize(self.cfg.seed, self.cfg.init, self.output_bias())
        self.pos, self.log, self.elapsed, self.resumes = Position(), [], 0.0, 0
        return None

    def run_pilot(self) -> tuple[float, dict]:
        """Kingma & Welling's choice of step size: each rate of `lr_pilot` trains
        `pilot_steps` steps from the run's own start and noise; the rate whose training
        objective is best over the pilot's second half wins. The run then starts afresh,
        as a run with `lr` set to that rate."""
        cfg, batch, n = self.cfg, self.cfg.batch_size, self.x.shape[0]
        found = {}
        for lr in cfg.lr_pilot:
            self.gen.manual_seed(cfg.seed)
            self.model.initialize(cfg.seed, cfg.init, self.output_bias())
            opt, total = self._optimizer(lr), torch.zeros((), dtype=torch.float64, device=self.device)
            saved, self.opt = self.opt, opt
            for step in range(cfg.pilot_steps):
                i = step % self.n_batches
                if i == 0:  # minibatches as the run draws them
                    order = self._rows(n, self.gen)
                if step == cfg.pilot_steps // 2:
                    total.zero_()
                data_step(self.state, order[i * batch : (i + 1) * batch], total)
            self.opt = saved
            mean = total.item() / ((cfg.pilot_steps - cfg.pilot_steps // 2) * batch)
            found[f"{lr:g}"] = mean if math.isfinite(mean) else None
        best = max(
            (float(lr) for lr, v in found.items() if v is not None), key=lambda lr: found[f"{lr:g}"], default=None
        )
        if best is None:
            raise Diverged(f"run {self.run_name}: every pilot learning rate diverged ({', '.join(found)})")
        self.say(f"{self.run_name}: pilot objective per learning rate {found}; using {best:g}")
        return best, found

    def output_bias(self):
        """The decoder's initial output bias: from the training mean, or None (zero)."""
        return self.model.likelihood.output_bias(self.x) if self.cfg.output_bias == "mean" else None

    def save_checkpoint(self, where: tuple[int, int], step: int | None = None) -> None:
        """Save everything needed to continue at the trainer's position, or inside the epoch
        at (stage, epoch) = `where` after `step` steps; `where` names the place in an error."""
        if not bool(torch.isfinite(self.model.buffer.data).all()):
            raise self.diverged("parameters", *where)
        if step is not None:
            self.pos = Position(*where, step)
        state = {
            "position": vars(self.pos),
            "params": self.model.buffer.data.cpu().clone(),
            "optimizer": on_cpu(self.opt.state_dict()),
            "generator": self.gen.get_state(),
            "log": self.log,
            "elapsed": self.elapsed + time.monotonic() - self.session_start,
            "resumes": self.resumes,
            "first_lr": self.first_lr,
            "pilot": self.pilot,
        }
        for callback in self.callbacks:
            state.update(callback.state())
        if step is not None:  # inside an epoch: its order, running sum and time so far
            state |= {"perm": self.epoch_perm.cpu(), "epoch_sum": self.steps.total.cpu(),
                      "epoch_seconds": time.monotonic() - self.epoch_start}  # fmt: skip
        self.store.save(state, self.done_epochs, self.pos.step)  # names sort in training order
        self._call("after_checkpoint")

    def diverged(self, what: str, stage: int, epoch: int) -> Diverged:
        kept = "its last good checkpoint is kept" if self.store.paths() else "no checkpoint was written before it"
        return Diverged(f"run {self.run_name}: non-finite {what} at stage {stage + 1}, epoch {epoch + 1}; {kept}")

    def interrupted(self, stage: int, epoch: int) -> Interrupted:
        return Interrupted(f"{self.run_name}: interrupted at stage {stage + 1}, epoch {epoch + 1}", self.stop.signum)

    def finish(self) -> dict:
        """Write model.pt, train.json and train_log.csv (again: a finished run that is resumed,
        after a scheduler deleted a failed job's outputs, trains no epoch that would)."""
        self.elapsed += time.monotonic() - self.session_start
        record = {
            "run": self.run_name,
            "config": self.cfg.to_dict(),
            "backend": self.backend.name,
            "steps_as": self.steps.kind,
            "eager_because": self.eager_because,
            "objective_final": self.log[-1]["objective"] if self.log else None,
            "first_lr": self.first_lr,
            "pilot": self.pilot,
            "curve": None,  # the learning curve's points, where the run keeps one
            "epochs": self.done_epochs,
            "steps": self.done_epochs * self.n_batches,
            "train_points": self.x.shape[0],
            "train_seconds": round(self.elapsed, 2),
            "resumes": self.resumes,
            "data": {
                "path": str(self.cfg.data),
                **{k: self.data.meta[k] for k in ("dataset", "label", "splits", "sources")},
            },
            "pack": self.pack,
            "environment": environment(self.device),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._call("finish", record)
        kept = {k: v for c in self.callbacks for k, v in c.state().items()}  # snapshots, where kept
        save_model_file(
            self.out_dir / "model.pt", self.model, self.opt.state_dict(), self.cfg.to_dict(), self.data.meta["dataset"],
            snapshots=kept.get("snapshots"),
        )  # fmt: skip
        write_json(self.out_dir / "train.json", record)
        return record


def _say(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


def _claim(out_dir: Path, cfg: TrainConfig, restart: bool, say) -> None:
    """Make `out_dir` this run's: refuse one that holds another configuration's run (or
    links out of itself); with `restart`, first remove what an earlier run left there."""
    rundirs.check_contained(out_dir)
    check_writable(out_dir / "checkpoints" / "ckpt")  # before the work, not after it
    if restart:
        removed = rundirs.clear(out_dir)
        if removed:
            say(f"{out_dir}: starting over; removed {', '.join(p.name for p in removed)}")
        return
    why = rundirs.conflict(out_dir, cfg) or rundirs.stray(out_dir)
    if why:
        raise UserError(f"{why}; to train it again, pass --restart or delete the directory")


def _continue_from(path: str, model, opt) -> None:
    """Start from a finished run's parameters and optimizer state (two-stage training)."""
    state = load_model_file(Path(path))
    theirs = models.from_state(state["model"]).state()  # with the defaults of older files filled in
    ours = model.state()
    for key in ("family", "architecture", "likelihood", "prior", "condition_dim"):
        if theirs[key] != ours[key]:
            raise UserError(f"init_from: {path} has {key} {theirs[key]}, not {ours[key]}")
    model.buffer.data.copy_(state["model"]["params"])
    opt.load_state_dict(state["optimizer"])
