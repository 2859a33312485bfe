"""The training protocol of Burda et al.: stages of 3^i epochs at a decaying learning rate,
each epoch one pass of minibatch steps over the reshuffled training set.

`Trainer.train` is that protocol: stages, epochs, steps, and the two things that may
interrupt them, a checkpoint (at every stage's end, at least every `checkpoint_minutes`, and
inside an epoch where the steps may read the device) and a stop request (a scheduler's
SIGTERM: checkpoint, then stop with Interrupted, to be resumed by the same command). A run is
built outside the trainer (`iwae.training.run`: model, optimizer, data, stream) and so is
its record; a checkpoint saves the run's tensors and the trainer's one `TrainState`
(`iwae.training.checkpoints`). What else happens as a run goes attaches as callbacks
(`iwae.training.callbacks`), which see a `View` of the run, never the trainer. A step itself
is `iwae.training.steps.data_step`, taken eagerly or replayed as a CUDA graph
(`iwae.training.graphs`).

`train` trains one run alone; a pack (`iwae.training.packs`) and the GPU check
(`iwae.bench.gpu_report`) advance several trainers in turn through `Trainer.advance`.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from iwae.plan.config import TrainConfig
from iwae.system import devices
from iwae.system.provenance import machine_load
from iwae.training import checkpoints
from iwae.training.callbacks import Callback, View
from iwae.training.checkpoints import InsideEpoch, Position, TrainState
from iwae.training.run import Run, build, callbacks, finish, initialize, record


def train(
    cfg: TrainConfig,
    out_dir: Path,
    quiet: bool = False,
    progress: bool | None = None,
    restart: bool = False,
    graphed: bool | None = None,
) -> dict:
    """Run (or resume) one training run; return its record (also written to train.json).
    `restart` trains over a finished run (or checkpoints) of another configuration."""
    return train_run(build(cfg, Path(out_dir), quiet, restart=restart, graphed=graphed), progress)


def train_run(run: Run, progress: bool | None = None, extra: list[Callback] = ()) -> dict:
    """Train a built run to its end, alone in this process (SIGTERM and SIGINT become its stop
    requests), with its callbacks and `extra` ones after them; return its record."""
    trainer = Trainer(run, callbacks(run, progress) + list(extra))
    run.stop.install()
    try:
        while trainer.advance():
            pass
        return trainer.finish()
    finally:
        trainer.release()
        run.stop.uninstall()


class Trainer:
    """The protocol of one built run: its stages, epochs and steps."""

    def __init__(self, run: Run, callbacks: list[Callback] = ()):
        self.run = run
        self.callbacks = list(callbacks)  # called in this order; a checkpoint follows them all
        self.pauses = sorted({step for c in self.callbacks for step in c.pauses})  # where graphed steps pause
        self.state: TrainState | None = None  # from `train`'s start: restored or initialised
        self.epochs_done = self.steps_done = 0  # over the whole run
        self._loop: Iterator[str] | None = None

    # ---------------------------------------------------------------- the protocol

    def train(self) -> Iterator[str]:
        """The training loop as a generator: it yields "step" after every step (or replay of
        a graph of steps) and "epoch" after every epoch. Raises Diverged or Interrupted;
        `finish` writes the results."""
        run, cfg = self.run, self.run.cfg
        self.state = checkpoints.restore(run)
        resumed = self.state is not None
        if resumed:
            for callback in self.callbacks:
                callback.restore(self.state.kept)
        else:
            self.state = initialize(run)
        self.epochs_done = self.state.epochs_done(cfg.epochs_per_stage)
        self.steps_done = self.epochs_done * run.n_batches + self.state.position.step
        self._clock = self._last_checkpoint = time.monotonic()
        self._call("start", resumed)
        stages, start = cfg.epochs_per_stage, self.state.position
        for stage in range(start.stage, len(stages)):
            run.opt.lr = cfg.learning_rate(stage, self.state.first_lr)
            for epoch in range(start.epoch if stage == start.stage else 0, stages[stage]):
                yield from self.epoch(stage, epoch)
                last = epoch + 1 == stages[stage]
                self.state.position = Position(stage + 1, 0, 0) if last else Position(stage, epoch + 1, 0)
                self._call("after_epoch", self._view(stage, epoch, run.n_batches), last)
                if last or self._checkpoint_due() or run.stop.requested:
                    self.checkpoint(stage, epoch)
                yield "epoch"
            self._call("after_stage", self._view(stage, stages[stage] - 1, run.n_batches))

    def epoch(self, stage: int, epoch: int) -> Iterator[str]:
        """One pass over the training set (from the middle, where the run resumes from a
        checkpoint taken inside it). Syncs with the device once, at the end, and where a
        checkpoint falls inside it."""
        run, n = self.run, self.run.n_batches
        inside, self.state.inside = self.state.inside, None
        if inside is not None:
            first, perm, total = self.state.position.step, inside.perm.to(run.device), inside.total.to(run.device)
        else:
            first, perm = 0, run.order()
            total = torch.zeros((), device=run.device, dtype=torch.float64)
        run.steps.begin(perm, total, first)
        started = time.monotonic() - (inside.seconds if inside is not None else 0.0)
        step = first
        while step < n:
            step += run.steps.step(step, self._pause(step))  # one step, or a graph's
            self.steps_done = self.epochs_done * n + step
            self._call("after_steps", self._view(stage, epoch, step))
            if run.stop.requested or (run.steps.may_sync and step < n and self._checkpoint_due()):
                if not math.isfinite(run.steps.total.item()):
                    raise run.diverged("objective", stage, epoch)
                self.state.position = Position(stage, epoch, step)
                self.checkpoint(
                    stage, epoch, InsideEpoch(perm.cpu(), run.steps.total.cpu(), time.monotonic() - started)
                )
            yield "step"
        mean = run.steps.total.item() / (n * run.cfg.batch_size)
        seconds = time.monotonic() - started
        if not math.isfinite(mean):
            raise run.diverged("objective", stage, epoch)
        self.epochs_done += 1
        row = {"stage": stage + 1, "epoch": self.epochs_done, "stage_epoch": epoch + 1, "lr": run.opt.lr,
               "objective": mean, "seconds": round(seconds, 4),
               "points_per_s": round(n * run.cfg.batch_size / max(seconds, 1e-9), 1), "load": machine_load(),
               "valid_bound": None}  # fmt: skip
        self._call("log_row", self._view(stage, epoch, n), row)
        self.state.log.append(row)

    def checkpoint(self, stage: int, epoch: int, inside: InsideEpoch | None = None) -> None:
        """Save the run at its position (inside the epoch at (stage, epoch) where `inside` says
        how far it is); then stop it, if a stop was requested."""
        run = self.run
        if not bool(torch.isfinite(run.model.buffer.data).all()):
            raise run.diverged("parameters", stage, epoch)
        self._tick()
        self.state.kept = {k: v for c in self.callbacks for k, v in c.state().items()}
        self.state.inside = inside
        checkpoints.save(run, self.state)
        self.state.inside = None
        self._call("after_checkpoint", self._view(stage, epoch, self.state.position.step))
        self._last_checkpoint = time.monotonic()
        if run.stop.requested:
            raise run.interrupted(stage, epoch)

    # ---------------------------------------------------------------- driving it

    def advance(self, to: str = "epoch") -> str | None:
        """Train on, on the run's stream, to the next step (`to="step"`: one step, or one
        replay of a graph of steps) or the next epoch's end; return what was reached ("step"
        or "epoch"), or None once the run has ended."""
        if self._loop is None:
            self._loop = self.train()
        with devices.on(self.run.stream):
            for token in self._loop:
                if to == "step" or token == "epoch":
                    return token
        return None

    def finish(self) -> dict:
        """The end of a trained run: its record, the callbacks' last writes, model.pt and
        train.json (`iwae.training.run.finish`); returns the record."""
        with devices.on(self.run.stream):
            self._tick()
            done = record(self.run, self.state)
            self._call("finish", self._view(len(self.run.cfg.epochs_per_stage), 0, 0), done)
            kept = {k: v for c in self.callbacks for k, v in c.state().items()}  # snapshots, where kept
            finish(self.run, done, kept.get("snapshots"))
        return done

    def release(self) -> None:
        """End the run's CUDA graphs (if any) and its progress bar; call it when the run has
        finished or failed."""
        self.run.release()
        for callback in self.callbacks:
            callback.close()

    # ---------------------------------------------------------------- helpers

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _view(self, stage: int, epoch: int, step: int) -> View:
        return View(stage, epoch, step, self.epochs_done, self.steps_done, self.state.log)

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_checkpoint > self.run.cfg.checkpoint_minutes * 60

    def _tick(self) -> None:
        """Count the time since the last tick into the run's elapsed seconds."""
        now = time.monotonic()
        self.state.elapsed += now - self._clock
        self._clock = now

    def _pause(self, step: int) -> int:
        """Where the steps from `step` of this epoch on must pause for the host: the epoch's
        end, or the next step a callback must see (a learning-curve point)."""
        n, before = self.run.n_batches, self.epochs_done * self.run.n_batches  # steps of the earlier epochs
        i = bisect.bisect_right(self.pauses, before + step)
        return min(n, self.pauses[i] - before) if i < len(self.pauses) else n
