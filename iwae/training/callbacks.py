"""What happens as a run trains, besides the protocol itself: each a callback the trainer calls
at fixed moments (minGPT's trainer callbacks are the model), in the order it holds them.

    Checkpoints    saves the run inside long stages, at every stage's end and when a stop is
                   requested (then stops the run); the trainer resumes from them
    TrainingLog    train_log.csv, rewritten at most every LOG_SECONDS, at checkpoints and at the end
    Validation     L_k on validation points every `valid_every` epochs, in the log's valid_bound
    StageSnapshots the parameters at the start and after every stage (`snapshot_stages`)
    ProgressReport the progress bar, or a line per stage
The learning curve against samples seen is one too (`iwae.training.curves.LearningCurve`).

A callback may keep state that a checkpoint must carry (`state`, `restore`). The trainer is
passed to each call, never kept, so that no reference cycle outlives a run.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import torch

from iwae.data import datasets
from iwae.data.datasets import subset
from iwae.estimators.likelihood import dataset_log_likelihood, default_chunk
from iwae.system.files import write_text
from iwae.system.progress import Progress

LOG_SECONDS = 5.0  # train_log.csv is written at most this often (and at every checkpoint and the end)
LOG_COLUMNS = ["stage", "epoch", "stage_epoch", "lr", "objective", "seconds", "points_per_s", "valid_bound"]


class Callback:
    def start(self, trainer, checkpoint: dict | None) -> None:
        """The run starts, from `checkpoint` (a resume) or from its initialisation (None)."""

    def after_steps(self, trainer, stage: int, epoch: int, step: int) -> None:
        """After a step, or a replay of a graph of steps: `step` steps of this epoch are done."""

    def log_row(self, trainer, row: dict) -> None:
        """An epoch's row of train_log.csv is being made; a callback may fill its columns."""

    def after_epoch(self, trainer, stage: int, epoch: int, last_of_stage: bool) -> None:
        """After an epoch and its log row; the trainer's position is the next epoch's."""

    def after_stage(self, trainer, stage: int) -> None:
        pass

    def after_checkpoint(self, trainer) -> None:
        pass

    def finish(self, trainer, record: dict) -> None:
        """The run has finished: write what is left; `record` is train.json's."""

    def state(self) -> dict:
        """What a checkpoint keeps of this callback."""
        return {}

    def restore(self, checkpoint: dict) -> None:
        pass


class Checkpoints(Callback):
    """Checkpoints at least every `checkpoint_minutes` (mid-epoch only where the steps may
    read the device: eager steps), at every stage's end, and when a stop is requested; after
    the latter the run stops with Interrupted, to be resumed by the same command."""

    def start(self, trainer, checkpoint):
        self.last = time.monotonic()

    def due(self, trainer) -> bool:
        return time.monotonic() - self.last > trainer.cfg.checkpoint_minutes * 60

    def after_steps(self, trainer, stage, epoch, step):
        due = trainer.steps.may_sync and step < trainer.n_batches and self.due(trainer)
        if trainer.stop.requested or due:
            if not math.isfinite(trainer.steps.total.item()):
                raise trainer.diverged("objective", stage, epoch)
            trainer.save_checkpoint((stage, epoch), step)
            self.last = time.monotonic()
            if trainer.stop.requested:
                raise trainer.interrupted(stage, epoch)

    def after_epoch(self, trainer, stage, epoch, last_of_stage):
        if last_of_stage or self.due(trainer) or trainer.stop.requested:
            trainer.save_checkpoint((stage, epoch))
            self.last = time.monotonic()
            if trainer.stop.requested:
                raise trainer.interrupted(stage, epoch)


class TrainingLog(Callback):
    """train_log.csv: one row per epoch (the trainer's log), rewritten whole."""

    def __init__(self, path: Path):
        self.path = path

    def start(self, trainer, checkpoint):
        self.written = -math.inf

    def after_epoch(self, trainer, stage, epoch, last_of_stage):
        if time.monotonic() - self.written > LOG_SECONDS or trainer.done_epochs == trainer.cfg.total_epochs:
            self.write(trainer)  # not after every short epoch

    def after_checkpoint(self, trainer):
        self.write(trainer)

    def finish(self, trainer, record):
        self.write(trainer)

    def write(self, trainer) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(trainer.log)
        write_text(self.path, buf.getvalue())
        self.written = time.monotonic()


class Validation(Callback):
    """The mean L_k (`valid_k`) over validation points, every `valid_every` epochs and at the
    end: the log's valid_bound. The points are binarised once, as the test set is in
    evaluation (its seed, `eval_seed`; a CPU stream), a random subset if asked; each estimate draws from a
    stream of its own (seeded by the run and the epoch), so that neither training nor
    resumption sees it."""

    def __init__(self, trainer):
        x = trainer.data.valid
        if trainer.binarize:
            x = datasets.binarize(x.cpu(), torch.Generator().manual_seed(trainer.cfg.eval_seed)).to(trainer.device)
        chosen = subset(x.shape[0], trainer.cfg.valid_points).to(trainer.device)
        self.x = x[chosen]
        self.condition = trainer.data.one_hot_labels("valid")[chosen] if trainer.c is not None else None

    def log_row(self, trainer, row):
        cfg, done = trainer.cfg, trainer.done_epochs
        if done % cfg.valid_every == 0 or done == cfg.total_epochs:
            gen = torch.Generator(device=trainer.device).manual_seed(cfg.seed * 100_003 + done)
            ll = dataset_log_likelihood(
                trainer.backend, self.x, cfg.valid_k, gen, 20, default_chunk(trainer.device, 20),
                condition=self.condition,
            )  # fmt: skip
            row["valid_bound"] = ll.mean().item()


class StageSnapshots(Callback):
    """The parameters at the start and after every stage (for the figure of prior samples as
    training goes), kept in the checkpoints and the model file."""

    def start(self, trainer, checkpoint):
        if checkpoint is None:
            self.snapshots = [self.snapshot(trainer, 0)]

    def after_epoch(self, trainer, stage, epoch, last_of_stage):
        if last_of_stage:
            self.snapshots.append(self.snapshot(trainer, trainer.done_epochs))

    @staticmethod
    def snapshot(trainer, epoch: int) -> dict:
        return {"epoch": epoch, "params": trainer.model.buffer.data.cpu().clone()}

    def state(self):
        return {"snapshots": self.snapshots}

    def restore(self, checkpoint):
        self.snapshots = checkpoint.get("snapshots")


class ProgressReport(Callback):
    """A progress bar over epochs where one is shown, else a line per stage."""

    def __init__(self, trainer, enabled: bool | None):
        self.bar = Progress(trainer.cfg.total_epochs, trainer.run_name, enabled=enabled)

    def after_epoch(self, trainer, stage, epoch, last_of_stage):
        objective = trainer.log[-1]["objective"]
        self.bar.update(
            trainer.done_epochs, f"stage {stage + 1}/{len(trainer.cfg.epochs_per_stage)} objective {objective:.2f}"
        )

    def after_stage(self, trainer, stage):
        if not self.bar.enabled:
            stages = len(trainer.cfg.epochs_per_stage)
            trainer.say(
                f"{trainer.run_name}: stage {stage + 1}/{stages} done, objective {trainer.log[-1]['objective']:.3f}"
            )

    def close(self) -> None:
        self.bar.close()
