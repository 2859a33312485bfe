"""A run, built: all that the protocol (`iwae.training.loop`) trains, but not the protocol.

`build` makes a run from its configuration and directory: the directory claimed (a finished
run of another configuration is refused), the device, the training points, the model and its
backend, the optimizer and the run's one random stream (both in the `StepState` its steps
see), the steps (eager, or replayed as CUDA graphs), the checkpoint store, the stop request
and the CUDA stream it runs on. `callbacks` makes what watches it as it goes. `initialize`
starts a run that has no checkpoint: Kingma & Welling's step-size pilot, the seed, the model's
initialisation or a two-stage run's first stage. `finish` writes what a finished run leaves.

All randomness comes from one generator on the training device, so a run killed at any
point resumes from its checkpoint (`iwae.training.checkpoints`) and, on the same CPU with the
same thread count, ends with bit-identical parameters.

Files in the run directory:
    checkpoints/ckpt-*.pt   the newest two checkpoints (a corrupt newest one falls back)
    checkpoints/train_log.csv, checkpoints/curve.csv   the log and the curve so far, as the run goes
    train_log.csv           one row per epoch: stage, epoch, lr, objective, seconds, points/s,
                            the machine's load average
    curve.csv               the learning curve, where the run keeps one
    model.pt                final parameters, optimizer state and configuration (with
                            `snapshot_stages`, also the parameters at the start and after each stage)
    train.json              the training record: configuration, versions, device, wall time
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from iwae import backends, models
from iwae.data import datasets
from iwae.data.sources import file_digest
from iwae.errors import Diverged, Interrupted, UserError
from iwae.estimators.objectives import Objective
from iwae.models.store import load_model_file, save_model_file
from iwae.plan import rundirs
from iwae.plan.config import TrainConfig
from iwae.system import devices, runtime
from iwae.system.files import check_writable, write_json
from iwae.system.provenance import environment, resolve_device
from iwae.training import graphs, optim
from iwae.training.callbacks import Callback, ProgressReport, StageSnapshots, TrainingLog, Validation
from iwae.training.checkpoints import CheckpointStore, TrainState
from iwae.training.curves import LearningCurve
from iwae.training.graphs import GraphedSteps
from iwae.training.signals import StopRequest
from iwae.training.steps import EagerSteps, StepState, data_step


@dataclass(eq=False)
class Run:
    """One run, built: what its steps, checkpoints and record read."""

    cfg: TrainConfig
    out_dir: Path
    say: Callable[[str], None]
    device: torch.device
    data: datasets.Data
    x: torch.Tensor  # the training points
    c: torch.Tensor | None  # their one-hot labels, for a model given the label
    model: object
    backend: object
    step_state: StepState  # what a step reads and writes: the optimizer and the random stream among them
    steps: EagerSteps | GraphedSteps
    eager_because: str | None  # why the steps are not CUDA graphs (None: they are)
    store: CheckpointStore
    stop: StopRequest
    stream: object  # the CUDA stream the run's work goes to (None off a GPU)
    pack: dict | None  # the pack's name and members, where the run trains in one

    @property
    def name(self) -> str:
        return self.out_dir.name

    @property
    def n_batches(self) -> int:
        return self.step_state.n_batches

    @property
    def binarize(self) -> bool:
        return self.step_state.binarize

    @property
    def objective(self) -> Objective:
        return self.step_state.objective

    @property
    def gen(self) -> torch.Generator:
        return self.step_state.generator

    @property
    def opt(self):
        """The run's optimizer (the step-size pilot tries others)."""
        return self.step_state.opt

    @opt.setter
    def opt(self, optimizer) -> None:
        self.step_state.opt = optimizer

    def optimizer(self, lr: float):
        """A new optimizer for the run; with the learning rate on the device on a GPU (graphed
        steps or not, so that both are the same arithmetic) and wherever steps are a graph's."""
        on_device = self.device.type == "cuda" or not self.eager_because
        return optim.make(self.cfg, self.model.buffer.data, self.model.buffer.grad, lr, lr_on_device=on_device)

    def order(self) -> torch.Tensor:
        """An epoch's order of the training points: a permutation (or the identity without
        shuffling), or with `sampling: replacement` n draws with replacement."""
        n = self.x.shape[0]
        if self.cfg.sampling == "replacement":
            return torch.randint(n, (n,), generator=self.gen, device=self.device)
        if self.cfg.shuffle:
            return torch.randperm(n, generator=self.gen, device=self.device)
        return torch.arange(n, device=self.device)

    def output_bias(self):
        """The decoder's initial output bias: from the training mean, or None (zero)."""
        return self.model.likelihood.output_bias(self.x) if self.cfg.output_bias == "mean" else None

    def diverged(self, what: str, stage: int, epoch: int) -> Diverged:
        kept = "its last good checkpoint is kept" if self.store.paths() else "no checkpoint was written before it"
        return Diverged(f"run {self.name}: non-finite {what} at stage {stage + 1}, epoch {epoch + 1}; {kept}")

    def interrupted(self, stage: int, epoch: int) -> Interrupted:
        return Interrupted(f"{self.name}: interrupted at stage {stage + 1}, epoch {epoch + 1}", self.stop.signum)

    def release(self) -> None:
        """End the run's CUDA graphs (if any) now; call it when the run has finished or failed."""
        self.steps.release()


def build(
    cfg: TrainConfig,
    out_dir: Path,
    quiet: bool = False,
    *,
    stop: StopRequest | None = None,
    data: datasets.Data | None = None,
    pack: dict | None = None,
    stream=None,
    restart: bool = False,
    graphed: bool | None = None,
) -> Run:
    """The run `cfg` describes, in `out_dir`. `stop`, `data`, `pack` and `stream` come from a
    pack, whose runs share one stop request and one copy of the dataset, and whose streams
    are made together; alone, a run gets a stream of its own. A directory holding a run of
    another configuration is refused, unless `restart` clears it. `graphed`: None replays CUDA
    graphs where they apply; True takes the steps a graph replays also off a GPU, where they
    run without one (the tests and the GPU check's CPU form compare them with eager steps);
    False takes eager steps."""
    out_dir = Path(out_dir)
    say = _say(quiet)
    _claim(out_dir, cfg, restart, say)
    device = devices.claim(resolve_device(cfg.device), say=say)
    runtime.setup(device, cfg.threads, cfg.tf32)
    data = data if data is not None else datasets.load(Path(cfg.data), device)
    x = data.points(cfg.train_split)
    if cfg.train_subset is not None:
        if cfg.train_subset > x.shape[0]:
            raise UserError(f"train_subset: {cfg.train_subset} exceeds the {x.shape[0]} training points")
        x = x[: cfg.train_subset]
    if x.shape[0] // cfg.batch_size == 0:  # as the official code: no last partial batch
        raise UserError(f"batch_size: {cfg.batch_size} exceeds the {x.shape[0]} training points")
    likelihood = data.likelihood if cfg.likelihood == "auto" else cfg.likelihood
    # a conditional model's condition: the one-hot labels of the training points
    c = data.one_hot_labels(cfg.train_split)[: x.shape[0]] if cfg.condition == "label" else None
    model = models.build(cfg, x.shape[1], device, likelihood, 0 if c is None else c.shape[1])
    backend = backends.select(model, cfg.backend)
    eager_because = graphs.graphs_apply(cfg, device)
    if graphed is not None and eager_because in (None, graphs.NOT_ON_A_GPU):
        eager_because = None if graphed else "eager steps were asked for"
    # the objectives give the gradient of the minibatch mean, so the prior's gradient weighs 1 / N:
    # KW's (N / M) sum_batch L + log p(theta), divided by N
    prior = optim.WeightPrior(model.buffer, 1.0 / x.shape[0]) if cfg.weight_prior == "normal" else None
    lineage = list(data.meta["sources"])
    if cfg.init_from:  # a second stage belongs to its first stage's exact parameters
        lineage.append({"init_from": file_digest(Path(cfg.init_from), "sha256")})
    binarize = data.dynamic and not cfg.grey_levels  # afresh at every use, unless the run models grey levels
    state = StepState(x, c, binarize, cfg.batch_size, cfg.k, backend, model.buffer, Objective.parse(cfg.objective),
                      None, torch.Generator(device=device), prior, float(cfg.batch_size) if cfg.reduction == "sum" else 1.0)  # fmt: skip
    steps = EagerSteps(state) if eager_because else GraphedSteps(state, capture=device.type == "cuda")
    if stream is None:
        stream = devices.run_streams(device, 1)[0]
    elif device.type == "cuda":  # after the work queued here, as a stream of its own is
        stream.wait_stream(torch.cuda.current_stream(device))
    run = Run(cfg, out_dir, say, device, data, x, c, model, backend, state, steps, eager_because,
              CheckpointStore(out_dir / "checkpoints", cfg.fingerprint(lineage)), stop or StopRequest(), stream, pack)  # fmt: skip
    run.opt = run.optimizer(cfg.lr)
    return run


def callbacks(run: Run, progress: bool | None = None) -> list[Callback]:
    """What watches `run` as it trains, in the order the trainer calls them (a checkpoint,
    after them all, holds what they did)."""
    cfg = run.cfg
    return [c for c in (
        LearningCurve(run) if cfg.curve_per_decade else None,
        Validation(run) if cfg.valid_every else None,
        StageSnapshots(run.model.buffer.data) if cfg.snapshot_stages else None,
        TrainingLog(run.out_dir / "train_log.csv", run.store.directory / "train_log.csv", cfg.total_epochs),
        ProgressReport(run.name, cfg.epochs_per_stage, run.say, progress),
    ) if c is not None]  # fmt: skip


def initialize(run: Run) -> TrainState:
    """The start of a run without a checkpoint: the step-size pilot (where asked for), the
    seed, then the initial parameters or a first stage's."""
    cfg, first_lr, found = run.cfg, run.cfg.lr, None
    if cfg.lr_pilot and not cfg.init_from:
        first_lr, found = pilot(run)
        run.opt = run.optimizer(first_lr)
    run.gen.manual_seed(cfg.seed)
    if cfg.init_from:
        _continue_from(cfg.init_from, run.model, run.opt)
    else:
        run.model.initialize(cfg.seed, cfg.init, run.output_bias())
    return TrainState(first_lr=first_lr, pilot=found)


def pilot(run: Run) -> tuple[float, dict]:
    """Kingma & Welling's choice of step size: each rate of `lr_pilot` trains `pilot_steps`
    steps from the run's own start and noise; the rate whose training objective is best over
    the pilot's second half wins. The run then starts afresh, as a run with `lr` set to that
    rate."""
    cfg, batch = run.cfg, run.cfg.batch_size
    found = {}
    for lr in cfg.lr_pilot:
        run.gen.manual_seed(cfg.seed)
        run.model.initialize(cfg.seed, cfg.init, run.output_bias())
        opt, total = run.optimizer(lr), torch.zeros((), dtype=torch.float64, device=run.device)
        saved, run.opt = run.opt, opt
        for step in range(cfg.pilot_steps):
            i = step % run.n_batches
            if i == 0:  # minibatches as the run draws them
                order = run.order()
            if step == cfg.pilot_steps // 2:
                total.zero_()
            data_step(run.step_state, order[i * batch : (i + 1) * batch], total)
        run.opt = saved
        mean = total.item() / ((cfg.pilot_steps - cfg.pilot_steps // 2) * batch)
        found[f"{lr:g}"] = mean if math.isfinite(mean) else None
    best = max((float(lr) for lr, v in found.items() if v is not None), key=lambda lr: found[f"{lr:g}"], default=None)
    if best is None:
        raise Diverged(f"run {run.name}: every pilot learning rate diverged ({', '.join(found)})")
    run.say(f"{run.name}: pilot objective per learning rate {found}; using {best:g}")
    return best, found


def record(run: Run, state: TrainState) -> dict:
    """The training record of a finished run (train.json)."""
    epochs = state.epochs_done(run.cfg.epochs_per_stage)
    return {
        "run": run.name,
        "config": run.cfg.to_dict(),
        "backend": run.backend.name,
        "steps_as": run.steps.kind,
        "eager_because": run.eager_because,
        "objective_final": state.log[-1]["objective"] if state.log else None,
        "first_lr": state.first_lr,
        "pilot": state.pilot,
        "curve": None,  # the learning curve's points, where the run keeps one
        "epochs": epochs,
        "steps": epochs * run.n_batches,
        "train_points": run.x.shape[0],
        "train_seconds": round(state.elapsed, 2),
        "resumes": state.resumes,
        "data": {"path": str(run.cfg.data), **{k: run.data.meta[k] for k in ("dataset", "label", "splits", "sources")}},
        "pack": run.pack,
        "environment": environment(run.device),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def finish(run: Run, record: dict, snapshots: list | None) -> None:
    """Write model.pt and train.json (again: a finished run that is resumed, after a scheduler
    deleted a failed job's outputs, trains no epoch that would)."""
    save_model_file(run.out_dir / "model.pt", run.model, run.opt.state_dict(), run.cfg.to_dict(),
                    run.data.meta["dataset"], snapshots=snapshots)  # fmt: skip
    write_json(run.out_dir / "train.json", record)


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
