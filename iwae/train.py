"""The training protocol of Burda et al.: stages of 3^i epochs at a decaying learning rate.

Each step takes a minibatch from the reshuffled training set, binarises it afresh and hands
it to `train_step`: k samples per point, the objective's gradient (from the backend, fused or
autograd), an Adam step. Training, the benchmark and the tests share that one function.
All randomness comes from one generator on the training device. Checkpoints
(`iwae.checkpoints`) hold the parameters, the optimizer, that generator's state and the exact
position (stage, epoch, step, the epoch's permutation), so a run killed at any point resumes
where it stopped and, on the same CPU with the same thread count, ends with bit-identical
parameters.

Files in the run directory:
    checkpoints/ckpt-*.pt   the newest two checkpoints (a corrupt newest one falls back)
    train_log.csv           one row per epoch: stage, epoch, lr, objective, seconds, points/s
    model.pt                final parameters, optimizer state and configuration (with
                            `snapshot_stages`, also the parameters at the start and after each stage)
    train.json              the training record: configuration, versions, device, wall time
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import signal
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from iwae import backends, cuda, curves, datasets, models, optim, rundirs, runtime
from iwae.checkpoints import CheckpointStore, load_model_file, on_cpu, save_model_file
from iwae.config import TrainConfig
from iwae.errors import Diverged, Interrupted, UserError
from iwae.files import check_writable, write_json, write_text
from iwae.objectives import Objective
from iwae.optim import Adam
from iwae.progress import Progress
from iwae.provenance import environment, resolve_device
from iwae.sources import file_digest

LOG_SECONDS = 5.0  # train_log.csv is written at most this often (and at every checkpoint and the end)
LOG_COLUMNS = ["stage", "epoch", "stage_epoch", "lr", "objective", "seconds", "points_per_s", "valid_bound"]


@dataclass
class Position:
    """The next thing to do: step `step` of epoch `epoch` (within stage `stage`)."""

    stage: int = 0
    epoch: int = 0
    step: int = 0


def train_step(
    backend,
    objective: Objective,
    optimizer: Adam,
    x: torch.Tensor,
    k: int,
    generator,
    weight_prior=None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step: k samples per point of the minibatch x (given its rows of `condition`, for
    a conditional model), the objective's gradient (plus a weight prior's, in MAP training),
    an optimizer step. Returns the objective per point (B,), left on the device."""
    given = {} if condition is None else {"condition": condition}
    fp = backend.forward(x, k, generator, stop_q=objective.stops_q, **given)
    terms = {name: fp.terms[name].detach() for name in objective.terms} if objective.terms else None
    estimate = objective(fp.log_w.detach(), terms)
    backend.backward(fp, estimate.coefficients)
    if weight_prior is not None:
        weight_prior.add_gradient()
    optimizer.step()
    return estimate.bound


def data_step(trainer: Trainer, rows: torch.Tensor, total: torch.Tensor) -> None:
    """A step on the training points `rows`: gather, a fresh binarisation where the dataset
    is binarised at every use, `train_step`, and the epoch's running sum (on the device)."""
    x = torch.index_select(trainer.x, 0, rows)
    if trainer.binarize:
        x = datasets.binarize(x, trainer.gen)
    c = None if trainer.c is None else torch.index_select(trainer.c, 0, rows)
    bound = train_step(trainer.backend, trainer.objective, trainer.opt, x, trainer.cfg.k, trainer.gen, trainer.prior, c)
    total += bound.sum()


class EagerSteps:
    """The steps of an epoch as eager operations, the position a host integer."""

    may_sync = True  # mid-epoch checkpoints may read device values
    kind = "eager"

    def __init__(self, trainer: Trainer):
        self._trainer = weakref.ref(trainer)  # the trainer holds its steps, not the reverse

    def begin(self, perm: torch.Tensor, total: torch.Tensor, first: int) -> None:
        self.perm, self.total = perm, total

    def step(self, i: int, stop: int) -> int:
        """Step i (of the steps short of `stop`); returns how many steps it took: one."""
        trainer = self._trainer()
        batch = trainer.cfg.batch_size
        data_step(trainer, self.perm[i * batch : (i + 1) * batch], self.total)
        return 1

    def release(self) -> None:
        pass


def _say(quiet: bool):
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


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
        self.quiet = quiet
        _claim(out_dir, cfg, restart, self.say)
        self.device = cuda.claim(resolve_device(cfg.device), say=self.say)
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
        self.eager_because = cuda.graphs_apply(cfg, self.device)
        if graphed is not None and self.eager_because in (None, cuda.NOT_ON_A_GPU):
            self.eager_because = None if graphed else "eager steps were asked for"
        self.opt = self._optimizer(cfg.lr)
        self.first_lr, self.pilot = cfg.lr, None  # the first stage's rate, and the pilot's findings
        # the objectives give the gradient of the minibatch mean, so the prior's gradient weighs 1 / N:
        # KW's (N / M) sum_batch L + log p(theta), divided by N
        self.prior = (
            optim.WeightPrior(self.model.buffer, 1.0 / self.x.shape[0]) if cfg.weight_prior == "normal" else None
        )
        self.gen = torch.Generator(device=self.device)
        lineage = list(self.data.meta["sources"])
        if cfg.init_from:  # a second stage belongs to its first stage's exact parameters
            lineage.append({"init_from": file_digest(Path(cfg.init_from), "sha256")})
        self.store = CheckpointStore(out_dir / "checkpoints", cfg.fingerprint(lineage))
        self.x_valid = self._validation_points() if cfg.valid_every else None
        self.curve = curves.Curve(self) if cfg.curve_per_decade else None
        self.stop = stop or StopRequest()
        capture = self.device.type == "cuda"
        self.steps = EagerSteps(self) if self.eager_because else cuda.GraphedSteps(self, capture=capture)
        self.curve_stops = sorted(self.curve.due_steps) if self.curve else []
        self.bar = Progress(cfg.total_epochs, self.run_name, enabled=progress)

    def _optimizer(self, lr: float):
        """The run's optimizer; with the learning rate on the device on a GPU (graphed steps
        or not, so that both are the same arithmetic) and wherever the steps are a graph's."""
        on_device = self.device.type == "cuda" or not self.eager_because
        return optim.make(self.cfg, self.model.buffer.data, self.model.buffer.grad, lr, lr_on_device=on_device)

    def _validation_points(self) -> torch.Tensor:
        """The validation points of the learning curve: binarised once, as the test set is
        in evaluation (seed 123, a CPU stream), a random subset if asked."""
        from iwae.evaluate import subset

        x = self.data.valid
        if self.binarize:
            x = datasets.binarize(x.cpu(), torch.Generator().manual_seed(123)).to(self.device)
        chosen = subset(x.shape[0], self.cfg.valid_points).to(self.device)
        self.c_valid = self.data.one_hot_labels("valid")[chosen] if self.c is not None else None
        return x[chosen]

    def validation_bound(self) -> float:
        """Mean L_k over the validation points, from a stream of its own (seeded by the run
        and the epoch), so that neither training nor resumption sees it."""
        from iwae.evaluate import dataset_log_likelihood, default_chunk

        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed * 100_003 + self.done_epochs)
        ll = dataset_log_likelihood(
            self.backend, self.x_valid, self.cfg.valid_k, gen, 20, default_chunk(self.device, 20),
            condition=self.c_valid,
        )  # fmt: skip
        return ll.mean().item()

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
            if self.curve:
                self.curve.rows = list(state.get("curve", []))
            self.snapshots = state.get("snapshots") if self.cfg.snapshot_stages else None
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
        self.snapshots = [self.snapshot(0)] if self.cfg.snapshot_stages else None
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
                data_step(self, order[i * batch : (i + 1) * batch], total)
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

    def snapshot(self, epoch: int) -> dict:
        """The parameters after `epoch` epochs, for the figure of prior samples as training goes."""
        return {"epoch": epoch, "params": self.model.buffer.data.cpu().clone()}

    def _rows(self, n: int, generator) -> torch.Tensor:
        """An epoch's order of the training points: a permutation (or the identity without
        shuffling), or with `sampling: replacement` n draws with replacement."""
        if self.cfg.sampling == "replacement":
            return torch.randint(n, (n,), generator=generator, device=self.device)
        if self.cfg.shuffle:
            return torch.randperm(n, generator=generator, device=self.device)
        return torch.arange(n, device=self.device)

    def checkpoint(self, where: tuple[int, int], next_pos: Position, extra: dict | None = None) -> None:
        """Save everything needed to continue at `next_pos`; `where` (stage, epoch) names the
        place in an error message."""
        if not bool(torch.isfinite(self.model.buffer.data).all()):
            raise self.diverged("parameters", *where)
        state = {
            "position": vars(next_pos),
            "params": self.model.buffer.data.cpu().clone(),
            "optimizer": on_cpu(self.opt.state_dict()),
            "generator": self.gen.get_state(),
            "log": self.log,
            "elapsed": self.elapsed + time.monotonic() - self.session_start,
            "resumes": self.resumes,
            "first_lr": self.first_lr,
            "pilot": self.pilot,
            **({"curve": self.curve.rows} if self.curve else {}),
            **({"snapshots": self.snapshots} if self.snapshots is not None else {}),
            **(extra or {}),
        }
        self.store.save(state, self.done_epochs, next_pos.step)  # names sort in training order
        _write_log(self.out_dir / "train_log.csv", self.log)
        self.log_written = time.monotonic()
        self.last_checkpoint = time.monotonic()

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_checkpoint > self.cfg.checkpoint_minutes * 60

    def diverged(self, what: str, stage: int, epoch: int) -> Diverged:
        kept = "its last good checkpoint is kept" if self.store.paths() else "no checkpoint was written before it"
        return Diverged(f"run {self.run_name}: non-finite {what} at stage {stage + 1}, epoch {epoch + 1}; {kept}")

    def interrupted(self, stage: int, epoch: int) -> Interrupted:
        return Interrupted(f"{self.run_name}: interrupted at stage {stage + 1}, epoch {epoch + 1}", self.stop.signum)

    # ---------------------------------------------------------------- loop

    def run(self) -> dict:
        """Train to the end (or resume and do so), alone in this process, on a stream of its
        own on a GPU."""
        self.stop.install()
        try:
            with cuda.on(cuda.run_streams(self.device, 1)[0]):  # finish() too: it reads the results
                for _ in self.train():
                    pass
                return self.finish()
        finally:
            self.release()
            self.stop.uninstall()
            self.bar.close()

    def release(self) -> None:
        """End the run's CUDA graphs (if any) now; call it when the run has finished or failed."""
        self.steps.release()

    def train(self) -> Iterator[str]:
        """The training loop as a generator: it yields "step" after every step (or replay of
        a graph of steps) and "epoch" after every epoch, so that a pack (`iwae.packs`) can
        interleave its runs. Raises Diverged or Interrupted; `finish` writes the results."""
        resumed = self.restore_or_initialize()
        self.session_start = self.last_checkpoint = time.monotonic()
        self.log_written = -math.inf
        self.done_epochs = sum(self.cfg.epochs_per_stage[: self.pos.stage]) + self.pos.epoch
        stages = self.cfg.epochs_per_stage
        for stage in range(self.pos.stage, len(stages)):
            self.opt.lr = self.cfg.learning_rate(stage, self.first_lr)
            for epoch in range(self.pos.epoch if stage == self.pos.stage else 0, stages[stage]):
                # only the restored position can lie inside an epoch
                yield from self.epoch(stage, epoch, resumed if self.pos.step > 0 else None)
                last = epoch + 1 == stages[stage]
                if last and self.snapshots is not None:
                    self.snapshots.append(self.snapshot(self.done_epochs))
                self.pos = Position(stage + 1, 0, 0) if last else Position(stage, epoch + 1, 0)
                if last or self.checkpoint_due() or self.stop.requested:
                    self.checkpoint((stage, epoch), self.pos)
                    if self.stop.requested:
                        raise self.interrupted(stage, epoch)
                yield "epoch"
            if not self.bar.enabled:
                self.say(
                    f"{self.run_name}: stage {stage + 1}/{len(stages)} done, objective {self.log[-1]['objective']:.3f}"
                )

    def epoch(self, stage: int, epoch: int, resumed: dict | None) -> Iterator[str]:
        """One pass over the training set (from the middle, if `resumed` holds a checkpoint
        taken inside this epoch). Syncs with the device once, at the end."""
        cfg, batch, n = self.cfg, self.cfg.batch_size, self.x.shape[0]
        if resumed is not None:
            first = self.pos.step
            perm, total = resumed["perm"].to(self.device), resumed["epoch_sum"].to(self.device)
            seconds_before = resumed["epoch_seconds"]
        else:
            first = 0
            perm = self._rows(n, self.gen)
            total, seconds_before = torch.zeros((), device=self.device, dtype=torch.float64), 0.0
        self.steps.begin(perm, total, first)
        start = time.monotonic()
        before = self.done_epochs * self.n_batches  # steps of the epochs before this one
        step = first
        while step < self.n_batches:
            step += self.steps.step(step, self._stop_for_host(before, step))  # one step, or a graph's
            if self.curve and self.curve.due(before + step):
                self.curve.point(before + step, self.done_epochs + step / self.n_batches)
            due = self.steps.may_sync and step < self.n_batches and self.checkpoint_due()
            if self.stop.requested or due:
                if not math.isfinite(self.steps.total.item()):
                    raise self.diverged("objective", stage, epoch)
                self.pos = Position(stage, epoch, step)
                seconds = seconds_before + time.monotonic() - start
                extra = {"perm": perm.cpu(), "epoch_sum": self.steps.total.cpu(), "epoch_seconds": seconds}
                self.checkpoint((stage, epoch), self.pos, extra)
                if self.stop.requested:
                    raise self.interrupted(stage, epoch)
            yield "step"
        mean = self.steps.total.item() / (self.n_batches * batch)
        seconds = seconds_before + time.monotonic() - start
        if not math.isfinite(mean):
            raise self.diverged("objective", stage, epoch)
        self.done_epochs += 1
        due = self.cfg.valid_every and (
            self.done_epochs % self.cfg.valid_every == 0 or self.done_epochs == self.cfg.total_epochs
        )
        self.log.append(
            {
                "stage": stage + 1,
                "epoch": self.done_epochs,
                "stage_epoch": epoch + 1,
                "lr": self.opt.lr,
                "objective": mean,
                "seconds": round(seconds, 4),
                "points_per_s": round(self.n_batches * batch / max(seconds, 1e-9), 1),
                "valid_bound": self.validation_bound() if due else None,
            }
        )
        if time.monotonic() - self.log_written > LOG_SECONDS or self.done_epochs == self.cfg.total_epochs:
            _write_log(self.out_dir / "train_log.csv", self.log)  # rewritten whole: not after every short epoch
            self.log_written = time.monotonic()
        self.bar.update(self.done_epochs, f"stage {stage + 1}/{len(cfg.epochs_per_stage)} objective {mean:.2f}")

    def _stop_for_host(self, before: int, step: int) -> int:
        """Where the steps from `step` of this epoch on must pause for the host: the epoch's
        end, or the next point of the learning curve (`before` steps were in earlier epochs)."""
        i = bisect.bisect_right(self.curve_stops, before + step)
        return min(self.n_batches, self.curve_stops[i] - before) if i < len(self.curve_stops) else self.n_batches

    def finish(self) -> dict:
        """Write model.pt, train.json and train_log.csv (again: a finished run that is resumed,
        after a scheduler deleted a failed job's outputs, trains no epoch that would)."""
        self.elapsed += time.monotonic() - self.session_start
        _write_log(self.out_dir / "train_log.csv", self.log)
        if self.curve:
            curves.write(self.curve.path, self.curve.rows)
        record = {
            "run": self.run_name,
            "config": self.cfg.to_dict(),
            "backend": self.backend.name,
            "steps_as": self.steps.kind,
            "eager_because": self.eager_because,
            "objective_final": self.log[-1]["objective"] if self.log else None,
            "first_lr": self.first_lr,
            "pilot": self.pilot,
            "curve": self.curve.rows if self.curve else None,
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
        save_model_file(
            self.out_dir / "model.pt", self.model, self.opt.state_dict(), self.cfg.to_dict(), self.data.meta["dataset"],
            snapshots=self.snapshots,
        )  # fmt: skip
        write_json(self.out_dir / "train.json", record)
        return record


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
    why = rundirs.conflict(out_dir, cfg)
    if why:
        raise UserError(f"{why}; to train it again, pass --restart or delete the directory")


def _continue_from(path: str, model, opt: Adam) -> None:
    """Start from a finished run's parameters and optimizer state (two-stage training)."""
    state = load_model_file(Path(path))
    theirs = models.from_state(state["model"]).state()  # with the defaults of older files filled in
    ours = model.state()
    for key in ("family", "architecture", "likelihood", "prior", "condition_dim"):
        if theirs[key] != ours[key]:
            raise UserError(f"init_from: {path} has {key} {theirs[key]}, not {ours[key]}")
    model.buffer.data.copy_(state["model"]["params"])
    opt.load_state_dict(state["optimizer"])


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop checks at every step, so that a
    scheduler's kill (Slurm sends SIGTERM first) leaves a fresh checkpoint behind. A second
    SIGTERM or SIGINT stops at once. SIGUSR1 is a pack's own request to its workers: it never
    escalates, since a worker may get the scheduler's signal too."""

    FROM_PACK = signal.SIGUSR1

    def __init__(self, also=None):
        """`also(signum)` is called on every signal too (a pack passes it on to its workers)."""
        self.requested = False
        self.signum = 0
        self.also = also
        self._previous = {}

    def _handler(self, signum, frame):
        if self.also:
            self.also(signum)
        if self.requested and signum != self.FROM_PACK and self.signum != self.FROM_PACK:
            raise KeyboardInterrupt  # a second signal from outside: stop now
        if not self.requested or self.signum == self.FROM_PACK:
            self.signum = signum
        self.requested = True

    def install(self):
        for sig in (signal.SIGTERM, signal.SIGINT, self.FROM_PACK):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
